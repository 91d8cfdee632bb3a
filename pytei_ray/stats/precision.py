"""The precision target of an adaptive campaign: what "tight enough" means, and its looks.

An adaptive campaign runs ``min_reps`` repetitions per point, then multiplies the repetitions
of the points whose cells are not yet conclusive by ``growth`` (2: doubling; see
:func:`pytei_ray.stats.judge_cell`), up to ``max_reps``. Looking at the data several times and
stopping when it looks good would make a fixed-sample interval over-claim. A bounded metric's
interval is a confidence sequence (:func:`~pytei_ray.stats.betting_cs`), valid at every look
at ``confidence``; an unbounded metric's Student-t interval is computed at ``look_confidence``
(Bonferroni over the planned looks), which keeps the probability that ANY look's interval
misses at most ``1 - confidence``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..errors import CampaignSpecError

__all__ = ["Precision"]

_FORMS = ("METRIC=H (absolute half-width of the mean, e.g. auc=0.005), METRIC=P% (relative to "
          "|golden|, e.g. auc=1%), METRIC.sdc_rate=H (half-width of the SDC rate, e.g. "
          "auc.sdc_rate=0.05)")
_TEXT = re.compile(r"^\s*(?P<metric>[^=\s]+?)(?:\.(?P<on>mean|sdc_rate))?\s*=\s*"
                   r"(?P<value>[-+0-9.eE]+)\s*(?P<pct>%?)\s*$")


def _bad(name: str, rule: str, value: Any) -> CampaignSpecError:
    return CampaignSpecError(f"Expected argument `{name}` to be {rule}, but got {value!r}.")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Precision:
    """Stopping rule: the confidence-interval half-width a campaign's cells must reach.

    Args:
        metric: Metric the target is about.
        halfwidth: Wanted half-width (> 0): of the mean (absolute, or a fraction of |golden|
            when ``relative``), or of the SDC rate (``on="sdc_rate"``: a proportion).
        relative: ``halfwidth`` is relative to |golden| (mean only).
        on: ``"mean"`` or ``"sdc_rate"``.
        confidence: Overall two-sided level of the intervals a cell stops with.
        max_reps: Most repetitions a point gets (the last look).
        threshold: SDC threshold (relative drop below golden) of the ``sdc_rate`` target.
        higher_is_better: Metric direction; None guesses it from the name.
        growth: Factor between consecutive looks (> 1; each look rounded up to a whole
            repetition). 2 doubles; a smaller factor (1.5) overshoots a cell's need by less
            (cheaper where most cells need many trials) at the cost of more rounds. A bounded
            metric's confidence sequence is valid at any look; an unbounded metric's t interval
            pays for more looks (Bonferroni over ``looks``).

    Example:
        >>> p = Precision.parse("auc=1%", max_reps=160)
        >>> p.looks(10), round(p.look_confidence(10), 4), p.cli_flags()
        ([10, 20, 40, 80, 160], 0.99, '--precision auc=1% --max-reps 160')
    """

    metric: str
    halfwidth: float
    relative: bool = False
    on: Literal["mean", "sdc_rate"] = "mean"
    confidence: float = 0.95
    max_reps: int = 160
    threshold: float = 0.01
    higher_is_better: bool | None = None
    growth: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise _bad("metric", "a non-empty metric name", self.metric)
        if not _number(self.halfwidth) or self.halfwidth <= 0:
            raise _bad("halfwidth", "a number > 0", self.halfwidth)
        if not isinstance(self.relative, bool):
            raise _bad("relative", "a bool", self.relative)
        if self.on not in ("mean", "sdc_rate"):
            raise _bad("on", "'mean' or 'sdc_rate'", self.on)
        if self.on == "sdc_rate" and self.relative:
            raise _bad("relative", "False for an sdc_rate target (a rate is already a "
                       "proportion)", self.relative)
        if not _number(self.confidence) or not 0.0 < self.confidence < 1.0:
            raise _bad("confidence", "a number in the (0, 1) range", self.confidence)
        if isinstance(self.max_reps, bool) or not isinstance(self.max_reps, int) \
                or self.max_reps < 1:
            raise _bad("max_reps", "an int >= 1", self.max_reps)
        if not _number(self.threshold) or not 0.0 <= self.threshold < 1.0:
            raise _bad("threshold", "a number in the [0, 1) range", self.threshold)
        if self.higher_is_better is not None and not isinstance(self.higher_is_better, bool):
            raise _bad("higher_is_better", "a bool or None", self.higher_is_better)
        if not _number(self.growth) or not 1.0 < self.growth <= 16.0:
            raise _bad("growth", "a number in (1, 16] (2: double the repetitions at each look)",
                       self.growth)

    def looks(self, min_reps: int) -> list[int]:
        """Repetition counts at which cells are judged: ``min_reps`` times ``growth`` at each
        look (rounded up, at least one more), then ``max_reps``.

        Example:
            >>> Precision("auc", 0.01, max_reps=100).looks(10)
            [10, 20, 40, 80, 100]
            >>> Precision("auc", 0.01, max_reps=100, growth=1.5).looks(10)
            [10, 15, 23, 35, 53, 80, 100]
        """
        if isinstance(min_reps, bool) or not isinstance(min_reps, int) or min_reps < 1:
            raise _bad("min_reps", "an int >= 1", min_reps)
        if self.max_reps < min_reps:
            raise CampaignSpecError(
                "The precision target's maximum repetitions are below the minimum.\n"
                f"  expected: max_reps >= min_reps ({min_reps})\n  got: max_reps={self.max_reps}")
        out = [min_reps]
        while (nxt := _grown(out[-1], self.growth)) < self.max_reps:
            out.append(nxt)
        if out[-1] != self.max_reps:
            out.append(self.max_reps)
        return out

    def look_confidence(self, min_reps: int) -> float:
        """Level of each look's t interval (unbounded metrics): ``1 - (1 - confidence) /
        len(looks)`` (Bonferroni; bounded metrics use confidence sequences at ``confidence``).

        P(some look's interval misses) <= sum over looks of alpha / L = alpha, so whatever
        look a cell stops at, its interval covers with probability >= ``confidence``.
        """
        return 1.0 - (1.0 - self.confidence) / len(self.looks(min_reps))

    def to_spec(self) -> dict[str, Any]:
        """JSON-able dict (stored in the campaign manifest); inverse of :meth:`from_spec`.
        ``growth`` enters only when it is not 2, so directories of doubling campaigns written
        before it existed keep their spec."""
        spec = asdict(self)
        if spec["growth"] == 2.0:
            del spec["growth"]
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Precision:
        """Rebuild from :meth:`to_spec` (a ``min_reps`` entry next to it is ignored)."""
        if not isinstance(spec, dict):
            raise _bad("spec", "a dict from Precision.to_spec()", spec)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - names - {"min_reps"})
        if unknown:
            raise CampaignSpecError(
                f"Unknown precision field(s) {unknown}.\n  expected some of: {sorted(names)}")
        return cls(**{k: v for k, v in spec.items() if k in names})

    @classmethod
    def parse(cls, text: str, confidence: float = 0.95, max_reps: int = 160,
              threshold: float = 0.01, higher_is_better: bool | None = None,
              growth: float = 2.0) -> Precision:
        """Read a command-line target: ``auc=0.005``, ``auc=1%``, ``auc.sdc_rate=0.05``.

        Example:
            >>> Precision.parse("auc.sdc_rate=0.05").on
            'sdc_rate'
        """
        match = _TEXT.match(text) if isinstance(text, str) else None
        try:
            value = float(match["value"]) if match else math.nan
        except ValueError:
            value = math.nan
        if not match or not math.isfinite(value):
            raise CampaignSpecError(
                f"Cannot read the precision target {text!r}.\n  expected one of: {_FORMS}")
        on = match["on"] or "mean"
        pct = bool(match["pct"])
        value = value / 100.0 if pct else value
        return cls(match["metric"], value, relative=pct and on == "mean", on=on,
                   confidence=confidence, max_reps=max_reps, threshold=threshold,
                   higher_is_better=higher_is_better, growth=growth)

    def text(self) -> str:
        """The :meth:`parse` form of the target (``auc=1%``)."""
        value = f"{self.halfwidth * 100:g}%" if self.relative else f"{self.halfwidth:g}"
        on = ".sdc_rate" if self.on == "sdc_rate" else ""
        return f"{self.metric}{on}={value}"

    def describe(self) -> str:
        """One line for messages: what must be how narrow, at what level, up to how many reps."""
        what = (f"SDC rate of {self.metric} (drop > {self.threshold:.2%})"
                if self.on == "sdc_rate" else f"mean {self.metric}")
        width = (f"{self.halfwidth:.3g} × |golden|" if self.relative
                 else f"{self.halfwidth:.3g}")
        looks = "" if self.growth == 2.0 else f" (x{self.growth:g} a look)"
        return (f"{what}: {self.confidence:.0%} interval half-width <= {width}, "
                f"at most {self.max_reps} repetitions{looks}")

    def cli_flags(self, max_reps: int | None = None) -> str:
        """Launcher flags asking for this target (``--precision auc=1% --max-reps 160``, and
        ``--growth G`` when the looks do not double)."""
        growth = "" if self.growth == 2.0 else f" --growth {self.growth:g}"
        return f"--precision {self.text()} --max-reps {max_reps or self.max_reps}{growth}"


def _grown(reps: int, growth: float) -> int:
    """The look after ``reps``: ``ceil(reps * growth)`` (a float product a hair above a whole
    number is that number), at least ``reps + 1``."""
    return max(reps + 1, math.ceil(round(reps * growth, 9)))
