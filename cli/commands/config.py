"""``sygmax config check | show``: validate the configuration, show the effective values."""

from __future__ import annotations

import json

import typer

from cli.output import console, load_or_fail
from sygmax.config import KERNEL_SECTIONS

app = typer.Typer(help="Validate and inspect configuration.", no_args_is_help=True)

_SECRET_WORDS = ("password", "secret", "key", "token")


def _redact(section: str, values: dict) -> dict:
    from urllib.parse import urlsplit, urlunsplit

    shown = {}
    for key, value in values.items():
        if isinstance(value, str) and key.endswith("url"):
            parts = urlsplit(value)
            if parts.password:
                netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
                value = urlunsplit(parts._replace(netloc=netloc))
        elif any(word in key for word in _SECRET_WORDS) and value:
            value = "***"
        shown[key] = value
    return shown


@app.command("check")
def check() -> None:
    """Validate the config file and SYGMAX_* overrides; exit 2 naming each bad key."""
    settings, plugins = load_or_fail()
    console.print(f"[green]configuration OK[/] ({settings.source}); "
                  f"plugins enabled: {', '.join(plugins) or 'none'}", highlight=False)


@app.command("show")
def show() -> None:
    """Print the effective configuration as JSON, secrets masked."""
    settings, _ = load_or_fail()
    sections = {name: getattr(settings, name) for name in KERNEL_SECTIONS}
    sections.update(settings.plugin_sections)
    console.print_json(json.dumps({name: _redact(name, model.model_dump()) for name, model in sections.items()}))
