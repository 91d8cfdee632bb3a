"""One owner of the results-directory layout: no module outside pytei_ray/storage spells a name."""

from __future__ import annotations

import re
from pathlib import Path

from pytei_ray.storage import layout

PACKAGE = Path(__file__).resolve().parents[1] / "pytei_ray"
NAMES = ("_manifest.json", "_golden", "_report", "_quarantine", "_artifacts", "_job.py", "_lock",
         "_steps", "_golden_steps")


def test_layout_names_are_spelled_only_in_storage():
    # a name as a word of its own: "_golden" but not "golden_" columns or "_golden_run"
    pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?![\w])" for n in NAMES))
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "storage":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "layout names outside pytei_ray/storage:\n" + "\n".join(offenders)


def test_the_names_are_the_layout_constants():
    assert set(NAMES) == set(layout.RESERVED_NAMES)
    assert all(n.startswith("_") for n in layout.RESERVED_NAMES)  # Parquet readers skip them
