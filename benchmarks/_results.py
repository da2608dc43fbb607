"""Where a benchmark puts its figures: one JSON file shared by every benchmark of a run.

``run_all.py`` sets ``INTERPRETLM_BENCH_JSON`` (or a script's ``--json`` does) and each
benchmark calls :func:`record` for every figure it prints; ``render_table.py`` makes the
README's "Benchmarks at a glance" table from that file, so the quoted figures cannot drift
from what was measured. Without the variable, ``record`` does nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def target() -> Path | None:
    p = os.environ.get("INTERPRETLM_BENCH_JSON")
    return Path(p) if p else None


def record(section: str, key: str, value: Any) -> None:
    """Merge ``value`` into ``{section: {key: value}}`` of the run's JSON file (read-modify-write)."""
    path = target()
    if path is None:
        return
    data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    data.setdefault(section, {})[key] = float(value) if isinstance(value, (int, float)) else value
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
