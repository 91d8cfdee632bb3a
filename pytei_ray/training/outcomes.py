"""Outcome classes of a faulty training run against its golden trajectory.

A golden trajectory must be reproducible bit for bit (:class:`GoldenTrajectory` is built from
two runs and refuses otherwise): a comparison with a golden run that itself wanders would
classify noise. Classes, checked in this order (the first that holds):

``immediate_nonfinite``
    a non-finite loss, gradient norm or parameter at the first faulty step or within
    ``immediate_steps`` steps after it.
``divergence``
    a later non-finite value, or a final metric above ``diverge`` times golden's.
``silent_degradation``
    finite, and the final metric worse than golden's by more than ``final_tol`` (relative).
``spike_and_recover``
    the final metric within ``final_tol``, but some step's loss after the fault exceeded
    golden's at that step by more than ``spike`` (relative).
``masked``
    everything else: the final metric within ``final_tol`` and no spike (``identical`` says
    whether the losses were even bit-identical to golden's).

The final metric is the validation loss when given (``final=``), else the last training loss.
Relative differences use ``max(|golden|, 1e-12)`` as the scale.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["OUTCOMES", "GoldenTrajectory", "NotReproducibleError", "Outcome", "Thresholds",
           "classify"]

OUTCOMES = ("masked", "spike_and_recover", "silent_degradation", "divergence",
            "immediate_nonfinite")


@dataclass(frozen=True)
class Thresholds:
    """The documented thresholds of :func:`classify` (defaults in brackets).

    Attributes:
        spike: a step's loss above golden's by more than this fraction is a spike [0.5].
        final_tol: the final metric within this fraction of golden's counts as recovered [0.01].
        diverge: a final metric above this multiple of golden's is divergence [10.0].
        immediate_steps: a non-finite value within this many steps after the first faulty
            step is immediate [1].
    """

    spike: float = 0.5
    final_tol: float = 0.01
    diverge: float = 10.0
    immediate_steps: int = 1

    def __post_init__(self) -> None:
        for name in ("spike", "final_tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise ValueError(f"Expected threshold `{name}` to be a finite float >= 0, "
                                 f"but got {v!r}.")
        if not (isinstance(self.diverge, (int, float)) and self.diverge > 1):
            raise ValueError(f"Expected threshold `diverge` to be > 1, got {self.diverge!r}.")
        if isinstance(self.immediate_steps, bool) or not isinstance(self.immediate_steps, int) \
                or self.immediate_steps < 0:
            raise ValueError("Expected threshold `immediate_steps` to be an int >= 0, got "
                             f"{self.immediate_steps!r}.")


class NotReproducibleError(ValueError):
    """The golden run is not bit-for-bit reproducible, so no trial can be classified."""


def _bits(v: Any) -> Any:
    if isinstance(v, float):
        return struct.pack("<d", v)  # bit-exact, NaN payloads included
    return v


def _rows(trajectory: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for r in trajectory:
        if isinstance(r, dict):
            out.append(dict(r))
        elif hasattr(r, "__dataclass_fields__"):
            out.append({f.name: getattr(r, f.name) for f in fields(r)})
        elif isinstance(r, (int, float)):
            out.append({"loss": float(r)})
        else:
            raise TypeError(f"Expected step records, dicts or losses, but got {r!r}.")
    return out


class GoldenTrajectory:
    """A golden trajectory checked to be reproducible: two runs identical bit for bit.

    Args:
        run, rerun: the step records (:class:`~.loop.StepRecord`, dicts, or plain losses) of
            two golden runs of the same (model, seed, data order).
        final: the golden final metric (validation loss); ``final_rerun`` its rerun's value.

    Raises:
        NotReproducibleError: naming the first step and field that differ, and the usual
            causes.
    """

    def __init__(self, run: Sequence[Any], rerun: Sequence[Any], final: float | None = None,
                 final_rerun: float | None = None) -> None:
        a, b = _rows(run), _rows(rerun)
        if len(a) != len(b):
            raise NotReproducibleError(
                f"The golden run is not reproducible: {len(a)} steps, then {len(b)}.")
        for i, (x, y) in enumerate(zip(a, b)):
            for k in sorted(x.keys() | y.keys()):
                if _bits(x.get(k)) != _bits(y.get(k)):
                    raise NotReproducibleError(
                        "The golden run is not bit-for-bit reproducible, so trials cannot be "
                        "classified against it.\n"
                        f"  first difference: step {x.get('step', i)}, {k}: {x.get(k)!r} then "
                        f"{y.get(k)!r}\n"
                        "Seed every generator (torch.manual_seed in the model factory and the "
                        "data), fix the data order, and use deterministic kernels "
                        "(torch.use_deterministic_algorithms(True); one thread on CPU if needed).")
        if _bits(final) != _bits(final_rerun):
            raise NotReproducibleError(
                f"The golden final metric is not reproducible: {final!r} then {final_rerun!r}.")
        self.rows = a
        self.final = final

    @property
    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.rows]


@dataclass(frozen=True)
class Outcome:
    """The class of one trial, with the figures that decided it."""

    name: str
    reason: str
    final: float
    golden_final: float
    max_spike: float
    first_nonfinite: int | None
    identical: bool


def _nonfinite(row: dict[str, Any]) -> bool:
    for k in ("loss", "grad_norm"):
        v = row.get(k)
        if v is not None and not math.isfinite(float(v)):
            return True
    return bool(row.get("nonfinite_params", 0))


def _rel(value: float, ref: float) -> float:
    return (value - ref) / max(abs(ref), 1e-12)


def classify(trajectory: Sequence[Any], golden: GoldenTrajectory, fault_step: int, *,
             final: float | None = None, thresholds: Thresholds = Thresholds()) -> Outcome:
    """The outcome class of a faulty run (see the module docstring for the rules).

    Args:
        trajectory: the trial's step records (or dicts, or losses), step for step with golden's.
        golden: the checked golden trajectory (a :class:`GoldenTrajectory`, nothing else).
        fault_step: the index (into the trajectory) of the first step with faults.
        final: the trial's final metric (validation loss); needs ``golden.final``.

    Example:
        >>> golden = GoldenTrajectory([3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.5])
        >>> classify([3.0, 2.0, 4.0, 0.5], golden, fault_step=2).name
        'spike_and_recover'
        >>> classify([3.0, 2.0, float("nan"), float("nan")], golden, fault_step=2).name
        'immediate_nonfinite'
    """
    if not isinstance(golden, GoldenTrajectory):
        raise TypeError("Expected `golden` to be a GoldenTrajectory (two golden runs checked to "
                        f"be identical), but got {type(golden).__name__}.")
    rows = _rows(trajectory)
    if len(rows) != len(golden.rows):
        raise ValueError(f"Expected a trajectory of {len(golden.rows)} steps (golden's), but "
                         f"got {len(rows)}.")
    if not 0 <= fault_step < len(rows):
        raise ValueError(f"Expected `fault_step` in [0, {len(rows)}), but got {fault_step}.")
    if (final is None) != (golden.final is None):
        raise ValueError("Give the final metric for both the trial (`final=`) and the golden "
                         "run (GoldenTrajectory(final=...)), or for neither.")
    t = thresholds
    g = golden.losses
    losses = [float(r["loss"]) for r in rows]
    identical = all(_bits(x) == _bits(y) for x, y in zip(losses, g))
    fin = losses[-1] if final is None else float(final)
    gfin = g[-1] if golden.final is None else float(golden.final)
    first_bad = next((i for i in range(fault_step, len(rows)) if _nonfinite(rows[i])), None)
    spikes = [_rel(x, y) for x, y in zip(losses[fault_step:], g[fault_step:])
              if math.isfinite(x)]
    max_spike = max(spikes, default=0.0)

    def out(name: str, reason: str) -> Outcome:
        return Outcome(name, reason, fin, gfin, max_spike, first_bad, identical)

    if first_bad is not None and first_bad - fault_step <= t.immediate_steps:
        return out("immediate_nonfinite", f"non-finite at step index {first_bad}, "
                   f"{first_bad - fault_step} after the fault (<= {t.immediate_steps})")
    if first_bad is not None or not math.isfinite(fin):
        return out("divergence", f"non-finite at step index {first_bad}")
    if fin > t.diverge * gfin if gfin > 0 else _rel(fin, gfin) > t.diverge:
        return out("divergence", f"final {fin:.6g} > {t.diverge:g} x golden {gfin:.6g}")
    if _rel(fin, gfin) > t.final_tol:
        return out("silent_degradation", f"final {fin:.6g} worse than golden {gfin:.6g} by "
                   f"{_rel(fin, gfin):.3g} > {t.final_tol:g}")
    if max_spike > t.spike:
        return out("spike_and_recover", f"loss {max_spike:.3g} above golden at a step "
                   f"(> {t.spike:g}); final within {t.final_tol:g}")
    return out("masked", "final within tolerance and no spike" + (
        " (bit-identical losses)" if identical else ""))
