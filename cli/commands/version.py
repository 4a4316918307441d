"""``sygmax version``."""

import typer

from sygmax import __version__


def version() -> None:
    """Print the installed Sygmax version."""
    typer.echo(__version__)
