"""What is known about a metric: its direction (higher or lower is better) and its range.

A campaign may declare both (:class:`Metric`); otherwise they are guessed from the metric's name.
The one owner of these rules: the report and the campaign driver both ask here, so a metric is
never treated as bounded by one and unbounded by the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..columns import OUTCOME_CLASSES
from ..errors import CampaignSpecError

__all__ = [
    "LOWER_IS_BETTER_TOKENS",
    "LOWER_IS_BETTER_WORDS",
    "Metric",
    "UNIT_RANGE_TOKENS",
    "UNIT_RANGE_WORDS",
    "checked_bounds",
    "higher_is_better",
    "metric_bounds",
    "resolve_metric",
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
        ``mae``, ``ppl``, ``time``...), True otherwise. A training trial's outcome classes
        (:data:`pytei_ray.columns.OUTCOME_CLASSES`): only ``masked`` is higher-is-better.

    Example:
        >>> higher_is_better("auc"), higher_is_better("logloss"), higher_is_better("val_ce")
        (True, False, False)
    """
    if metric in OUTCOME_CLASSES:    # a training trial's 0/1 outcome: only masked is good
        return metric == "masked"
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
        ``recall``, ``f1``, ``iou``, names with a ``rate`` token, a training trial's 0/1
        outcome classes ``masked``, ``divergence``...), ``(0, inf)`` for other
        lower-is-better (loss-like) metrics, ``(-inf, inf)`` otherwise.

    Example:
        >>> metric_bounds("top1_acc"), metric_bounds("logloss"), metric_bounds("score")
        ((0.0, 1.0), (0.0, inf), (-inf, inf))
    """
    name = metric.lower()
    tokens = _tokens(metric)
    if metric in OUTCOME_CLASSES:
        return 0.0, 1.0
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


def _real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and not math.isnan(x)


@dataclass(frozen=True)
class Metric:
    """A metric's declared range and direction (what the name heuristics otherwise guess).

    A metric with finite ``bounds`` gets distribution-free intervals (confidence sequences,
    :func:`pytei_ray.stats.betting_cs`); values outside the bounds are an error, not clamped.

    Args:
        bounds: ``(low, high)`` with ``low < high`` (a side may be infinite), or None to guess
            from the name.
        higher_is_better: Direction, or None to guess from the name.

    Example:
        >>> Metric(bounds=(0, 1), higher_is_better=True).to_spec()
        {'bounds': [0.0, 1.0], 'higher_is_better': True}
        >>> Metric(bounds=(1, 0))
        Traceback (most recent call last):
        ...
        pytei_ray.errors.CampaignSpecError: Expected argument `bounds` to be (low, high) with \
low < high, but got (1, 0).
    """

    bounds: tuple[float, float] | None = None
    higher_is_better: bool | None = None

    def __post_init__(self) -> None:
        b = self.bounds
        if b is not None:
            if isinstance(b, (str, bytes)) or not isinstance(b, Sequence) or len(b) != 2 \
                    or not all(_real(v) for v in b):
                raise CampaignSpecError(
                    "Expected argument `bounds` to be a pair of numbers (low, high) "
                    f"(a side may be +-inf), but got {b!r}.")
            if not float(b[0]) < float(b[1]):
                raise CampaignSpecError(
                    f"Expected argument `bounds` to be (low, high) with low < high, but got {b!r}.")
            object.__setattr__(self, "bounds", (float(b[0]), float(b[1])))
        if self.higher_is_better is not None and not isinstance(self.higher_is_better, bool):
            raise CampaignSpecError("Expected argument `higher_is_better` to be a bool or None, "
                                    f"but got {self.higher_is_better!r}.")

    @property
    def bounded(self) -> bool:
        """Both bounds declared and finite."""
        return self.bounds is not None and all(math.isfinite(v) for v in self.bounds)

    def to_spec(self) -> dict[str, Any]:
        """JSON-able dict (an infinite side is null); inverse of :meth:`from_spec`."""
        bounds = None if self.bounds is None else [v if math.isfinite(v) else None
                                                   for v in self.bounds]
        return {"bounds": bounds, "higher_is_better": self.higher_is_better}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Metric:
        """Rebuild from :meth:`to_spec`."""
        if not isinstance(spec, dict) or set(spec) - {"bounds", "higher_is_better"}:
            raise CampaignSpecError(f"Expected a dict from Metric.to_spec(), but got {spec!r}.")
        bounds = spec.get("bounds")
        if bounds is not None:
            if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
                raise CampaignSpecError(
                    f"Expected `bounds` to be [low, high] (null = infinite), but got {bounds!r}.")
            bounds = (-math.inf if bounds[0] is None else bounds[0],
                      math.inf if bounds[1] is None else bounds[1])
        return cls(bounds=bounds, higher_is_better=spec.get("higher_is_better"))

    def check(self, metric: str, values: Iterable[float] | np.ndarray,
              trials: Sequence[Any] | None = None) -> None:
        """Raise ValueError naming the first trial whose finite value lies outside ``bounds``.

        Args:
            metric: The metric's name (for the message).
            values: Its values (non-finite ones are not checked: failures, not range errors).
            trials: Trial ids in the same order (for the message), or None (positions).
        """
        if self.bounds is None:
            return
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                       dtype=float)
        lo, hi = self.bounds
        bad = np.flatnonzero(np.isfinite(x) & ((x < lo) | (x > hi)))
        if bad.size:
            i = int(bad[0])
            who = f"trial {trials[i]!r}" if trials is not None else f"value #{i}"
            raise ValueError(
                f"Metric {metric!r} is declared in [{lo:g}, {hi:g}] but {who} has "
                f"{float(x[i])!r} ({bad.size} value(s) outside).\n"
                "  fix: declare the bounds the metric really has (Metric(bounds=...)), "
                "or correct `evaluate`")


def resolve_metric(metric: str, declared: Metric | None = None,
                   observed: Iterable[float] | np.ndarray = ()) -> Metric:
    """The range and direction to use: the declared ones, else guessed from the name.

    Guessed bounds are :func:`checked_bounds` (a side that an observed value crosses is
    dropped); declared bounds are kept and the values checked (:meth:`Metric.check`).

    Example:
        >>> resolve_metric("score"), resolve_metric("score", Metric(bounds=(0, 1)))
        (Metric(bounds=(-inf, inf), higher_is_better=True), Metric(bounds=(0.0, 1.0), \
higher_is_better=True))
    """
    declared = declared or Metric()
    if declared.bounds is not None:
        declared.check(metric, observed)
        bounds = declared.bounds
    else:
        bounds = checked_bounds(metric, observed)
    higher = (higher_is_better(metric) if declared.higher_is_better is None
              else declared.higher_is_better)
    return Metric(bounds=bounds, higher_is_better=higher)
