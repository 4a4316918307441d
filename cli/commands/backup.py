"""``sygmax backup create | list | verify | keygen``: encrypted archives of the node."""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cli.output import console, fail, load_or_fail

app = typer.Typer(help="Encrypted backups: create, list, verify (restore with `sygmax restore`).",
                  no_args_is_help=True)

OUTPUT_HELP = "A directory, a file name ending in .sygbak, or s3://ACCESS:SECRET@host:port/bucket/prefix " \
              "(default: backup.location)."
KEY_FILE_HELP = "Read the backup key from this file instead of backup.key / SYGMAX_BACKUP_KEY / backup.key_file."
KEY_FILE_OPTION = typer.Option(None, "--key-file", help=KEY_FILE_HELP, dir_okay=False)
TAR_OUTPUT_OPTION = typer.Option(..., "--output", "-o", help="Where to write the tar stream.", dir_okay=False)


def read_key_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        fail(f"cannot read the key file {path}: {exc}")


@contextmanager
def progress_bar(description: str):
    """A rich bar fed by the ``(stage, done, total)`` callbacks of appliance.backup."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(stage: str, done: int, total: int | None) -> None:
            bar.update(task, description=f"{description}: {stage}", completed=done, total=total)

        yield update


def create(
    output: str = typer.Option(None, "--output", "-o", help=OUTPUT_HELP),
    key_file: Path = KEY_FILE_OPTION,
    reason: str = typer.Option("manual", "--reason", help="Recorded in the archive; 'scheduled' ones are pruned."),
) -> None:
    """Back up the database, stored objects, config and secrets into one encrypted archive."""
    from appliance.backup import create_backup
    from appliance.backup.errors import BackupError

    settings, _ = load_or_fail()
    key = read_key_file(key_file)
    try:
        with progress_bar("backing up") as update:
            result = create_backup(settings, output=output, key=key, reason=reason, progress=update)
    except BackupError as exc:
        fail(f"backup failed: {exc}")
    console.print(f"[green]backup written[/]: {result.location}", highlight=False, soft_wrap=True)
    console.print(
        f"  database {result.database_bytes:,} bytes, {result.objects} object(s) {result.object_bytes:,} bytes, "
        f"{len(result.config_files)} config file(s), base backup {'yes' if result.base_backup else 'no'}",
        highlight=False,
    )


def list_(
    location: str = typer.Option(None, "--location", help="Where to look (default: backup.location)."),
) -> None:
    """The archives in the backup location, newest last (read from their headers; no key needed)."""
    from appliance.backup.errors import BackupError
    from appliance.backup.location import open_location
    from appliance.backup.settings import default_location
    from appliance.backup.verify import list_archives

    settings, _ = load_or_fail()
    try:
        where = location or default_location(settings)
        listed = list_archives(open_location(where))
    except BackupError as exc:
        fail(str(exc))
    if not listed:
        console.print(f"no archives in {where}", highlight=False)
        return
    # One line per archive (not a table that wraps on narrow terminals), so scripts can read it.
    for item in listed:
        meta = item.metadata
        if item.problem:
            console.print(f"{item.entry.location}  [red]{item.problem}[/]", highlight=False, soft_wrap=True)
            continue
        console.print(
            f"{item.entry.location}  created {meta.get('created_at', '?')}  reason {meta.get('reason', '')}  "
            f"sygmax {meta.get('sygmax_version', '')}  pitr-base {'yes' if meta.get('base_backup') else 'no'}  "
            f"{item.entry.size:,} bytes",
            highlight=False, soft_wrap=True,
        )


def verify(
    archive: str = typer.Argument(..., help="Archive path or s3:// URL."),
    key_file: Path = KEY_FILE_OPTION,
) -> None:
    """Decrypt the archive and check every part's checksum, without restoring anything."""
    from appliance.backup.errors import BackupError
    from appliance.backup.restore import installed_steps
    from appliance.backup.settings import resolve_key
    from appliance.backup.verify import check_compatible, verify_archive

    settings, plugins = load_or_fail()
    try:
        key = resolve_key(settings, read_key_file(key_file))
        with progress_bar("verifying") as update:
            contents = verify_archive(archive, key, update)
    except BackupError as exc:
        fail(f"refused: {exc}")
    meta = contents.metadata
    try:
        check_compatible(meta, installed_steps(plugins))
    except BackupError as exc:
        fail(f"refused: the archive is intact, but this Sygmax cannot restore it: {exc}")
    objects = sum(1 for part in contents.parts if part.startswith("objects/"))
    console.print(f"[green]archive OK[/]: {len(contents.parts)} part(s) checked, {objects} object(s); "
                  f"made {meta['created_at']} by Sygmax {meta['sygmax_version']} ({meta.get('reason', '')})",
                  highlight=False)


def decrypt(
    archive: str = typer.Argument(..., help="Archive path or s3:// URL."),
    output: Path = TAR_OUTPUT_OPTION,
    key_file: Path = KEY_FILE_OPTION,
) -> None:
    """Write the archive's plaintext tar stream (for inspection by hand; restores do not need it)."""
    import os

    from appliance.backup.errors import BackupError
    from appliance.backup.settings import resolve_key
    from appliance.backup.verify import open_archive

    settings, _ = load_or_fail()
    if output.exists():
        fail(f"{output} exists; choose a new file")
    try:
        key = resolve_key(settings, read_key_file(key_file))
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle, open_archive(archive, key) as reader:
            while data := reader.read(1024 * 1024):
                handle.write(data)
    except (BackupError, OSError) as exc:
        output.unlink(missing_ok=True)  # an archive that fails to authenticate leaves nothing behind
        fail(f"refused: {exc}")
    console.print(f"[green]decrypted[/] to {output} (a tar stream; see docs/operator-guide.md)", highlight=False,
                  soft_wrap=True)


def keygen() -> None:
    """Print a new random backup key (set it as backup.key; keep a copy off this host)."""
    console.print(secrets.token_urlsafe(32), highlight=False)


app.command("create")(create)
app.command("list")(list_)
app.command("verify")(verify)
app.command("decrypt")(decrypt)
app.command("keygen")(keygen)
