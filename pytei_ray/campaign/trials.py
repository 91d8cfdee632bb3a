"""Pure expansion of a :class:`Campaign` into trials with stable ids and fault seeds.

* ``trial_id`` = sha256 of every factor of the trial (levels by name *and* definition) and the
  campaign seed: the same spec gives the same ids in any order, on any machine; a changed
  definition gives a new id, so a stored row can never be mistaken for a different trial.
* ``seed`` = sha256 of (campaign seed, model, target, error model, BER, repetition): the
  mitigation is deliberately left out, so every mitigation of a point sees the same faults.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pytei_ray.columns import FACTORS, POINT_FACTORS
from pytei_ray.faults.sampling import seed_from_digest

from .hashing import stable_sha256
from .spec import Campaign

__all__ = ["POINT_FACTORS", "Point", "Trial", "count_by_factor", "expand", "make_chunks", "points",
           "trial_id", "trial_seed"]

@dataclass(frozen=True)
class Trial:
    """One point of the campaign grid: the faults it gets are a pure function of it.

    Attributes:
        trial_id: 16 hex digits, stable across runs and machines.
        model, target, error_model, mitigation: factor level names.
        ber: bit error rate.
        repetition: 0-based repetition index.
        seed: 63-bit fault seed (shared by the mitigations of one point).
        attrs: ``(column, value)`` of its levels' attributes (``Level``); empty without.
    """

    trial_id: str
    model: str
    target: str
    error_model: str
    ber: float
    repetition: int
    mitigation: str
    seed: int
    attrs: tuple[tuple[str, Any], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The trial's fields as a plain dict (the factor columns of its result row, the
        attribute columns included)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "attrs"}
        out.update(self.attrs)
        return out


def _digest(payload: Any) -> bytes:
    return stable_sha256(payload).digest()


def trial_seed(campaign_seed: int, model: str, target: str, error_model: str, ber: float,
               repetition: int) -> int:
    """63-bit fault seed of a point (independent of the mitigation).

    Example:
        >>> trial_seed(0, "mlp", "all", "bitflip", 1e-3, 0) == trial_seed(0, "mlp", "all",
        ...     "bitflip", 0.001, 0)
        True
    """
    payload = ["seed/v1", campaign_seed, model, target, error_model, repr(float(ber)), repetition]
    return seed_from_digest(_digest(payload), "big")


def trial_id(campaign_seed: int, levels: dict[str, dict[str, Any]], model: str, target: str,
             error_model: str, ber: float, repetition: int, mitigation: str,
             attrs: dict[str, Any] | None = None) -> str:
    """Stable id of a trial: names and definitions of its levels, BER, repetition, seed, and
    its attribute columns when it has any (a changed attribute is a different trial)."""
    payload = [
        "trial/v1", campaign_seed, model,
        [target, levels["targets"][target]],
        [error_model, levels["error_models"][error_model]],
        repr(float(ber)), repetition,
        [mitigation, levels["mitigations"][mitigation]],
    ]
    if attrs:  # only then, so that the ids of campaigns without attributes are unchanged
        payload.append(["attrs", attrs])
    return _digest(payload).hex()[:16]


#: A point ``(model, target, error_model, ber)`` (:data:`~pytei_ray.columns.POINT_FACTORS`):
#: every mitigation of a point sees the same faults, and an adaptive campaign adds repetitions
#: per point (all its mitigations together, to stay paired).
Point = tuple[str, str, str, float]


def points(campaign: Campaign) -> list[Point]:
    """Every point ``(model, target, error_model, ber)`` of ``campaign``, in expansion order."""
    return [(m, t, e, b) for m in campaign.models for t in campaign.targets
            for e in campaign.error_models if campaign.pairs(m, t, e) for b in campaign.bers]


def expand(campaign: Campaign, repetitions: range | None = None,
           only: Iterable[Point] | None = None) -> list[Trial]:
    """Every trial of ``campaign``, ordered by model, target, error model, BER, repetition,
    mitigation (so consecutive trials share a model replica and the faults of a point).

    Args:
        campaign: the campaign.
        repetitions: the repetitions to expand (default ``range(campaign.repetitions)``); an
            adaptive campaign expands one round at a time. Repetition ``r`` of a point always
            gets the same seed and id, whatever the range.
        only: restrict to these points (default: all of them).

    Example:
        >>> import torch
        >>> c = Campaign(name="demo", models={"m": lambda: torch.nn.Linear(2, 2)},
        ...              data=lambda n: None, evaluate=lambda m, d: {}, bers=[0.1], repetitions=2,
        ...              mitigations={"none": None, "none2": None})
        >>> [(t.repetition, t.mitigation) for t in expand(c)]
        [(0, 'none'), (0, 'none2'), (1, 'none'), (1, 'none2')]
        >>> [t.repetition for t in expand(c, range(2, 4))][::2]
        [2, 3]
    """
    levels = campaign.factor_levels()
    reps = range(campaign.repetitions) if repetitions is None else repetitions
    wanted = None if only is None else {(m, t, e, float(b)) for m, t, e, b in only}
    out: list[Trial] = []
    for point in points(campaign):
        if wanted is not None and point not in wanted:
            continue
        model, target, error, ber = point
        for rep in reps:
            seed = trial_seed(campaign.seed, model, target, error, ber, rep)
            for mit in campaign.mitigations:
                attrs = campaign.attributes(model, target, error, mit)
                tid = trial_id(campaign.seed, levels, model, target, error, ber, rep, mit, attrs)
                out.append(Trial(tid, model, target, error, ber, rep, mit, seed,
                                 tuple(attrs.items())))
    return out


def make_chunks(trials: Iterable[Trial], chunk_size: int) -> list[list[Trial]]:
    """Split trials into chunks of at most ``chunk_size``, each holding a single model.

    Trials keep their relative order; models appear in order of first occurrence.
    """
    if chunk_size < 1:
        raise ValueError(f"Expected argument `chunk_size` to be >= 1, but got {chunk_size}.")
    by_model: dict[str, list[Trial]] = {}
    for t in trials:
        by_model.setdefault(t.model, []).append(t)
    chunks: list[list[Trial]] = []
    for group in by_model.values():
        chunks.extend(group[i:i + chunk_size] for i in range(0, len(group), chunk_size))
    return chunks


def count_by_factor(trials: Sequence[Trial]) -> dict[str, dict[str, int]]:
    """Number of trials per level of each factor (what ``--dry-run`` prints)."""
    counts: dict[str, dict[str, int]] = {f: {} for f in FACTORS}
    for t in trials:
        for f in FACTORS:
            key = str(getattr(t, f))
            counts[f][key] = counts[f].get(key, 0) + 1
    return counts
