"""``sygmax logs [PROFILE|SERVICE|PROGRAM] [-f]``: the node's logs, each line tagged with its process."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.node import PREFIX_HELP, state_or_fail
from cli.output import fail


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:] if lines else []


def logs(
    target: str | None = typer.Argument(
        None,
        help="A profile (api, ...), a service (postgresql, redis, "
        "caddy) or a program (sygmax-api-1); default: all.",
    ),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines (Ctrl-C stops)."),
    lines: int = typer.Option(50, "-n", "--lines", min=0, help="Lines of history per log."),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Show the last lines of the node's logs (under <prefix>/var/log/sygmax), optionally following them."""
    from appliance.layout import LayoutError
    from appliance.status import log_files

    state = state_or_fail(prefix)
    try:
        files = log_files(state, target)
    except LayoutError as exc:
        fail(str(exc))
    width = max(len(path.stem) for path in files)
    for path in files:
        for line in _tail(path, lines):
            typer.echo(f"{path.stem:<{width}} | {line}")
    if not follow:
        return
    positions = {
        path: (path.stat().st_size, path.stat().st_ino) if path.exists() else (0, 0) for path in files
    }
    try:
        while True:
            for path in files:
                try:
                    stat = path.stat()
                except OSError:
                    continue
                offset, inode = positions[path]
                if stat.st_ino != inode or stat.st_size < offset:  # rotated or truncated
                    offset = 0
                if stat.st_size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        data = handle.read()
                    complete = data.rfind(b"\n") + 1
                    for line in data[:complete].decode(errors="replace").splitlines():
                        typer.echo(f"{path.stem:<{width}} | {line}")
                    offset += complete
                positions[path] = (offset, stat.st_ino)
            time.sleep(0.3)
    except KeyboardInterrupt:
        return
