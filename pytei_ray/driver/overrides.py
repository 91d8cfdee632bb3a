"""Launcher flags that replace parts of a job's campaign, and how a results directory keeps them.

``--repetitions N`` and ``--precision`` / ``--max-reps`` / ``--confidence`` become
:attr:`JobRef.overrides`; the manifest records them (``job.repetitions_override``,
``job.precision_override``) so that a later run without the flags resumes the same campaign.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.errors import CampaignSpecError, PyteiRayError

__all__ = ["apply_precision", "apply_repetitions", "precision_override", "repetitions_override"]


def apply_repetitions(job: JobRef, manifest: dict[str, Any] | None, repetitions: int | None,
                 location: str, echo: Callable[[str], None]) -> JobRef:
    """Apply ``--repetitions N``, or the count a previous ``--repetitions`` stored.

    ``--repetitions N`` replaces the campaign's repetitions (its params are unchanged), so
    ``--extend --repetitions 20`` adds repetitions to any job. The manifest records the
    override (``job.repetitions_override``). A later run without the flag uses the recorded
    count when it is larger than the job's own, so a plain rerun resumes (or finds complete)
    the extended campaign instead of being refused for "removing" repetitions; a job file
    edited to a larger count wins (an extension, needing ``--extend``). An explicit smaller
    ``--repetitions`` is a change and is refused like any other.
    """
    own = job.base_campaign().repetitions
    stored = ((manifest or {}).get("job") or {}).get("repetitions_override")
    if repetitions is not None:
        if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
            raise PyteiRayError(f"Expected argument `repetitions` to be an integer >= 1, but "
                                f"got {repetitions!r}.")
        effective = repetitions
    elif isinstance(stored, int) and stored > own:
        effective = stored
        echo(f"note: using {stored} repetitions as recorded in {location} (it was extended with "
             f"`repetitions={stored}`; the job says {own}). Pass `repetitions=N` to choose.")
    else:
        effective = own
    others = {k: v for k, v in job.overrides.items() if k != "repetitions"}
    return job.replace(overrides={**others, **({"repetitions": effective} if effective != own
                                               else {})})


def apply_precision(job: JobRef, manifest: dict[str, Any] | None, precision: Any,
              max_reps: int | None, confidence: float | None, location: str,
              echo: Callable[[str], None], growth: float | None = None) -> JobRef:
    """Apply ``--precision`` / ``--max-reps`` / ``--confidence`` / ``--growth``, or a recorded
    precision.

    ``--precision`` replaces the campaign's target (any job can be made adaptive), keeping the
    job's confidence and look factor when it has a target (``--max-reps`` defaults to 160: a
    new half-width needs its own budget); ``--max-reps``, ``--confidence`` and ``--growth``
    change the target in use (the job's, or the flag's).
    The manifest records the override (``job.precision_override``) and a later run without the
    flags uses it, so a plain rerun resumes the same adaptive campaign.
    """
    stored = ((manifest or {}).get("job") or {}).get("precision_override")
    tweaks = {k: v for k, v in (("max_reps", max_reps), ("confidence", confidence),
                                 ("growth", growth)) if v is not None}
    if precision is None and not tweaks and not stored:
        return job
    from pytei_ray.stats import Precision  # lazy: scipy only for adaptive campaigns

    base = job.replace(overrides={k: v for k, v in job.overrides.items() if k != "precision"})
    own = base.campaign().precision
    if isinstance(precision, str):  # the text names what; how is the job's (or the default)
        how = {k: getattr(own, k) for k in ("confidence", "growth")} if own else {}
        target = Precision.parse(precision, **how)
        defaults = {f.name: f.default for f in dataclasses.fields(Precision)}
        kept = {k: v for k, v in how.items() if k not in tweaks and v != defaults[k]}
        if kept:
            echo("note: --precision keeps the job's " + " and ".join(
                f"{k} {v:g}" for k, v in kept.items()) + "; pass "
                + " / ".join(f"--{k} X" for k in kept) + " to choose another.")
    elif precision is not None:
        target = precision
    elif tweaks:
        target = own or (Precision.from_spec(stored) if stored else None)
        if target is None:
            raise CampaignSpecError(
                "Expected `max_reps=N` / `confidence=C` / `growth=G` together with a precision "
                "target, but "
                "the campaign has none.\nAdd one, e.g. `precision='auc=0.005'` (the half-width of "
                "the mean of metric auc), or set Campaign(precision=Precision(...)) in the job.")
    else:
        target = Precision.from_spec(stored)
        if target != own:
            echo(f"note: using the precision target recorded in {location} "
                 f"({target.describe()}); pass `precision=SPEC` to choose another.")
    if tweaks:
        try:
            target = dataclasses.replace(target, **tweaks)
        except CampaignSpecError as exc:  # e.g. --growth 1: name the flag, before any work
            flags = ", ".join(f"`{k}=...`" for k in tweaks)
            raise CampaignSpecError(f"{exc}\nFix the value of {flags}.") from None
    if target == own:
        return job
    job = base.replace(overrides={**base.overrides, "precision": target})
    job.campaign()  # an invalid target raises CampaignSpecError here, before any work
    return job


def repetitions_override(job: JobRef) -> int | None:
    value = job.overrides.get("repetitions")
    return int(value) if value is not None else None


def precision_override(job: JobRef) -> dict[str, Any] | None:
    value = job.overrides.get("precision")
    return value.to_spec() if value is not None else None
