"""How every benchmark hands back its figures: JSON on stdout, and a copy under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, results_file: Path, write: bool = True) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if write:
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(text + "\n")
