"""``sygmax ai``: the model registry, rollouts, the search index and the running ai processes.

    sygmax ai models list
    sygmax ai models add NAME PATH [--kind K] [--version V] [--default] [--tokenizer FILE]
    sygmax ai models default KIND NAME
    sygmax ai models rollout NAME PERCENT      (canary; 50 against the default is an A/B test)
    sygmax ai models remove NAME
    sygmax ai reindex                          (re-embed everything, rebuild every FAISS index)
    sygmax ai status                           (live ai processes, loaded models, GPU)

Registry changes are audited (actor: the CLI). Running ai processes load the default and
rollout models when they start: restart them after a change (``sygmax restart ai``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import asyncpg
import typer
from rich.table import Table

from cli.output import EXIT_CONFIG, EXIT_FAILED, console, fail, load_or_fail
from plugins.ai import protocol, registry
from sygmax.auth.audit import Source
from sygmax.errors import Problem

app = typer.Typer(help="Local AI: model registry, rollouts, search index, ai processes.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _settings():
    settings, plugins = load_or_fail()
    if "ai" not in plugins:
        fail("the ai plugin is disabled in this configuration ([plugins])", EXIT_CONFIG)
    return settings


def _run(work):
    settings = _settings()

    async def main():
        connection = await asyncpg.connect(settings.database.url, timeout=10)
        try:
            return await work(connection, settings)
        finally:
            await connection.close()

    try:
        return asyncio.run(main())
    except Problem as problem:
        fail(problem.detail, EXIT_CONFIG if problem.status_code == 400 else EXIT_FAILED)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        fail(f"cannot reach the database (database.url): {exc}")


def _live(settings) -> list[dict]:
    """What the running ai processes say about themselves (empty if Redis cannot be reached)."""
    import time

    import redis

    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2)
    try:
        names = client.zrangebyscore(protocol.INSTANCES, time.time(), "+inf")
        values = client.mget([protocol.instance_key(n.decode()) for n in names]) if names else []
        stats = {}
        for value in values:
            for model in json.loads(value).get("models", {}) if value else {}:
                stats[model] = client.hget(protocol.stats_key(model), "avg_s")
        return [dict(json.loads(v), stats=stats) for v in values if v]
    except redis.RedisError:
        return []
    finally:
        client.close()


def _guess_kind(path: Path) -> str | None:
    if path.suffix == ".gguf":
        return "llm"
    if path.suffix == ".onnx" or (path / "model.onnx").exists():
        return "embedding"
    if (path / "model.bin").exists():
        return "stt"
    if (path / "config.cfg").exists():
        return "ner"
    return None


@models_app.command("list")
def list_models() -> None:
    """Every registered model: kind, version, default, rollout, path, and where it is loaded."""
    rows = _run(lambda connection, settings: registry.list_models(connection))
    live = _live(_settings())
    loaded = {name: (instance["name"], info["device"]) for instance in live
              for name, info in instance.get("models", {}).items()}
    averages = {name: value for instance in live for name, value in instance.get("stats", {}).items()}
    table = Table(title="AI models", title_justify="left")
    for column in ("name", "kind", "version", "default", "rollout", "loaded", "avg job", "path"):
        table.add_column(column)
    for row in rows:
        where = loaded.get(row.name)
        average = averages.get(row.name)
        table.add_row(row.name, row.kind, row.version, "yes" if row.is_default else "",
                      f"{row.rollout_percent}%" if row.rollout_percent else "",
                      f"{where[1]} ({where[0]})" if where else "no",
                      f"{float(average):.2f}s" if average else "-", row.path)
    console.print(table)
    if not rows:
        console.print("no models yet: an ai process registers the packaged ones when it starts, or use "
                      "`sygmax ai models add`")


@models_app.command("add")
def add_model(
    name: str = typer.Argument(..., help="Registry name: a-z, 0-9, '.', '_', '-'."),
    path: str = typer.Argument(..., help="Model file or directory (relative: under ai.models_dir)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="llm, stt, embedding or ner (default: from the path)."),
    version: str = typer.Option("1", "--version", help="Version label; part of the result-cache key."),
    default: bool = typer.Option(False, "--default", help="Make it the default model of its kind."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer.json of an ONNX embedding model."),
    context: Optional[int] = typer.Option(None, "--context", min=256, max=131072, help="LLM context size in tokens."),
    skip_check: bool = typer.Option(False, "--skip-check",
                                    help="Register a path that exists only on the ai host, not here."),
) -> None:
    """Register a model (the first of its kind becomes the default)."""
    settings = _settings()
    full = Path(path) if Path(path).is_absolute() else Path(settings.section("ai").models_dir, path)
    kind = kind or _guess_kind(full)
    if kind not in registry.KINDS:
        fail(f"--kind: give one of {', '.join(registry.KINDS)} (cannot tell from {full})", EXIT_CONFIG)
    if not skip_check:
        problems = registry.check_path(kind, path, settings.section("ai").models_dir)
        if problems:
            fail("; ".join(problems) + " (use --skip-check if the file is only on the ai host)", EXIT_CONFIG)
    options = {key: value for key, value in (("tokenizer", tokenizer), ("context", context)) if value}
    row = _run(lambda connection, _: registry.do_add_model(None, connection, name=name, kind=kind, path=path,
                                                           version=version, options=options, make_default=default,
                                                           source=Source()))
    console.print(f"added {row.kind} model [bold]{row.name}[/] version {row.version}"
                  + (" (default)" if row.is_default else ""), highlight=False)


@models_app.command("default")
def default_model(kind: str = typer.Argument(..., help="llm, stt, embedding or ner."),
                  name: str = typer.Argument(..., help="A registered model of that kind.")) -> None:
    """Make NAME the model every user gets for KIND (ends its own rollout)."""
    row = _run(lambda connection, _: registry.do_set_default(None, connection, kind=kind, name=name, source=Source()))
    console.print(f"[bold]{row.name}[/] is now the default {row.kind} model", highlight=False)


@models_app.command("rollout")
def rollout_model(name: str = typer.Argument(..., help="A registered model that is not its kind's default."),
                  percent: int = typer.Argument(..., min=0, max=100, help="Share of users (0 ends the rollout).")) -> None:
    """Canary / A/B: route PERCENT % of users (a stable hash of their id) to NAME."""
    row = _run(lambda connection, _: registry.do_set_rollout(None, connection, name=name, percent=percent,
                                                             source=Source()))
    console.print(f"[bold]{row.name}[/] now serves {row.rollout_percent}% of users for {row.kind}", highlight=False)


@models_app.command("remove")
def remove_model(name: str = typer.Argument(..., help="A registered model that is not a default.")) -> None:
    """Unregister a model (the files stay where they are)."""
    _run(lambda connection, _: registry.do_remove_model(None, connection, name=name, source=Source()))
    console.print(f"removed model [bold]{name}[/]", highlight=False)


@app.command("reindex")
def reindex() -> None:
    """Re-embed every indexed chat message and feed item and rebuild each ai process's FAISS index."""
    from plugins.ai.vectors import request_reindex

    count = _run(lambda connection, _: request_reindex(connection))
    settings = _settings()
    import redis

    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.incr(protocol.REINDEX_KEY)
        client.rpush(protocol.VECTOR_WAKE, 1)
    except redis.RedisError as exc:
        fail(f"{count} rows marked for re-embedding, but Redis (redis.url) is unreachable, so running ai processes "
             f"rebuild only when they restart: {exc}")
    finally:
        client.close()
    console.print(f"{count} indexed items will be embedded again; running ai processes rebuild their index")


@app.command("status")
def status() -> None:
    """Live ai processes: loaded models, devices, memory, index size. Exits 1 when none runs."""
    live = _live(_settings())
    if not live:
        fail("no ai process is running (start one with `sygmax scale ai=1`, or `sygmax run ai`)")
    for instance in live:
        table = Table(title=f"{instance['name']} (pid {instance['pid']}, GPU: {'yes' if instance['gpu'] else 'no'}, "
                            f"{instance['index_vectors']} vectors indexed)", title_justify="left")
        for column in ("model", "kind", "version", "device", "memory"):
            table.add_column(column)
        for name, info in instance["models"].items():
            table.add_row(name, info["kind"], info["version"], info["device"], f"{info['rss_bytes'] / 2**20:.0f} MiB")
        for name, error in instance.get("failed", {}).items():
            table.add_row(name, "", "", "[red]failed[/]", error)
        console.print(table)
