"""One training step with faults, mitigations and telemetry: :func:`train_step`.

The order inside a step, the same for every trial (so faults and data never depend on the
mitigation): mitigations' ``begin`` (snapshot) -> ``faults.step(step, attempt)`` (weight
faults) -> ``zero_grad`` -> ``closure()`` (forward and backward: activation faults) ->
``faults.before_step()`` (gradient and optimizer-state faults) -> gradient norm -> mitigations'
``check`` (clip; skip; recompute from the snapshot) -> ``optimizer.step()`` -> telemetry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .faults import TrainingFaults
from .stats import SiteStats

__all__ = ["StepRecord", "grad_norm", "train_step"]


@dataclass
class StepRecord:
    """Telemetry of one training step (one row of a step table).

    Attributes:
        step: the training step.
        loss: the loss the closure returned (of the last attempt).
        grad_norm: L2 norm of all parameter gradients after the step's faults, before any
            clipping, computed in float64 (``inf``/``nan`` only when a gradient is not finite).
        update_norm: L2 norm of the change of all parameters made by ``optimizer.step()``
            (0.0 for a skipped step; NaN when not measured).
        max_attention_logit: the model's ``max_attention_logit`` after the forward (a
            transformer that exposes it), else None.
        nonfinite_grads: NaN/Inf entries among the gradients, before the update.
        nonfinite_params: NaN/Inf entries among the parameters, after the update.
        action: ``"ok"`` (applied), ``"skip"`` (no update) or ``"recomputed"`` (applied after
            a rollback and recomputation).
        attempts: how many times the step ran (1 + recomputations).
        n_faults_sampled, n_faults, n_words_changed, n_nonfinite_faults: the step's fault
            statistics over its attempts (see :class:`~.stats.SiteStats`).
    """

    step: int
    loss: float
    grad_norm: float
    update_norm: float
    max_attention_logit: float | None
    nonfinite_grads: int
    nonfinite_params: int
    action: str
    attempts: int
    n_faults_sampled: int = 0
    n_faults: int = 0
    n_words_changed: int = 0
    n_nonfinite_faults: int = 0

    def as_row(self) -> dict[str, Any]:
        """A flat dict (for a step table: pandas reads a list of these directly)."""
        return asdict(self)


def grad_norm(model: nn.Module) -> tuple[float, int]:
    """``(L2 norm of all gradients, NaN/Inf gradient entries)``: one device sync."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0, 0
    # float64: float32 gradients near their largest value (an exponent fault) square past
    # float32's range, which would report a finite gradient's norm as inf
    norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])
    bad = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).sum()
    return float(norms.norm()), int(bad)


def _attention_logit(model: nn.Module) -> float | None:
    v = getattr(model, "max_attention_logit", None)
    if v is None:
        return None
    return float(v.detach().float().max()) if isinstance(v, torch.Tensor) else float(v)


def train_step(step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               closure: Callable[[], torch.Tensor], *, faults: TrainingFaults | None = None,
               mitigations: Sequence[Any] = (), measure_update: bool = True) -> StepRecord:
    """Run training step ``step`` and return its :class:`StepRecord`.

    Args:
        step: the step index (the faults' clock).
        model, optimizer: what is trained.
        closure: runs the forward and backward of this step's batch and returns the loss
            (``loss = f(model(x), y); loss.backward(); return loss``). It is called again for
            a recomputed step, so it must pick its batch by ``step``, not from an iterator.
        faults: the trial's :class:`TrainingFaults` (None: a golden step).
        mitigations: training mitigations (:class:`~.mitigations.GradClip`,
            :class:`~.mitigations.SkipOnSpike`, :class:`~.mitigations.Rollback`); objects
            without the protocol (``SBP``, which belongs to ``TrainingFaults``) are ignored.
        measure_update: measure ``update_norm`` (keeps a copy of the parameters for the step).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> def closure():
        ...     loss = model(torch.ones(1, 2)).pow(2).sum()
        ...     loss.backward()
        ...     return loss
        >>> rec = train_step(0, model, opt, closure)
        >>> rec.action, rec.attempts, rec.update_norm > 0
        ('ok', 1, True)
    """
    mits = [m for m in mitigations if callable(getattr(m, "check", None))]
    for m in mits:
        m.begin(step, model, optimizer)
    attempt, action = 0, "ok"
    stats = SiteStats()
    while True:
        if faults is not None:
            rec = faults.step(step, attempt)
        optimizer.zero_grad(set_to_none=True)
        loss_t = closure()
        if faults is not None:
            faults.before_step()
            stats.add(rec.totals)
        loss = float(loss_t.detach().float())
        norm, bad_grads = grad_norm(model)
        decision, by = "ok", None
        for m in mits:
            decision = m.check(step, loss, norm, model, optimizer)
            if decision != "ok":
                by = m
                break
        if decision == "recompute":
            assert by is not None
            by.restore(model, optimizer)
            attempt += 1
            action = "recomputed"
            continue
        if decision not in ("ok", "skip"):
            raise ValueError(f"{by!r}.check() returned {decision!r}; expected 'ok', 'skip' or "
                             "'recompute'.")
        break
    update = math.nan
    if decision == "skip":
        action, update = "skip", 0.0
    else:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params] if measure_update else None
        optimizer.step()
        if before is not None:
            with torch.no_grad():
                diffs = [torch.linalg.vector_norm(p.detach() - b, dtype=torch.float64)
                         for p, b in zip(params, before)]
                update = float(torch.stack(diffs).norm()) if diffs else 0.0
        for m in mits:
            m.accept(step, loss, norm)
    with torch.no_grad():
        bad_params = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters()
                         if p.dtype.is_floating_point and p.element_size() > 1)
    return StepRecord(step, loss, norm, update, _attention_logit(model), bad_grads, bad_params,
                      action, attempt + 1, stats.n_sampled, stats.n_faults,
                      stats.n_words_changed, stats.n_nonfinite)
