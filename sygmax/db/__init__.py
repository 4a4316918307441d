"""PostgreSQL access: one pooled piccolo engine (asyncpg underneath) per process.

Plugins declare piccolo ``Table`` classes; the kernel binds every enabled plugin's tables
to the process's engine at start-up, so no ``piccolo_conf.py`` global is needed and two
apps with different databases (tests) can live in one interpreter.
"""

from __future__ import annotations

from typing import Iterable

from piccolo.engine.postgres import PostgresEngine
from piccolo.table import Table

from sygmax.config import DatabaseSettings


async def _rollback_only(connection) -> None:
    """Pool release hook: asyncpg has already rolled back any open transaction.

    The default reset also runs ``RESET ALL; CLOSE ALL; UNLISTEN *; pg_advisory_unlock_all()``,
    one more round trip on every release (measured: ~60 us CPU per two-query request). Sygmax
    code never leaves session state on a pooled connection: settings are ``SET LOCAL`` and
    advisory locks are transaction-scoped, so that round trip buys nothing here.
    """


class Database:
    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        # extensions=() because the application role need not own the database.
        self.engine = PostgresEngine(config={"dsn": settings.url}, extensions=())

    async def start(self) -> None:
        await self.engine.start_connection_pool(
            min_size=self.settings.pool_min,
            max_size=self.settings.pool_max,
            reset=_rollback_only,
            server_settings={"statement_timeout": str(self.settings.statement_timeout_ms),
                             "application_name": "sygmax"},
        )

    async def close(self) -> None:
        await self.engine.close_connection_pool()

    @property
    def pool(self):
        """The asyncpg pool, for the few kernel paths that need raw SQL (health, migrations)."""
        return self.engine.pool

    def bind(self, tables: Iterable[type[Table]]) -> None:
        for table in tables:
            table._meta.db = self.engine

    async def check(self) -> None:
        async with self.pool.acquire(timeout=2) as connection:
            await connection.fetchval("SELECT 1", timeout=2)
