"""Training mitigations: composable objects that :func:`~.loop.train_step` consults each step.

Protocol (every method optional; the base class does nothing):

* ``begin(step, model, optimizer)``: before the step's faults and forward (e.g. a snapshot);
* ``check(step, loss, grad_norm, model, optimizer) -> "ok" | "skip" | "recompute"``: after
  backward and the step's gradient faults, before ``optimizer.step()`` (may change gradients,
  e.g. clipping); the first non-``"ok"`` answer decides;
* ``restore(model, optimizer)``: undo the step before a recomputation (the one that asked);
* ``accept(step, loss, grad_norm)``: the step was applied (update running statistics).

A fault never depends on the mitigation (faults are a function of seed, step and site), so a
mitigated trial and the unmitigated one with the same seed and data order see the same faults.
Selective bit protection on weights is :class:`pytei_ray.mitigations.SBP`, given to
:class:`~.faults.TrainingFaults` (``mitigations=[SBP()]``): it filters weight faults.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import torch
from torch import nn

__all__ = ["GradClip", "Rollback", "SkipOnSpike", "TrainingMitigation", "standard_mitigations"]


class TrainingMitigation:
    """Base class: changes nothing (the ``"none"`` mitigation)."""

    name = "none"

    def begin(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called at the start of a step, before its faults."""

    def check(self, step: int, loss: float, grad_norm: float, model: nn.Module,
              optimizer: torch.optim.Optimizer) -> str:
        """``"ok"``, ``"skip"`` (no update this step) or ``"recompute"`` (restore, rerun)."""
        return "ok"

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Undo the current step before it is recomputed."""

    def accept(self, step: int, loss: float, grad_norm: float) -> None:
        """The step's update was applied."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GradClip(TrainingMitigation):
    """Gradient-norm clipping (``torch.nn.utils.clip_grad_norm_``) before every update.

    Example:
        >>> GradClip(1.0)
        GradClip(max_norm=1.0)
    """

    name = "clip"

    def __init__(self, max_norm: float = 1.0) -> None:
        if not isinstance(max_norm, (int, float)) or not max_norm > 0 or math.isinf(max_norm):
            raise ValueError(f"Expected argument `max_norm` to be a finite float > 0, but got "
                             f"{max_norm!r}.")
        self.max_norm = float(max_norm)

    def check(self, step, loss, grad_norm, model, optimizer):
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        return "ok"

    def __repr__(self) -> str:
        return f"GradClip(max_norm={self.max_norm!r})"


class _Detector(TrainingMitigation):
    """A jump detector: a step whose loss or gradient norm is non-finite, or above ``factor``
    times the median of the last ``window`` accepted steps (after ``warmup`` of them), trips."""

    def __init__(self, factor: float = 10.0, window: int = 20, warmup: int = 5,
                 on: tuple[str, ...] = ("loss", "grad_norm")) -> None:
        if not isinstance(factor, (int, float)) or not factor > 1:
            raise ValueError(f"Expected argument `factor` to be a float > 1, but got {factor!r}.")
        for name, v in (("window", window), ("warmup", warmup)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Expected argument `{name}` to be an int >= 1, got {v!r}.")
        if warmup > window:
            raise ValueError(f"Expected `warmup` <= `window` ({window}), but got {warmup}.")
        on = (on,) if isinstance(on, str) else tuple(on)
        if not on or any(o not in ("loss", "grad_norm") for o in on):
            raise ValueError(f"Expected `on` to name 'loss' and/or 'grad_norm', got {on!r}.")
        self.factor, self.window, self.warmup, self.on = float(factor), window, warmup, on
        self._history: dict[str, deque[float]] = {o: deque(maxlen=window) for o in on}

    def tripped(self, loss: float, grad_norm: float) -> bool:
        """Whether these values are a jump relative to the running statistics."""
        values = {"loss": loss, "grad_norm": grad_norm}
        for o in self.on:
            v = values[o]
            if not math.isfinite(v):
                return True
            hist = self._history[o]
            if len(hist) >= self.warmup:
                ref = sorted(hist)[len(hist) // 2]
                if abs(v) > self.factor * abs(ref):
                    return True
        return False

    def accept(self, step, loss, grad_norm):
        values = {"loss": loss, "grad_norm": grad_norm}
        for o in self.on:
            if math.isfinite(values[o]):
                self._history[o].append(values[o])

    def _args(self) -> str:
        return (f"factor={self.factor!r}, window={self.window}, warmup={self.warmup}, "
                f"on={self.on!r}")


class SkipOnSpike(_Detector):
    """Skip the update of a step whose loss or gradient norm jumps (a light detector).

    Example:
        >>> SkipOnSpike(factor=5.0)
        SkipOnSpike(factor=5.0, window=20, warmup=5, on=('loss', 'grad_norm'))
    """

    name = "skip"

    def check(self, step, loss, grad_norm, model, optimizer):
        return "skip" if self.tripped(loss, grad_norm) else "ok"

    def __repr__(self) -> str:
        return f"SkipOnSpike({self._args()})"


class Rollback(_Detector):
    """Roll back to an in-memory snapshot taken at the start of the step and recompute it when
    its loss or gradient norm jumps; after ``retries`` recomputations that still trip, skip.

    The snapshot (model and optimizer state, taken before the step's faults) costs one copy of
    both per step. A recomputation meets permanent faults again, transient ones not.

    Example:
        >>> Rollback(retries=1)
        Rollback(factor=10.0, window=20, warmup=5, on=('loss', 'grad_norm'), retries=1)
    """

    name = "rollback"

    def __init__(self, factor: float = 10.0, window: int = 20, warmup: int = 5,
                 on: tuple[str, ...] = ("loss", "grad_norm"), retries: int = 1) -> None:
        super().__init__(factor, window, warmup, on)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise ValueError(f"Expected argument `retries` to be an int >= 1, got {retries!r}.")
        self.retries = retries
        self._snapshot: tuple[dict, dict] | None = None
        self._tries = 0

    def begin(self, step, model, optimizer):
        self._snapshot = (copy.deepcopy(model.state_dict()),
                          copy.deepcopy(optimizer.state_dict()))
        self._tries = 0

    def check(self, step, loss, grad_norm, model, optimizer):
        if not self.tripped(loss, grad_norm):
            return "ok"
        if self._tries < self.retries:
            self._tries += 1
            return "recompute"
        return "skip"

    def restore(self, model: nn.Module, optimizer: Any) -> None:
        if self._snapshot is None:
            raise RuntimeError("Rollback.restore() before begin(): no snapshot to return to.")
        weights, state = self._snapshot
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(weights[k])  # in place: tensor identity and optimizer references stay
        optimizer.load_state_dict(copy.deepcopy(state))

    def __repr__(self) -> str:
        return f"Rollback({self._args()}, retries={self.retries})"


def standard_mitigations(names: Any = None) -> dict[str, Any]:
    """The mitigations the training studies compare, fresh objects, in this order:
    ``none``, ``clip`` (gradient-norm clipping at 1), ``skip`` (no update on a 10x loss or
    gradient-norm jump over a 20-step window), ``rollback`` (restore the snapshot and redo the
    step on such a jump) and ``sbp`` (sign and exponent bits of the weights protected).

    Args:
        names: the keys to keep (in this order), or None for all.

    Raises:
        KeyError: an unknown name (the known ones listed).

    Example:
        >>> list(standard_mitigations(["none", "rollback"]))
        ['none', 'rollback']
    """
    from pytei_ray.mitigations import SBP  # weight faults: filtered by TrainingFaults

    every = {
        "none": None,
        "clip": GradClip(max_norm=1.0),
        "skip": SkipOnSpike(factor=10, window=20, warmup=2),
        "rollback": Rollback(factor=10, window=20, warmup=2),
        "sbp": SBP(),
    }
    if names is None:
        return every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise KeyError(f"Unknown training mitigation(s) {unknown}; expected some of "
                       f"{list(every)}.")
    return {k: v for k, v in every.items() if k in set(names)}
