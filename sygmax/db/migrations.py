"""Schema migrations: append-only SQL steps per plugin, applied in dependency order.

Why not piccolo's own migration runner: it resolves its engine from a global
``piccolo_conf`` module, runs each app separately and takes no lock. Sygmax needs every
module's pending steps applied in one transaction (all or nothing) under a PostgreSQL
advisory lock, so two nodes starting at once cannot both migrate. Steps are plain SQL
files ``NNNN_description.sql`` in the plugin's ``migrations/`` directory; the kernel's own
live in ``sygmax/db/migrations/``. An applied step's checksum is recorded: editing a step
that has already run is refused (append a new one instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import asyncpg

KERNEL = "kernel"
KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number: every Sygmax node asks for the same lock.
ADVISORY_LOCK_KEY = 0x5947_4D41_584D_4947
_STEP_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS sygmax_migrations (
    module      text        NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (module, name)
)
"""


class MigrationError(Exception):
    """A migration cannot be applied; nothing was changed."""


@dataclass(frozen=True)
class Step:
    module: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_steps(module: str, directory: Path | None) -> list[Step]:
    if directory is None:
        return []
    steps = []
    for path in sorted(Path(directory).glob("*.sql")):
        if not _STEP_NAME.match(path.name):
            raise MigrationError(f"{module}: migration file {path.name} must be named NNNN_description.sql")
        steps.append(Step(module, path.name, path.read_text(encoding="utf-8")))
    numbers = [step.name[:4] for step in steps]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"{module}: two migrations share a number: {numbers}")
    return steps


def plan(modules: Sequence[tuple[str, Path | None]]) -> list[Step]:
    """Every step of the kernel then of each module, modules already in dependency order."""
    steps = load_steps(KERNEL, KERNEL_MIGRATIONS)
    for module, directory in modules:
        steps += load_steps(module, directory)
    return steps


async def _applied(connection: asyncpg.Connection) -> dict[tuple[str, str], str]:
    exists = await connection.fetchval("SELECT to_regclass('sygmax_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await connection.fetch("SELECT module, name, checksum FROM sygmax_migrations")
    return {(row["module"], row["name"]): row["checksum"] for row in rows}


def _check_history(steps: Sequence[Step], applied: dict[tuple[str, str], str]) -> list[Step]:
    pending = []
    for step in steps:
        recorded = applied.get((step.module, step.name))
        if recorded is None:
            pending.append(step)
        elif recorded != step.checksum:
            raise MigrationError(
                f"{step.module}/{step.name} was changed after it was applied; "
                "migrations are append-only: restore the file and add a new step"
            )
    return pending


async def pending(dsn: str, steps: Sequence[Step]) -> list[Step]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return _check_history(steps, await _applied(connection))
    finally:
        await connection.close()


async def migrate(dsn: str, steps: Sequence[Step], lock_timeout_s: float = 300) -> list[Step]:
    """Apply pending steps in one transaction under the advisory lock; return what was applied."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        async with connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            # Transaction-scoped: released on commit or rollback, even if this process dies.
            await connection.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
            await connection.execute(LEDGER_DDL)
            todo = _check_history(steps, await _applied(connection))
            for step in todo:
                try:
                    await connection.execute(step.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{step.module}/{step.name} failed: {exc}; nothing was applied") from exc
                await connection.execute(
                    "INSERT INTO sygmax_migrations (module, name, checksum) VALUES ($1, $2, $3)",
                    step.module, step.name, step.checksum,
                )
            return todo
    finally:
        await connection.close()
