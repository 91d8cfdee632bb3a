"""What the faults of one training step did, per site: counts for telemetry and result rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SiteStats", "StepFaults"]


@dataclass
class SiteStats:
    """Faults of one site in one step.

    Attributes:
        n_sampled: fault sites drawn (bits for bit models, words otherwise), before a
            mitigation such as SBP filtered them: the same with and without mitigations.
        n_faults: fault sites that reached the tensors.
        n_words: words written.
        n_words_changed: written words whose value changed (a stuck-at bit already at its
            value changes nothing).
        n_nonfinite: NaN/Inf values among the written words.
        n_calls: hook calls that drew faults (activation sites; 0 for tensor sites).
    """

    n_sampled: int = 0
    n_faults: int = 0
    n_words: int = 0
    n_words_changed: int = 0
    n_nonfinite: int = 0
    n_calls: int = 0

    def add(self, other: SiteStats) -> None:
        """Add ``other``'s counts to these."""
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class StepFaults:
    """The faults of one step (one attempt of it: a recomputed step has attempt 1, ...).

    Attributes:
        step: the training step; attempt: 0, then 1, 2 ... for recomputations.
        active: whether the schedule struck at this step (for this attempt).
        sites: site key (``repr`` of the site) -> :class:`SiteStats`.
    """

    step: int
    attempt: int
    active: bool
    sites: dict[str, SiteStats] = field(default_factory=dict)

    @property
    def totals(self) -> SiteStats:
        """The counts summed over sites."""
        out = SiteStats()
        for s in self.sites.values():
            out.add(s)
        return out

    @property
    def n_faults(self) -> int:
        """Fault sites that reached the tensors, over all sites."""
        return self.totals.n_faults

    def as_row(self) -> dict[str, int | bool]:
        """A flat dict (``step``, ``attempt``, ``active``, then the totals) for a step table."""
        return {"step": self.step, "attempt": self.attempt, "active": self.active,
                **asdict(self.totals)}
