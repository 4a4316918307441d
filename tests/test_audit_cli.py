"""``sygmax audit verify`` and ``sygmax audit list``: exit codes and output, refusals included."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from typer.testing import CliRunner

from cli.main import app
from sygmax.auth.audit import Source, record

runner = CliRunner()


@pytest.fixture
def cli_env(environ, tmp_path) -> dict[str, str]:
    return {**environ, "SYGMAX_CONFIG": str(tmp_path / "sygmax.toml")}


# The CLI runs its own event loop (asyncio.run), so these tests are synchronous.


def run_sql(database_url: str, *statements: str) -> None:
    async def go() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(go())


@pytest.fixture
def filled(database_url):
    workspace_id = uuid.uuid4()

    async def fill() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            for number in range(6):
                await record(connection, actor_id=uuid.uuid4(),
                             action="team.create" if number % 2 else "member.remove", object_type="team",
                             object_id=f"t{number}", workspace_id=workspace_id,
                             source=Source("10.0.0.1", f"req-{number}"), details={"n": number, "name": "Équipe"})
        finally:
            await connection.close()

    asyncio.run(fill())
    return database_url, workspace_id


def invoke(args, env):
    return runner.invoke(app, args, env=env)


def test_verify_an_intact_log(filled, cli_env):
    result = invoke(["audit", "verify"], cli_env)
    assert result.exit_code == 0, result.output
    assert "audit log intact" in result.output and "6 entries" in result.output


def test_verify_an_empty_log(database_url, cli_env):
    result = invoke(["audit", "verify"], cli_env)
    assert result.exit_code == 0 and "0 entries" in result.output


@pytest.mark.parametrize(("edit", "seq", "words"), [
    ("UPDATE sygmax_audit SET details = '{\"n\": 3, \"name\": \"forged\"}' WHERE seq = 4", 4, "altered"),
    ("UPDATE sygmax_audit SET action = 'team.create' WHERE seq = 1", 1, "altered"),
    ("DELETE FROM sygmax_audit WHERE seq = 2", 3, "missing"),
])
def test_verify_detects_a_hand_edit(filled, cli_env, edit, seq, words):
    database_url, _ = filled
    # A database superuser switches the append-only guard off and edits a row by hand.
    run_sql(database_url, "ALTER TABLE sygmax_audit DISABLE TRIGGER sygmax_audit_no_update", edit)
    result = invoke(["audit", "verify"], cli_env)
    assert result.exit_code == 1, result.output
    assert f"broken at entry {seq}" in result.output and words in result.output


def test_list_as_json_and_table(filled, cli_env):
    _, workspace_id = filled
    result = invoke(["audit", "list", "--json", "--limit", "4"], cli_env)
    assert result.exit_code == 0, result.output
    page = json.loads(result.output)
    assert [item["seq"] for item in page["items"]] == [6, 5, 4, 3] and page["next_cursor"] == 3
    assert page["items"][0]["details"] == {"n": 5, "name": "Équipe"}
    rest = json.loads(invoke(["audit", "list", "--json", "--cursor", "3"], cli_env).output)
    assert [item["seq"] for item in rest["items"]] == [2, 1] and rest["next_cursor"] is None
    filtered = json.loads(invoke(["audit", "list", "--json", "--action", "team.*",
                                  "--workspace", str(workspace_id)], cli_env).output)
    assert [item["object_id"] for item in filtered["items"]] == ["t5", "t3", "t1"]

    table = invoke(["audit", "list", "--limit", "2"], cli_env)
    assert table.exit_code == 0, table.output
    assert "team.create" in table.output and "more: --cursor 5" in table.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--limit", "0"], "--limit"),
    (["--limit", "100000"], "--limit"),
    (["--actor", "bob"], "not a UUID"),
    (["--since", "yesterday"], "ISO-8601"),
    (["--since", "2025-01-01T00:00:00"], "time zone"),
    (["--action", "'; DROP TABLE sygmax_audit--"], "action"),
])
def test_list_refuses_bad_options(filled, cli_env, args, needle):
    result = invoke(["audit", "list", *args], cli_env)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_unreachable_database_is_named(cli_env):
    env = {**cli_env, "SYGMAX_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for args in (["audit", "verify"], ["audit", "list"]):
        result = invoke(args, env)
        assert result.exit_code == 1 and "database.url" in result.output, result.output
