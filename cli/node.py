"""Helpers shared by the appliance commands (install, status, logs, up/down/restart, scale, doctor)."""

from __future__ import annotations

from pathlib import Path

import typer

from appliance.layout import ApplianceState, LayoutError, load_state
from cli.output import fail

PREFIX_HELP = (
    "Install prefix (default: the one SYGMAX_CONFIG is under, else /). Tests and side-by-side "
    "installs use their own, e.g. /srv/sygmax-test."
)


def prefix_option() -> Path | None:
    return typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False)


def state_or_fail(prefix: Path | None) -> ApplianceState:
    try:
        return load_state(prefix)
    except LayoutError as exc:
        fail(str(exc))


def parse_counts(pairs: list[str]) -> dict[str, int]:
    """``["api=3", "realtime=2"]`` -> counts; refuses anything else with the expected form."""
    from profiles import PROFILES

    counts: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not value.strip().isdigit():
            fail(f"expected PROFILE=N (e.g. api=3), got {pair!r}")
        if name not in PROFILES:
            fail(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
        if name in counts:
            fail(f"{name} given twice")
        counts[name] = int(value)
    return counts
