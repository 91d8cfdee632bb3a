"""Statistics of fault-injection campaigns: intervals, p0-aware estimators, stopping rules.

Pure (numpy, scipy, pandas): nothing here imports ray or pyarrow, reads files or draws random
numbers. The report (:mod:`pytei_ray.report`) and the adaptive campaign driver both use it, so
"conclusive" has one definition (:func:`judge_cell`).
"""

from .estimate import HEAVY_MAD, MeanEstimate, estimate_mean, estimate_rate, looks_heavy_tailed
from .intervals import (
    check_confidence,
    clopper_pearson,
    mean_ci,
    reps_for_halfwidth,
    student_t_ppf,
    wilson_interval,
)
from .judge import (
    POINT_COLS,
    CellJudgement,
    cell_inputs,
    judge_cell,
    judge_cells,
    open_points,
    stopped_at_cap,
)
from .metrics import checked_bounds, higher_is_better, metric_bounds
from .paired import paired_recovery
from .precision import Precision

__all__ = [
    "HEAVY_MAD",
    "POINT_COLS",
    "CellJudgement",
    "MeanEstimate",
    "Precision",
    "cell_inputs",
    "check_confidence",
    "checked_bounds",
    "clopper_pearson",
    "estimate_mean",
    "estimate_rate",
    "higher_is_better",
    "judge_cell",
    "judge_cells",
    "looks_heavy_tailed",
    "mean_ci",
    "metric_bounds",
    "open_points",
    "paired_recovery",
    "reps_for_halfwidth",
    "stopped_at_cap",
    "student_t_ppf",
    "wilson_interval",
]
