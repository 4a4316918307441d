"""``sygmax restore [ARCHIVE] [--at TIMESTAMP] [--yes]``: verify, stop writers, restore, migrate, start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.commands.backup import KEY_FILE_OPTION, progress_bar, read_key_file
from cli.output import console, fail, load_or_fail


def parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--at {text!r} is not an ISO 8601 time, e.g. 2026-11-25T14:30:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # documented: a time without an offset is UTC
    if value > datetime.now(UTC):
        fail(f"--at {text} is in the future")
    return value


def _node_control(settings):
    """The appliance node around this config (supervisord), or None when run outside an install."""
    from appliance.backup.restore import SupervisedNode
    from appliance.backup.settings import install_prefix
    from appliance.layout import LayoutError, load_state

    prefix = install_prefix(settings)
    if prefix is None:
        return None
    try:
        return SupervisedNode(load_state(prefix))
    except LayoutError:
        return None


def restore(
    archive: str = typer.Argument(None, help="Archive path or s3:// URL; with --at alone, the newest fitting one."),
    at: str = typer.Option(None, "--at", help="Point in time to recover to (ISO 8601; UTC if no offset)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (scripts)."),
    key_file: Path = KEY_FILE_OPTION,
) -> None:
    """Restore database, objects and config from an archive (or to a point in time)."""
    from appliance.backup.errors import ArchiveRefused, BackupError
    from appliance.backup.restore import apply, pick_archive_for, prepare
    from appliance.backup.settings import resolve_key

    if archive is None and at is None:
        fail("give an ARCHIVE, --at TIMESTAMP, or both (sygmax backup list shows the archives)")
    settings, plugins = load_or_fail()
    target = parse_at(at) if at else None
    try:
        key = resolve_key(settings, read_key_file(key_file))
        if archive is None:
            archive = pick_archive_for(settings, target)
        with progress_bar("verifying") as update:
            contents = prepare(archive, key, plugins, update, need_base_backup=target is not None)
    except ArchiveRefused as exc:
        fail(f"refused, nothing was changed: {exc}")
    except BackupError as exc:
        fail(f"{exc}; nothing was changed")
    meta = contents.metadata
    control = _node_control(settings)
    console.print(f"archive verified: made {meta['created_at']} by Sygmax {meta['sygmax_version']} "
                  f"({meta.get('reason', '')}), {len(contents.parts)} part(s)", highlight=False)
    what = f"recover the database to {target.isoformat()}" if target else "replace the database"
    if control is None:
        console.print("[yellow]no appliance install around this config: stop the Sygmax processes yourself[/]")
    if not yes and not typer.confirm(f"This will {what}, stored objects and config. Continue?", default=False):
        fail("restore cancelled; nothing was changed")
    try:
        with progress_bar("restoring") as update:
            summary = apply(settings, archive, key, contents, plugins, control=control, at=target,
                            progress=update, note=lambda message: console.print(f"  {message}", highlight=False))
    except BackupError as exc:
        fail(f"restore failed: {exc}")
    console.print("[green]restore complete[/]", highlight=False)
    lines = [
        f"archive:      {summary.archive}",
        f"made:         {summary.created_at} (Sygmax {summary.sygmax_version})",
        f"database:     {'recovered to ' + summary.at if summary.at else f'{summary.database_bytes:,} dump bytes restored'}",
        f"objects:      {summary.objects_restored} restored, {summary.objects_removed} removed",
        f"config:       {', '.join(summary.config_restored) or 'none'}",
        f"migrations:   {', '.join(summary.migrations_applied) or 'none needed'}",
        f"restarted:    {', '.join(summary.writers) or 'none'}",
    ]
    if summary.previous_data_dir:
        lines.append(f"old data dir: {summary.previous_data_dir} (delete it once satisfied)")
    for line in lines:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
