"""GraphQL (/api/graphql): the same authentication and access rules as REST, no IDOR, and
hostile queries (depth, tokens, aliases, GET, batching) refused before anything runs."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from sygmax.config import load_settings
from sygmax.plugins import discover_plugins
from tests.workspace_helpers import DOCS, Api, api  # noqa: F401 (fixtures)

URL = "/api/graphql"
W = "/api/v1/workspaces"


async def gql(api: Api, user, query: str, variables: dict | None = None, status: int = 200) -> dict:
    response = await api.call(user, "POST", URL, {"query": query, "variables": variables or {}})
    assert response.status_code == status, response.text
    return response.json()


def codes(body: dict) -> list[str | None]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


async def test_me_and_authentication(api, example_user, database_url):
    alice = await example_user("alice")
    body = await gql(api, alice, "{ me { id email displayName isAdmin } }")
    assert body == {"data": {"me": {"id": str(alice.id), "email": "alice@example.org", "displayName": "Alice",
                                    "isAdmin": False}}}
    # The same 401 problem as REST, before any resolver runs.
    for headers in ({}, {"Authorization": "Bearer syg_" + "x" * 43}, {"Authorization": "Basic abc"}):
        response = await api.client.post(URL, json={"query": "{ me { id } }"}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_workspaces_members_and_idor(api, example_user):
    alice, bob, carol = await example_user("alice"), await example_user("bob"), await example_user("carol")
    acme = await api.workspace(alice, "Acme")
    zeta = await api.workspace(alice, "Zeta")
    secret = await api.workspace(carol, "Carol's secret")
    await api.invite_and_join(alice, acme, bob, "viewer")

    body = await gql(api, alice, "{ workspaces { id name role permissions members { displayName role } } }")
    assert [(w["name"], w["role"]) for w in body["data"]["workspaces"]] == [("Acme", "owner"), ("Zeta", "owner")]
    acme_entry = body["data"]["workspaces"][0]
    assert {(m["displayName"], m["role"]) for m in acme_entry["members"]} == {("Alice", "owner"), ("Bob", "viewer")}
    assert body["data"]["workspaces"][1]["members"] == [{"displayName": "Alice", "role": "owner"}]
    assert "members.manage" in acme_entry["permissions"]

    one = await gql(api, bob, "query($id: ID!) { workspace(id: $id) { name role } }", {"id": acme})
    assert one == {"data": {"workspace": {"name": "Acme", "role": "viewer"}}}
    members = await gql(api, bob, "query($w: ID!) { members(workspaceId: $w) { userId role } }", {"w": acme})
    assert {m["userId"] for m in members["data"]["members"]} == {str(alice.id), str(bob.id)}
    assert [w["name"] for w in (await gql(api, bob, "{ workspaces { name } }"))["data"]["workspaces"]] == ["Acme"]

    # Someone else's workspace, an unknown one, a malformed id: nothing, and no hint of existence.
    for target in (secret, zeta, str(uuid.uuid4())):
        refused = await gql(api, bob, "query($id: ID!) { workspace(id: $id) { name } }", {"id": target})
        assert refused["data"] == {"workspace": None} and codes(refused) == ["not-found"]
        refused = await gql(api, bob, "query($w: ID!) { members(workspaceId: $w) { email } }", {"w": target})
        assert refused["data"] == {"members": None} and codes(refused) == ["not-found"]
    same_message = {(await gql(api, bob, "query($id: ID!) { workspace(id: $id) { name } }", {"id": target}))[
        "errors"][0]["message"] for target in (secret, str(uuid.uuid4()))}
    assert len(same_message) == 1
    for hostile in ("not-a-uuid", "'; DROP TABLE sygmax_workspace--", "<script>"):
        refused = await gql(api, bob, "query($id: ID!) { workspace(id: $id) { name } }", {"id": hostile})
        assert refused["data"] == {"workspace": None} and codes(refused) == ["validation-error"]
    # Still there after the injection attempt.
    assert (await gql(api, carol, "{ workspaces { name } }"))["data"]["workspaces"] == [{"name": "Carol's secret"}]


async def test_nested_members_follow_the_role(api, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    acme = await api.workspace(alice, "Acme")
    await api.ok(alice, "POST", f"{W}/{acme}/roles", {"name": "Guest", "permissions": ["workspace.read"]})
    await api.invite_and_join(alice, acme, bob, "Guest")
    body = await gql(api, bob, "{ workspaces { name role members { email } } }")
    assert body["data"]["workspaces"] == [{"name": "Acme", "role": "Guest", "members": None}]
    assert codes(body) == ["forbidden"]
    direct = await gql(api, bob, "query($w: ID!) { members(workspaceId: $w) { email } }", {"w": acme})
    assert direct["data"] == {"members": None} and codes(direct) == ["forbidden"]


async def test_personal_token_scopes_apply(api, example_user, db):
    from sygmax.auth.tokens import issue_token

    alice = await example_user("alice")
    acme = await api.workspace(alice, "Acme")
    scoped = await issue_token(db, alice.id, "narrow", scopes=["workspace.read"])

    class Scoped:
        headers = {"Authorization": f"Bearer {scoped}"}

    body = await gql(api, Scoped, "query($w: ID!) { members(workspaceId: $w) { email } }", {"w": acme})
    assert body["data"] == {"members": None} and codes(body) == ["forbidden"]


@pytest.fixture
async def tight(make_app, environ, tmp_path):
    settings = load_settings(tmp_path / "absent.toml", environ={
        **environ, "SYGMAX_GATEWAY_GRAPHQL_MAX_DEPTH": "1", "SYGMAX_GATEWAY_GRAPHQL_MAX_TOKENS": "60",
        "SYGMAX_GATEWAY_GRAPHQL_MAX_ALIASES": "3"})
    async with AsyncTestClient(app=make_app("api", {**discover_plugins(), "docs": DOCS}, settings)) as client:
        yield Api(client)


async def test_hostile_queries_are_refused(tight, example_user):
    alice = await example_user("alice")
    await tight.workspace(alice, "Acme")
    assert (await gql(tight, alice, "{ workspaces { name } }"))["data"]["workspaces"] == [{"name": "Acme"}]
    deep = await gql(tight, alice, "{ workspaces { members { email } } }")
    assert "data" not in deep or deep["data"] is None
    assert "exceeds maximum operation depth" in deep["errors"][0]["message"]
    aliases = await gql(tight, alice, "{ a: me { id } b: me { id } c: me { id } d: me { id } }")
    assert aliases.get("data") is None and "aliases" in aliases["errors"][0]["message"].lower()
    tokens = await gql(tight, alice, "{ me { " + "id " * 80 + "} }")
    assert tokens.get("data") is None and "token" in tokens["errors"][0]["message"].lower()


async def test_default_limits_refuse_deep_and_wide_queries(api, example_user):
    alice = await example_user("alice")
    nested = "{ workspaces " + "{ members " * 12 + "{ email }" + " }" * 12 + " }"
    body = await gql(api, alice, nested)
    assert body.get("data") is None
    assert any("exceeds maximum operation depth" in error["message"] for error in body["errors"])
    wide = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(50)) + " }"
    assert (await gql(api, alice, wide)).get("data") is None
    # Introspection is bounded by the same token limit but its nesting does not count as depth.
    schema = await gql(api, alice, "{ __schema { queryType { name fields { name type { name ofType { name "
                                   "ofType { name ofType { name } } } } } } } }")
    assert schema["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_transport_refusals(api, example_user):
    alice = await example_user("alice")
    # Queries only over POST: no GET (no cross-site reads through a link), no GraphiQL page.
    get = await api.client.get(URL + "?query={me{id}}", headers={**alice.headers, "accept": "text/html"})
    assert get.status_code == 405
    for content in (b"{", b'{"query": 5}', b'{"variables": {}}', b"[]", b'"text"', b"5", b"null", b"true",
                    b'[{"query": "{ me { id } }"}]', b'{"query": "{ me { id } }", "variables": 5}',
                    b'{"query": "{ me { id } }", "evil": 1}', b'{"query": "' + b"x" * 100_001 + b'"}'):
        response = await api.call(alice, "POST", URL, content=content)
        assert response.status_code == 400, (content[:50], response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for content_type in ("text/plain", "application/graphql", "application/x-www-form-urlencoded"):
        response = await api.client.post(URL, content=b"{ me { id } }",
                                         headers={**alice.headers, "content-type": content_type})
        assert response.status_code == 415, response.text
    syntax = await gql(api, alice, "{ me { id ", status=200)
    assert syntax.get("data") is None and "Syntax Error" in syntax["errors"][0]["message"]
    unknown = await gql(api, alice, "{ users { password } }")
    assert unknown.get("data") is None and "Cannot query field" in unknown["errors"][0]["message"]
    mutation = await gql(api, alice, "mutation { deleteEverything }")
    assert mutation.get("data") is None and mutation["errors"]


async def test_graphql_is_not_in_the_openapi_schema(api):
    schema = (await api.client.get("/api/schema/openapi.json")).json()
    assert not any("graphql" in path for path in schema["paths"])


async def test_unexpected_errors_are_masked(api, example_user, db, monkeypatch):
    from sygmax.auth import workspaces

    alice = await example_user("alice")

    async def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail: password=hunter2")

    monkeypatch.setattr(workspaces, "list_workspaces", broken)
    body = await gql(api, alice, "{ workspaces { name } }")
    assert body["errors"][0]["message"] == "Unexpected error."
    assert "hunter2" not in str(body)
