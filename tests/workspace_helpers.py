"""Helpers for the workspace, policy and audit tests: a client whose requests name the acting
user, a test plugin that declares permissions, and a snapshot of every identity table to prove
that a refused request changed nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from litestar.testing import AsyncTestClient

from sygmax.plugins import Permission, Plugin, discover_plugins
from tests.conftest import PROBLEM


# A module with objects ("docs.page") and permissions, as a real plugin would declare them.
DOCS = Plugin(
    name="docs",
    description="test plugin with pages",
    permissions=[
        Permission("docs.read", "Read pages", default_roles=("editor", "viewer")),
        Permission("docs.edit", "Edit pages"),
        Permission("docs.publish", "Publish pages", default_roles=()),
    ],
)

IDENTITY_TABLES = ("sygmax_workspace", "sygmax_membership", "sygmax_role", "sygmax_team", "sygmax_team_member",
                   "sygmax_invite", "sygmax_acl_object", "sygmax_acl_grant", "sygmax_audit")


@dataclass
class Api:
    client: AsyncTestClient

    async def call(self, user, method: str, url: str, json=None, content: bytes | None = None, **kwargs):
        headers = dict(user.headers) if user is not None else {}
        if content is not None:
            headers["content-type"] = "application/json"
            return await self.client.request(method, url, content=content, headers=headers, **kwargs)
        return await self.client.request(method, url, json=json, headers=headers, **kwargs)

    async def ok(self, user, method: str, url: str, json=None, status: int | None = None):
        response = await self.call(user, method, url, json)
        expected = status or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert response.status_code == expected, (method, url, response.status_code, response.text)
        return response.json() if response.content else None

    async def problem(self, user, method: str, url: str, status: int, slug: str | None = None, json=None,
                      content: bytes | None = None) -> dict:
        response = await self.call(user, method, url, json, content=content)
        assert response.status_code == status, (method, url, response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM), response.text
        body = response.json()
        if slug is not None:
            assert body["type"] == f"https://sygmax.dev/problems/{slug}", body
        return body

    async def workspace(self, user, name: str = "Acme") -> str:
        return (await self.ok(user, "POST", "/api/v1/workspaces", {"name": name}))["id"]

    async def invite_and_join(self, owner, workspace_id: str, user, role: str = "editor") -> None:
        invite = await self.ok(owner, "POST", f"/api/v1/workspaces/{workspace_id}/invites", {"role": role})
        await self.ok(user, "POST", f"/api/v1/invites/{invite['token']}/accept", status=200)


@pytest.fixture
async def api(make_app):
    plugins = {**discover_plugins(), "docs": DOCS}
    async with AsyncTestClient(app=make_app("api", plugins=plugins)) as client:
        yield Api(client)


async def snapshot(connection) -> dict[str, list]:
    """Every row of every identity table, for "nothing changed" assertions."""
    state = {}
    for table in IDENTITY_TABLES:
        rows = await connection.fetch(f"SELECT * FROM {table}")
        state[table] = sorted(tuple(str(value) for value in row.values()) for row in rows)
    return state
