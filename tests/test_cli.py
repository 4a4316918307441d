"""The CLI: exit codes and messages of config check, run and migrate, refusals included."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from sygmax import __version__

runner = CliRunner()


@pytest.fixture(autouse=True)
def _process_environment_restored(monkeypatch):
    """`sygmax run` exports variables for its server workers; keep them out of the test process."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "SYGMAX_PROFILES", "_SYGMAX_SERVER_PID"):
        monkeypatch.setenv(name, "")  # recorded, so monkeypatch restores the original (absent) state
        monkeypatch.delenv(name)
    yield


def invoke(args: list[str], env: dict[str, str]):
    return runner.invoke(app, args, env=env)


@pytest.fixture
def cli_env(environ, tmp_path) -> dict[str, str]:
    return {**environ, "SYGMAX_CONFIG": str(tmp_path / "sygmax.toml")}


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_config_check_ok(cli_env):
    result = invoke(["config", "check"], cli_env)
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output and "system" in result.output


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server\n", "not valid TOML"),
        ("[server]\ncolour = 1\n", "server.colour: unknown key"),
        ('[server]\nport = "eighty"\n', "server.port: Input should be a valid integer"),
        ('[storage]\nurl = "gopher://x"\n', "storage.url: Value error, unsupported scheme 'gopher'"),
        ('[plugins]\ndisabled = ["nosuch"]\n', "unknown plugin(s) nosuch"),
    ],
)
def test_config_check_and_run_refuse_bad_config(cli_env, tmp_path, text, needle):
    (tmp_path / "sygmax.toml").write_text(text)
    env = {key: value for key, value in cli_env.items() if key != "SYGMAX_STORAGE_URL"}  # let the file decide
    for args in (["config", "check"], ["run", "api"], ["migrate"]):
        result = invoke(args, env)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)


def test_config_show_masks_secrets(cli_env):
    env = {**cli_env, "SYGMAX_STORAGE_URL": "s3://AK:topsecret@127.0.0.1:9/bucket",
           "SYGMAX_STORAGE_PRESIGN_SECRET": "alsosecret"}
    result = invoke(["config", "show"], env)
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output and "alsosecret" not in result.output
    assert "s3://AK:***@127.0.0.1:9/bucket" in result.output


def test_run_refuses_unknown_profile(cli_env):
    result = invoke(["run", "api,nonsense"], cli_env)
    assert result.exit_code == 2 and "unknown profile(s) nonsense" in result.output


def test_migrate_check_then_apply(postgres, cli_env):
    import uuid

    name = f"cli_{uuid.uuid4().hex[:8]}"
    postgres.psql("postgres", f"CREATE DATABASE {name}")
    env = {**cli_env, "SYGMAX_DATABASE_URL": postgres.url(name)}
    pending = invoke(["migrate", "--check"], env)
    assert pending.exit_code == 3 and "pending: kernel/0001_identity_core.sql" in pending.output
    applied = invoke(["migrate"], env)
    assert applied.exit_code == 0 and "applied: kernel/0001_identity_core.sql" in applied.output
    assert invoke(["migrate", "--check"], env).exit_code == 0
    assert "already up to date" in invoke(["migrate"], env).output
    postgres.psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")


def test_migrate_names_an_unreachable_database(cli_env):
    env = {**cli_env, "SYGMAX_DATABASE_URL": "postgresql://x:y@127.0.0.1:1/none"}
    result = invoke(["migrate"], env)
    assert result.exit_code == 1 and "cannot reach the database (database.url)" in result.output
