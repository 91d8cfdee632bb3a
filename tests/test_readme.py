"""The README's Python examples run as written (a feature that exists only in a doc does not)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks under the README heading ``section`` (up to the next ## heading)."""
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    body = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.parametrize("section", ["## Fault injection in five lines"])
def test_fault_injection_examples_run(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(section)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        # blocks build on each other (model, inj, x), as a reader would run them in order
        exec(compile(block.replace("    ...", "    pass"), str(README), "exec"), namespace)
    assert (tmp_path / "map.pt").exists()
