"""benchmarks/strata.py runs end to end at toy size (its figures are not checked here: they are
claimed by running it, see benchmarks/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_strata_benchmark_runs_every_method():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.strata", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for label in ("(U) unstratified", "(B) bit-class strata", "(P) post-strat. & U",
                  "(E) exact-count strata shared by BERs", "mean evaluations summed"):
        assert label in out, out[-2000:]
    assert "rows with coverage below 94%" in out
