"""Shared console helpers: every refusal prints what is wrong and exits non-zero."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
errors = Console(stderr=True)

EXIT_CONFIG = 2
EXIT_PENDING = 3
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_or_fail():
    """Validated settings and enabled plugins, or exit with the precise problem."""
    from sygmax.app import load_configuration
    from sygmax.config import ConfigError
    from sygmax.plugins import PluginError

    try:
        return load_configuration()
    except ConfigError as exc:
        fail(exc.render(), EXIT_CONFIG)
    except PluginError as exc:
        fail(str(exc), EXIT_CONFIG)
