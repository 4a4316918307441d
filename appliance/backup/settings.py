"""The ``[backup]`` configuration section (declared by the ``backup`` plugin, read here)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from sygmax.config import Section, Settings


class BackupSettings(Section):
    key: str = Field("", description="operator-held backup key (or SYGMAX_BACKUP_KEY, or key_file)")
    key_file: str = Field("", description="file holding the backup key (first line)")
    location: str = Field(
        "", description="directory or s3://ACCESS:SECRET@host:port/bucket/prefix; default <prefix>/var/lib/sygmax/backups"
    )
    wal_dir: str = Field("", description="where PostgreSQL archives WAL segments; default <location>/wal on local disk")
    schedule_hour: int = Field(3, ge=0, le=23, description="UTC hour from which the daily backup runs")
    keep_daily: int = Field(7, ge=1, le=366)
    keep_weekly: int = Field(4, ge=0, le=520)

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("the backup key must be at least 16 characters (sygmax backup keygen makes one)")
        return value


def backup_settings(settings: Settings) -> BackupSettings:
    """The validated ``[backup]`` section; its defaults when the backup plugin is not enabled."""
    section = settings.plugin_sections.get("backup")
    return section if isinstance(section, BackupSettings) else BackupSettings()


def install_prefix(settings: Settings) -> Path | None:
    """The appliance prefix the config file lives under (``<prefix>/etc/sygmax/sygmax.toml``), if any."""
    path = Path(settings.source).resolve()
    if path.parent.name == "sygmax" and path.parent.parent.name == "etc":
        return path.parent.parent.parent
    return None


def default_location(settings: Settings) -> str:
    configured = backup_settings(settings).location
    if configured:
        return configured
    prefix = install_prefix(settings)
    if prefix is None:
        from appliance.backup.errors import BackupError

        raise BackupError(
            "no backup location: set backup.location (a directory or s3://...) or pass --output"
        )
    return str(prefix / "var" / "lib" / "sygmax" / "backups")


def wal_directory(settings: Settings) -> Path | None:
    """Where the WAL archive lives, or None when it cannot be known (no install, remote location)."""
    configured = backup_settings(settings).wal_dir
    if configured:
        return Path(configured)
    from appliance.backup.errors import BackupError

    try:
        location = default_location(settings)
    except BackupError:
        return None
    if location.startswith("s3://"):
        prefix = install_prefix(settings)
        return None if prefix is None else prefix / "var" / "lib" / "sygmax" / "backups" / "wal"
    return Path(location) / "wal"


def resolve_key(settings: Settings, key: str | None = None) -> str:
    """The operator key: given, ``backup.key`` (or ``SYGMAX_BACKUP_KEY``), or ``backup.key_file``."""
    from appliance.backup.errors import BackupError

    section = backup_settings(settings)
    if key:
        found = key
    elif section.key:
        found = section.key
    elif section.key_file:
        try:
            found = Path(section.key_file).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise BackupError(f"cannot read backup.key_file {section.key_file}: {exc}") from exc
    else:
        raise BackupError(
            "no backup key: set backup.key in sygmax.toml, SYGMAX_BACKUP_KEY, or backup.key_file "
            "(sygmax backup keygen makes one; keep a copy off this host, restores need it)"
        )
    if len(found) < 16:
        raise BackupError("the backup key must be at least 16 characters (sygmax backup keygen makes one)")
    return found
