"""Faults on a training step clock: :class:`TrainingFaults`, for a plain PyTorch loop.

Nothing is undone: a weight fault stays in the weights and training continues from it (a
memory fault); an activation, gradient or optimizer-state fault lasts its step (transient) or
recurs at every step of its window (permanent). The faults of a step are a pure function of
``(seed, step, site, shapes)`` — never of the mitigation, the machine or the order of calls of
other modules — so a mitigated and an unmitigated trial see the same faults (paired).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..faults.faultmap import FaultMap, SiteInfo, sample_fault_map
from ..faults.models import ErrorModel, check_error_model
from ..faults.sampling import check_seed, stable_seed
from ..injection.apply import _write_all
from ..injection.handles import AppliedWrites
from ..injection.targets import Site
from .hooks import HookSite
from .schedule import Schedule
from .sites import BoundTensors, TrainingSite
from .stats import SiteStats, StepFaults

__all__ = ["TrainingFaults"]


def _steps_arg(steps: int | range | None) -> range | None:
    if steps is None or isinstance(steps, range):
        if isinstance(steps, range) and (steps.step != 1 or len(steps) == 0):
            raise ValueError(f"Expected `steps` to be a non-empty range with step 1, got {steps}.")
        return steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Expected `steps` (the training window) to be a positive int or a "
                         f"range, but got {steps!r}.")
    return range(steps)


class TrainingFaults:
    """Faults at scheduled training steps in weights, activations, gradients or optimizer state.

    Args:
        model: the model being trained.
        optimizer: its optimizer (needed for :class:`~.sites.OptimizerState` sites).
        site: one site or a list: :class:`~.sites.Weights`, :class:`~.sites.Outputs`,
            :class:`~.sites.ActivationGrads`, :class:`~.sites.ParamGrads`,
            :class:`~.sites.OptimizerState`.
        error: the error model (``BitFlip(ber=1e-5)``, ``StuckAt(n=1, bits="exponent")``, ...);
            a rate applies per site and step over every targeted bit (per call for activation
            sites); ``n=k`` means k faults per site and step (per tensor and call for
            activation sites; per sample position set when permanent).
        when: :class:`~.schedule.AtStep`, :class:`~.schedule.Window`,
            :class:`~.schedule.Every`, :class:`~.schedule.Permanent`, or a ``|`` of transient
            ones.
        seed: the seed (int >= 0).
        steps: the training window (an int N for steps 0..N-1, or a range): the schedule must
            lie inside it, and :meth:`step` refuses steps outside it. Optional.
        mitigations: objects with ``filter_faults`` (e.g. ``SBP()``) filter the faults of
            :class:`~.sites.Weights` sites (memory protection); others are ignored here (pass
            the same list to :func:`~.loop.train_step`).

    Call :meth:`step` at the start of every step (weight faults land there), run forward and
    backward (activation faults land in hooks), then :meth:`before_step` after ``backward()``
    and before ``optimizer.step()`` (gradient and optimizer-state faults). Each returns the
    step's :class:`~.stats.StepFaults`. ``remove()`` (or leaving the ``with`` block) takes the
    hooks off; the faults already written stay, as in hardware.

    Example:
        >>> import torch
        >>> from pytei_ray import BitFlip
        >>> from pytei_ray.training import ParamGrads, TrainingFaults, Window
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with TrainingFaults(model, opt, site=ParamGrads("weight"), error=BitFlip(n=2),
        ...                     when=Window(1, 3), seed=0, steps=4) as tf:
        ...     for step in range(4):
        ...         _ = tf.step(step)
        ...         model(torch.ones(3, 4)).sum().backward()
        ...         _ = tf.before_step()
        ...         opt.step(); opt.zero_grad()
        >>> [r.n_faults for r in tf.records]
        [0, 2, 2, 0]
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 site: TrainingSite | Sequence[TrainingSite], error: ErrorModel,
                 when: Schedule, seed: int = 0, steps: int | range | None = None,
                 mitigations: Sequence[Any] = ()) -> None:
        check_error_model(error)
        if not isinstance(when, Schedule):
            raise TypeError("Expected argument `when` to be a schedule: AtStep(s), "
                            f"Window(a, b), Every(p=...), Permanent(...); got {when!r}.")
        seed = check_seed(seed)
        sites = [site] if isinstance(site, TrainingSite) else list(site)
        if not sites or not all(isinstance(s, TrainingSite) for s in sites):
            raise TypeError("Expected argument `site` to be a training site (Weights, Outputs, "
                            "ActivationGrads, ParamGrads, OptimizerState) or a list, but got "
                            f"{site!r}.")
        keys = [s.key() for s in sites]
        if len(set(keys)) != len(keys):
            raise ValueError(f"The same site is listed twice: {keys}.")
        self.model, self.optimizer, self.error, self.schedule = model, optimizer, error, when
        self.seed = seed
        self.steps = _steps_arg(steps)
        self.sites = sites
        self._filters = [m for m in mitigations if callable(getattr(m, "filter_faults", None))]
        self._check_window()
        bound = [(s, s.bind(model, optimizer)) for s in sites]  # raises on unknown names
        self._tensor_sites: list[BoundTensors] = [b for s, b in bound if not s.hook]
        self._check_optimizer_state()
        self._permanent: dict[str, FaultMap] = {}  # site key -> the permanent faults
        self.records: list[StepFaults] = []  # one per call of step(), in order
        self.current_step: int = -1
        self._attempt = 0
        self.hot = False  # faults strike at the current step (for this attempt)
        self._pending_before_step = False
        self._hooks: list[HookSite] = []
        try:
            for s, modules in bound:
                if s.hook:
                    self._hooks.append(HookSite(self, s, modules))
        except BaseException:
            self.remove()
            raise

    # ---- checks before any step ------------------------------------------------------------
    def _check_window(self) -> None:
        first, end = self.schedule.bounds()
        if self.steps is None:
            return
        lo, hi = self.steps.start, self.steps.stop
        if first < lo or first >= hi or (end is not None and end > hi):
            raise ValueError(
                "The fault schedule reaches outside the training window.\n"
                f"  expected: steps in {self.steps}\n"
                f"  got: {self.schedule!r} (steps {first} to "
                f"{'the end' if end is None else end - 1})\n"
                "Schedule faults at steps the loop runs, or widen `steps`.")

    def _check_optimizer_state(self) -> None:
        state_sites = [s for s in self.sites if s.kind == "optimizer_state"]
        if not state_sites or self.optimizer is None:
            return
        first = self.schedule.bounds()[0]
        start = self.steps.start if self.steps is not None else 0
        if first <= start and not any(self.optimizer.state.values()):
            raise ValueError(
                f"{state_sites[0]!r} strikes at step {first}, the first step of training, when "
                f"{type(self.optimizer).__name__} has no state yet (it creates it in its first "
                f"step()).\nStart optimizer-state faults at step {start + 1} or later.")

    # ---- the clock ---------------------------------------------------------------------------
    def step(self, step: int, attempt: int = 0) -> StepFaults:
        """Start training step ``step`` (``attempt`` > 0: a recomputation of it) and write its
        weight faults. Transient faults strike only at attempt 0 (a recomputed step does not
        meet the same transient event again); permanent ones at every attempt."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Expected `step` to be an int >= 0, but got {step!r}.")
        if self.steps is not None and step not in self.steps:
            raise ValueError(f"Step {step} is outside the training window {self.steps} given "
                             "as `steps`.")
        self._check_before_step_called()
        self.current_step, self._attempt = step, int(attempt)
        active = self.schedule.active(step, self.seed)
        self.hot = active and (self.schedule.permanent or attempt == 0)
        rec = StepFaults(step, int(attempt), self.hot,
                         {s.key(): SiteStats() for s in self.sites})
        self.records.append(rec)
        for h in self._hooks:
            h.new_step()
        if self.hot:
            for b in self._tensor_sites:
                if b.site.kind == "weights":
                    self._apply(b)
            self._pending_before_step = any(b.site.kind != "weights" for b in self._tensor_sites)
        return rec

    def before_step(self) -> StepFaults:
        """Write the step's parameter-gradient and optimizer-state faults (call it after
        ``loss.backward()``, before ``optimizer.step()``)."""
        if not self.records:
            raise RuntimeError("Call TrainingFaults.step(i) at the start of each step first.")
        if self.hot and self._pending_before_step:
            self._pending_before_step = False  # even if a site fails below: said once
            for b in self._tensor_sites:
                if b.site.kind != "weights":
                    self._apply(b)
        return self.records[-1]

    @property
    def current(self) -> StepFaults | None:
        """The record of the current step (None before the first :meth:`step`)."""
        return self.records[-1] if self.records else None

    def _check_before_step_called(self) -> None:
        if self._pending_before_step:
            self._pending_before_step = False
            raise RuntimeError(
                f"Step {self.current_step} had gradient or optimizer-state faults scheduled, but "
                "before_step() was not called: they were never injected.\n"
                "Call tf.before_step() after loss.backward() and before optimizer.step().")

    def _record(self, key: str, stats: SiteStats) -> None:
        self.records[-1].sites[key].add(stats)

    # ---- tensor sites ------------------------------------------------------------------------
    def _apply(self, b: BoundTensors) -> None:
        pairs = b.collect()
        infos = [SiteInfo(n, t.dtype, tuple(t.shape)) for n, t in pairs]
        key = b.site.key()
        if self.schedule.permanent:
            fmap = self._permanent.get(key)
            if fmap is None:
                seed = stable_seed(self.seed, "training-permanent/v1", key)
                fmap = self._permanent[key] = sample_fault_map(infos, self.error, seed)
            self._check_same_shapes(key, fmap, infos)
        else:
            seed = stable_seed(self.seed, "training/v1", key, self.current_step)
            fmap = sample_fault_map(infos, self.error, seed)
        sampled = fmap.n_faults
        if b.site.kind == "weights":
            for m in self._filters:
                fmap = m.filter_faults(fmap)
        tensors = dict(pairs)
        items = []
        for tf in fmap.tensors:
            if tf.n_words:
                t = tensors[tf.name]
                if not t.is_contiguous():
                    raise ValueError(f"Training faults need contiguous tensors; {tf.name!r} is "
                                     "not (call .contiguous() on it when you create it).")
                items.append((Site(tf.name, "parameter", t), tf))
        with torch.no_grad():
            applied = AppliedWrites(_write_all(items))
        self._record(key, SiteStats(n_sampled=sampled, n_faults=fmap.n_faults,
                                    n_words=fmap.n_words,
                                    n_words_changed=applied.n_words_changed,
                                    n_nonfinite=applied.n_nonfinite))

    @staticmethod
    def _check_same_shapes(key: str, fmap: FaultMap, infos: list[SiteInfo]) -> None:
        now = {i.name: (i.dtype, i.shape) for i in infos}
        then = {t.name: (t.dtype, t.shape) for t in fmap.tensors}
        if now != then:
            changed = sorted(n for n in now.keys() | then.keys() if now.get(n) != then.get(n))
            raise ValueError(
                f"Permanent faults of {key} are fixed over its tensors' shapes, which changed: "
                f"{changed[:5]}.\nUse a transient schedule for tensors that change shape.")

    # ---- lifecycle ---------------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook this object installed (idempotent); written faults stay."""
        while self._hooks:
            self._hooks.pop().remove()

    def __enter__(self) -> TrainingFaults:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.remove()
        if exc_type is None:
            self._check_before_step_called()

    def __repr__(self) -> str:
        return (f"TrainingFaults(site={self.sites!r}, error={self.error!r}, "
                f"when={self.schedule!r}, seed={self.seed})")
