"""Migrations: dependency order, one transaction, advisory lock, append-only history, --check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from sygmax.db.migrations import MigrationError, migrate, pending, plan
from sygmax.plugins import Plugin, PluginError, order_plugins

FIXTURES = Path(__file__).parent / "fixtures" / "migrations"


@pytest.fixture
def empty_database(postgres):
    import uuid

    name = f"empty_{uuid.uuid4().hex[:8]}"
    postgres.psql("postgres", f"CREATE DATABASE {name}")
    yield postgres.url(name)
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def modules(*names: str, depends: dict[str, tuple[str, ...]] | None = None) -> list[tuple[str, Path]]:
    depends = depends or {}
    plugins = {name: Plugin(name=name, migrations=FIXTURES / name, depends_on=depends.get(name, ()))
               for name in names}
    return [(plugin.name, plugin.migrations) for plugin in order_plugins(plugins)]


async def tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await connection.close()


async def test_applies_in_dependency_order_then_nothing(empty_database):
    # "beta" sorts before "alpha" only if dependencies are ignored; here it must run after.
    steps = plan(modules("beta", "alpha", depends={"beta": ("alpha",)}))
    assert [s.module for s in steps].index("alpha") < [s.module for s in steps].index("beta")
    applied = await migrate(empty_database, steps)
    assert [(s.module, s.name) for s in applied][-3:] == [
        ("alpha", "0001_items.sql"), ("alpha", "0002_done.sql"), ("beta", "0001_notes.sql")]
    assert {"alpha_item", "beta_note", "sygmax_user", "sygmax_migrations"} <= await tables(empty_database)
    assert await migrate(empty_database, steps) == []
    assert await pending(empty_database, steps) == []


async def test_a_failing_step_applies_nothing(empty_database):
    steps = plan(modules("broken"))
    with pytest.raises(MigrationError, match="broken/0002_bad.sql failed"):
        await migrate(empty_database, steps)
    # The kernel steps and broken/0001 ran in the same transaction: all rolled back.
    assert await tables(empty_database) == set()
    assert len(await pending(empty_database, steps)) == len(steps)


async def test_an_edited_step_is_refused(empty_database, tmp_path):
    module = tmp_path / "gamma"
    module.mkdir()
    (module / "0001_a.sql").write_text("CREATE TABLE gamma_a (id int);")
    await migrate(empty_database, plan([("gamma", module)]))
    (module / "0001_a.sql").write_text("CREATE TABLE gamma_a (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_database, plan([("gamma", module)]))


async def test_badly_named_files_are_refused(tmp_path):
    (tmp_path / "1_a.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_description.sql"):
        plan([("delta", tmp_path)])


async def test_concurrent_nodes_migrate_once(empty_database):
    steps = plan(modules("alpha", "beta", depends={"beta": ("alpha",)}))
    results = await asyncio.gather(*(migrate(empty_database, steps) for _ in range(4)))
    # Exactly one node applied everything; the others waited on the lock and found nothing to do.
    assert sorted(len(result) for result in results) == [0, 0, 0, len(steps)]
    connection = await asyncpg.connect(empty_database)
    try:
        assert await connection.fetchval("SELECT count(*) FROM sygmax_migrations") == len(steps)
    finally:
        await connection.close()


def test_dependency_problems_are_named():
    with pytest.raises(PluginError, match="depends on missing"):
        order_plugins({"aa": Plugin(name="aa", depends_on=("missing",))})
    with pytest.raises(PluginError, match="cycle"):
        order_plugins({"aa": Plugin(name="aa", depends_on=("bb",)), "bb": Plugin(name="bb", depends_on=("aa",))})
