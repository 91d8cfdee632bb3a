"""What a metric's name says about it: its direction (higher or lower is better) and its range.

The one owner of these name heuristics: the report and the campaign driver both ask here, so a
metric is never treated as bounded by one and unbounded by the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

__all__ = [
    "LOWER_IS_BETTER_TOKENS",
    "LOWER_IS_BETTER_WORDS",
    "UNIT_RANGE_TOKENS",
    "UNIT_RANGE_WORDS",
    "checked_bounds",
    "higher_is_better",
    "metric_bounds",
]

#: A metric whose name contains one of these words is treated as lower-is-better (loss-like).
LOWER_IS_BETTER_WORDS = ("loss", "error", "mse", "rmse", "mape", "perplexity", "nll", "xent",
                         "crossentropy", "cross_entropy", "latency", "distance")
#: ...or has one of these short words as a whole token (``val_ce``, ``wer``, ``time_s``), so that
#: e.g. ``precision`` or ``power`` are not mistaken for ``ce`` / ``wer``.
LOWER_IS_BETTER_TOKENS = ("ce", "mae", "wer", "cer", "ter", "err", "ppl", "eer", "fpr", "fnr",
                          "time", "seconds", "ms")
#: Metrics bounded to [0, 1]: names containing one of these words...
UNIT_RANGE_WORDS = ("accuracy", "auroc", "auprc", "precision", "recall", "specificity",
                    "sensitivity", "jaccard")
#: ...or having one of these whole tokens (``acc``, ``top1_acc``, ``error_rate``, ``f1``).
UNIT_RANGE_TOKENS = ("acc", "auc", "f1", "iou", "miou", "dice", "ap", "map", "rate", "top1",
                     "top5", "fpr", "fnr", "tpr", "tnr", "eer")


def _tokens(metric: str) -> list[str]:
    """Words of a metric name: split on non-alphanumerics and camelCase, lower-cased."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", metric)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def higher_is_better(metric: str) -> bool:
    """Guess the direction of a metric from its name.

    Args:
        metric: Metric column name, e.g. ``"auc"`` or ``"logloss"``.

    Returns:
        False when the name contains a loss-like word (see :data:`LOWER_IS_BETTER_WORDS`:
        ``loss``, ``error``, ``xent``, ``cross_entropy``, ``nll``, ``rmse``, ``latency``...) or
        has a loss-like token (:data:`LOWER_IS_BETTER_TOKENS`: ``ce``, ``wer``, ``cer``,
        ``mae``, ``ppl``, ``time``...), True otherwise.

    Example:
        >>> higher_is_better("auc"), higher_is_better("logloss"), higher_is_better("val_ce")
        (True, False, False)
    """
    name = metric.lower()
    if any(word in name for word in LOWER_IS_BETTER_WORDS):
        return False
    return not any(tok in LOWER_IS_BETTER_TOKENS for tok in _tokens(metric))


def metric_bounds(metric: str) -> tuple[float, float]:
    """Natural range of a metric, guessed from its name (used to clamp confidence intervals).

    Args:
        metric: Metric column name.

    Returns:
        ``(0, 1)`` for proportions (``accuracy``, ``acc``, ``auc``, ``auroc``, ``precision``,
        ``recall``, ``f1``, ``iou``, names with a ``rate`` token...), ``(0, inf)`` for other
        lower-is-better (loss-like) metrics, ``(-inf, inf)`` otherwise.

    Example:
        >>> metric_bounds("top1_acc"), metric_bounds("logloss"), metric_bounds("score")
        ((0.0, 1.0), (0.0, inf), (-inf, inf))
    """
    name = metric.lower()
    tokens = _tokens(metric)
    if any(w in name for w in UNIT_RANGE_WORDS) or any(t in UNIT_RANGE_TOKENS for t in tokens):
        return 0.0, 1.0
    if not higher_is_better(metric):
        return 0.0, math.inf
    return -math.inf, math.inf


def checked_bounds(metric: str, observed: Iterable[float] | np.ndarray) -> tuple[float, float]:
    """The name's range (:func:`metric_bounds`), each side kept only if no observed value
    crosses it, so an accuracy stored in percent is not clamped to [0, 1].

    Args:
        metric: Metric column name.
        observed: Values seen for it (trials and golden); non-finite ones are ignored.

    Returns:
        ``(low, high)``; a side is infinite when unknown.

    Example:
        >>> checked_bounds("acc", [0.5, 0.9]), checked_bounds("acc", [50.0, 90.0])
        ((0.0, 1.0), (0.0, inf))
    """
    lo, hi = metric_bounds(metric)
    seen = np.asarray(list(observed) if not isinstance(observed, np.ndarray) else observed,
                      dtype=float)
    seen = seen[np.isfinite(seen)]
    if seen.size and seen.min() < lo:
        lo = -math.inf
    if seen.size and seen.max() > hi:
        hi = math.inf
    return lo, hi
