"""PostgreSQL client tools (pg_dump, psql, pg_basebackup) run against ``database.url``.

The password goes to the tools through ``PGPASSWORD`` in their environment, never on their
command line, where any local user could read it in the process list.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from appliance.backup.errors import BackupError


def tool(name: str) -> str:
    """The newest installed version of a PostgreSQL client tool."""
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(f"{name} not found: install the postgresql-client package")


def libpq_environ(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    environ.update({
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": unquote(parts.username or ""),
        "PGDATABASE": unquote(parts.path.lstrip("/")) or "sygmax",
        "PGAPPNAME": "sygmax-backup",
        "PGCONNECT_TIMEOUT": "10",
    })
    if parts.password:
        environ["PGPASSWORD"] = unquote(parts.password)
    return environ


def server_info_sql() -> str:
    return "SELECT current_setting('server_version'), current_setting('archive_mode')"
