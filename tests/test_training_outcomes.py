"""Outcome classes on constructed trajectories, and the golden reproducibility check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from training_fixtures import run

from pytei_ray import BitFlip, StuckAt
from pytei_ray.training import (
    GoldenTrajectory,
    NotReproducibleError,
    Thresholds,
    Weights,
    classify,
)

BASE = [2.0 * 0.9**i for i in range(20)]  # a golden loss curve: 2.0 down to ~0.27
GOLDEN = GoldenTrajectory(BASE, list(BASE))


def curve(changes: dict[int, float]) -> list[float]:
    out = list(BASE)
    for i, v in changes.items():
        out[i] = v
    return out


@pytest.mark.parametrize("changes, expected", [
    ({}, "masked"),
    ({10: BASE[10] * 1.2}, "masked"),  # a 20% bump: below the 50% spike threshold
    ({10: BASE[10] * 3, 11: BASE[11] * 2}, "spike_and_recover"),
    ({i: BASE[i] * 1.05 for i in range(10, 20)}, "silent_degradation"),
    ({i: BASE[i] * 50 for i in range(12, 20)}, "divergence"),
    ({15: math.inf, **{i: math.nan for i in range(16, 20)}}, "divergence"),
    ({10: math.nan, **{i: math.nan for i in range(11, 20)}}, "immediate_nonfinite"),
    ({11: math.inf, **{i: math.nan for i in range(12, 20)}}, "immediate_nonfinite"),
])
def test_classes_on_constructed_trajectories(changes, expected):
    out = classify(curve(changes), GOLDEN, fault_step=10)
    assert out.name == expected, out.reason
    assert out.identical == (not changes)


def test_thresholds_move_the_boundaries_and_final_metric_decides():
    bump = curve({10: BASE[10] * 1.3})
    assert classify(bump, GOLDEN, 10).name == "masked"
    assert classify(bump, GOLDEN, 10, thresholds=Thresholds(spike=0.2)).name == \
        "spike_and_recover"
    late = curve({13: math.nan, **{i: math.nan for i in range(14, 20)}})
    assert classify(late, GOLDEN, 10).name == "divergence"
    assert classify(late, GOLDEN, 10, thresholds=Thresholds(immediate_steps=3)).name == \
        "immediate_nonfinite"
    with_val = GoldenTrajectory(BASE, list(BASE), final=1.0, final_rerun=1.0)
    assert classify(BASE, with_val, 10, final=1.02).name == "silent_degradation"
    assert classify(BASE, with_val, 10, final=0.995).name == "masked"
    assert classify(BASE, with_val, 10, final=11.0).name == "divergence"
    with pytest.raises(ValueError, match="for both the trial"):
        classify(BASE, with_val, 10)


def test_golden_must_be_bit_for_bit_reproducible():
    drift = list(BASE)
    drift[7] = np.nextafter(BASE[7], 10.0)  # one ulp
    with pytest.raises(NotReproducibleError, match=r"first difference: step 7, loss"):
        GoldenTrajectory(BASE, drift)
    with pytest.raises(NotReproducibleError, match="Seed every generator"):
        GoldenTrajectory([{"step": 0, "loss": 1.0, "grad_norm": 2.0}],
                         [{"step": 0, "loss": 1.0, "grad_norm": 2.5}])
    with pytest.raises(NotReproducibleError, match="final metric"):
        GoldenTrajectory(BASE, BASE, final=1.0, final_rerun=1.1)
    nan = [1.0, math.nan]
    GoldenTrajectory(nan, list(nan))  # NaN reproduced bit for bit is reproducible
    with pytest.raises(TypeError, match="GoldenTrajectory"):
        classify(BASE, BASE, 3)  # a bare list is refused: never classify against unchecked


def test_bad_arguments():
    with pytest.raises(ValueError, match="`fault_step`"):
        classify(BASE, GOLDEN, 20)
    with pytest.raises(ValueError, match="20 steps"):
        classify(BASE[:5], GOLDEN, 1)
    with pytest.raises(ValueError, match="`diverge`"):
        Thresholds(diverge=1.0)
    with pytest.raises(ValueError, match="`spike`"):
        Thresholds(spike=-1)


def test_real_runs_end_to_end():
    """Golden run twice (reproducible), then faulty trials classified from their records."""
    g1 = run(None, steps=8)[0]
    g2 = run(None, steps=8)[0]
    golden = GoldenTrajectory(g1, g2)
    masked = run(Weights("0.weight"), error=BitFlip(n=1, bits=[0]), steps=8)[0]
    assert classify(masked, golden, 3).name == "masked"
    nan = run(Weights("2.weight"), error=StuckAt(n=1, value=1, bits=[30]), steps=8)[0]
    out = classify(nan, golden, 3)
    assert out.name == "immediate_nonfinite" and out.first_nonfinite == 3


def test_the_training_package_imports_no_ray_pyarrow_or_pandas():
    import subprocess
    import sys

    code = ("import sys, pytei_ray.training;"
            "bad = [k for k in ('ray', 'pyarrow', 'pandas') if k in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_outcome_rates_are_bounded_so_few_masked_trials_do_not_settle_a_rate():
    """The 0/1 outcome columns are rates on [0, 1] (only ``masked`` is good): an adaptive
    campaign judges them with confidence sequences, so 3 trials that never diverged leave the
    divergence rate open at +-0.4 (a t interval on 0, 0, 0 has zero width), 10 settle it."""
    import pandas as pd

    from pytei_ray.columns import OUTCOME_CLASSES
    from pytei_ray.stats import Precision
    from pytei_ray.stats.judge import open_points
    from pytei_ray.stats.metrics import higher_is_better, metric_bounds

    assert all(metric_bounds(o) == (0.0, 1.0) for o in OUTCOME_CLASSES)
    assert [higher_is_better(o) for o in OUTCOME_CLASSES] == [o == "masked" for o in
                                                             OUTCOME_CLASSES]
    rule = Precision("divergence", halfwidth=0.4, max_reps=20)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({
            "model": "m", "target": "t", "error_model": "e", "ber": 1e-6, "repetition":
            range(n), "mitigation": "none", "status": "ok", "divergence": 0.0,
            "golden_divergence": 0.0, "n_faults_sampled": 1, "p_no_fault": 0.0})

    assert open_points(frame(3), rule, min_reps=3, look=0) == {("m", "t", "e", 1e-6)}
    assert open_points(frame(12), rule, min_reps=3, look=2) == set()
