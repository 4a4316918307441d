"""``sygmax user ...`` and ``sygmax auth rotate-keys`` through typer's CliRunner: exit codes,
output, refusals, and the database afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture
def cli_env(environ, tmp_path) -> dict[str, str]:
    return {**environ, "SYGMAX_CONFIG": str(tmp_path / "sygmax.toml"),
            "SYGMAX_SERVER_PUBLIC_URL": "https://sygmax.example.org"}


def invoke(args: list[str], env: dict[str, str], stdin: str | None = None):
    return runner.invoke(app, args, env=env, input=stdin)


def fetch(database_url: str, sql: str, *args):
    """Run one query from a synchronous test (the CLI runs its own event loop, so these tests are sync)."""

    async def run():
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetch(sql, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def make_user(database_url: str, name: str, admin: bool = False) -> None:
    from sygmax.auth.tokens import create_user

    async def run():
        connection = await asyncpg.connect(database_url)
        try:
            await create_user(connection, f"{name}@example.org", name.title(), is_admin=admin)
        finally:
            await connection.close()

    asyncio.run(run())


def test_create_with_password_then_login_works(cli_env, database_url, make_app):
    result = invoke(["user", "create", "--email", "Admin@Example.org", "--display-name", "Ada Admin",
                     "--password-stdin", "--admin"], cli_env, stdin="a long admin password\n")
    assert result.exit_code == 0, result.output
    assert "created admin@example.org" in result.output and "as administrator" in result.output
    [row] = fetch(database_url, "SELECT * FROM sygmax_user")
    assert row["is_admin"] and row["is_owner"] and row["password_hash"].startswith("$argon2id$")
    [audit] = fetch(database_url, "SELECT * FROM sygmax_audit")
    assert audit["action"] == "user.create" and audit["actor_id"] is None

    from litestar.testing import TestClient

    with TestClient(app=make_app("api")) as client:
        response = client.post("/api/v1/auth/login",
                                     json={"email": "admin@example.org", "password": "a long admin password"})
        assert response.status_code == 200, response.text

    duplicate = invoke(["user", "create", "--email", "admin@EXAMPLE.org", "--password-stdin"], cli_env,
                       stdin="another long password\n")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    assert len(fetch(database_url, "SELECT id FROM sygmax_user")) == 1


def test_create_without_password_prints_a_link(cli_env, database_url, make_app):
    result = invoke(["user", "create", "--email", "bob@example.org"], cli_env)
    assert result.exit_code == 0, result.output
    match = re.search(r"https://sygmax\.example\.org/reset-password#token=([A-Za-z0-9_-]+)", result.output)
    assert match, result.output
    [row] = fetch(database_url, "SELECT * FROM sygmax_user")
    assert row["display_name"] == "bob" and row["password_hash"] is None

    from litestar.testing import TestClient

    with TestClient(app=make_app("api")) as client:
        done = client.post("/api/v1/auth/password/reset",
                           json={"token": match.group(1), "password": "bob's new password"})
        assert done.status_code == 200, done.text
        assert client.post("/api/v1/auth/login",
                           json={"email": "bob@example.org", "password": "bob's new password"}).status_code == 200


@pytest.mark.parametrize(("args", "stdin", "needle"), [
    (["user", "create", "--email", "'; DROP TABLE sygmax_user;--"], None, "not a valid e-mail address"),
    (["user", "create", "--email", "<script>@x.org"], None, "not a valid e-mail address"),
    (["user", "create", "--email", "ok@example.org", "--display-name", "<script>"], None, "are not allowed"),
    (["user", "create", "--email", "ok@example.org", "--password-stdin"], "short\n", "at least 10 characters"),
    (["user", "create", "--email", "ok@example.org", "--password-stdin"], "", "held no password"),
    (["user", "create", "--email", "ok@example.org", "--password-stdin"], "ok@example.org\n", "e-mail address"),
    (["user", "disable", "nobody@example.org"], None, "no account"),
    (["user", "enable", "00000000-0000-0000-0000-000000000000"], None, "no account"),
    (["user", "delete", "nobody@example.org", "--yes"], None, "no account"),
    (["user", "reset-password", "'; DROP TABLE sygmax_user;--"], None, "no account"),
])
def test_refusals_change_nothing(cli_env, database_url, args, stdin, needle):
    result = invoke(args, cli_env, stdin=stdin)
    assert result.exit_code == 1, result.output
    assert needle in result.output, result.output
    assert fetch(database_url, "SELECT id FROM sygmax_user") == []
    assert fetch(database_url, "SELECT seq FROM sygmax_audit") == []


def test_missing_email_is_a_usage_error(cli_env):
    result = invoke(["user", "create"], cli_env)
    assert result.exit_code == 2 and "--email" in result.output


def test_unreachable_database_is_reported(cli_env):
    env = {**cli_env, "SYGMAX_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing"}
    result = invoke(["user", "list"], env)
    assert result.exit_code == 1 and "database.url" in result.output


def test_list_disable_enable_delete(cli_env, database_url):
    make_user(database_url, "alice")
    make_user(database_url, "root", admin=True)
    listed = invoke(["user", "list", "--json"], cli_env)
    assert listed.exit_code == 0, listed.output
    users = {entry["email"]: entry for entry in json.loads(listed.output)}
    assert users["alice@example.org"]["status"] == "active" and users["root@example.org"]["admin"]
    table = invoke(["user", "list"], cli_env)
    assert table.exit_code == 0 and "2 account(s)" in table.output

    assert "disabled alice@example.org" in invoke(["user", "disable", "ALICE@example.org"], cli_env).output
    assert "disabled already" in invoke(["user", "disable", "alice@example.org"], cli_env).output
    [row] = fetch(database_url, "SELECT is_active, disabled_at FROM sygmax_user WHERE email = 'alice@example.org'")
    assert not row["is_active"] and row["disabled_at"] is not None
    alice_id = str((fetch(database_url, "SELECT id FROM sygmax_user WHERE email = 'alice@example.org'"))[0]["id"])
    assert "enabled alice@example.org" in invoke(["user", "enable", alice_id], cli_env).output

    refused = invoke(["user", "delete", "alice@example.org"], cli_env, stdin="n\n")
    assert refused.exit_code == 1 and "aborted; nothing changed" in refused.output
    assert (fetch(database_url, "SELECT erased_at FROM sygmax_user WHERE id = $1::uuid", alice_id))[0][0] is None
    confirmed = invoke(["user", "delete", "alice@example.org"], cli_env, stdin="y\n")
    assert confirmed.exit_code == 0 and "erased alice@example.org" in confirmed.output
    [row] = fetch(database_url, "SELECT * FROM sygmax_user WHERE id = $1::uuid", alice_id)
    assert row["email"] == f"erased-{alice_id}@invalid" and row["display_name"] == "Deleted user"
    again = invoke(["user", "delete", alice_id, "--yes"], cli_env)
    assert again.exit_code == 1 and "erased already" in again.output
    assert invoke(["user", "enable", alice_id], cli_env).exit_code == 1

    last_admin = invoke(["user", "delete", "root@example.org", "--yes"], cli_env)
    assert last_admin.exit_code == 1 and "last active administrator" in last_admin.output
    actions = [row["action"] for row in fetch(database_url, "SELECT action FROM sygmax_audit ORDER BY seq")]
    assert actions == ["user.disable", "user.enable", "user.erase"]


def test_reset_password_link(cli_env, database_url):
    make_user(database_url, "carol")
    result = invoke(["user", "reset-password", "carol@example.org"], cli_env)
    assert result.exit_code == 0, result.output
    assert "https://sygmax.example.org/reset-password#token=" in result.output
    assert len(fetch(database_url, "SELECT * FROM sygmax_email_link WHERE purpose = 'reset'")) == 1


def test_rotate_keys(cli_env, tmp_path):
    keys_dir = Path(cli_env["SYGMAX_AUTH_KEYS_DIR"])
    first = invoke(["auth", "rotate-keys"], cli_env)
    assert first.exit_code == 0, first.output
    assert "new signing key" in first.output and "1 key(s)" in first.output
    files = sorted(keys_dir.glob("ed25519-*.pem"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for _ in range(2):
        assert invoke(["auth", "rotate-keys"], cli_env).exit_code == 0
    assert len(list(keys_dir.glob("ed25519-*.pem"))) == 3
    pruned = invoke(["auth", "rotate-keys", "--keep", "2"], cli_env)
    assert pruned.exit_code == 0 and pruned.output.count("removed") == 2
    assert len(list(keys_dir.glob("ed25519-*.pem"))) == 2
    refused = invoke(["auth", "rotate-keys", "--keep", "1"], cli_env)
    assert refused.exit_code == 1 and "--keep 2" in refused.output
    assert invoke(["auth", "rotate-keys", "--keep", "-1"], cli_env).exit_code == 2
    os.chmod(keys_dir, 0o500)
    try:
        if os.geteuid() != 0:
            unwritable = invoke(["auth", "rotate-keys"], cli_env)
            assert unwritable.exit_code == 1 and "auth.keys_dir" in unwritable.output
    finally:
        os.chmod(keys_dir, 0o700)
