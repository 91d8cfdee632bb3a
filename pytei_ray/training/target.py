"""A campaign target set of training faults: :class:`Training` (sites + schedule + window).

In a campaign, ``targets={"grads-once": Training(ParamGrads(), AtStep(2), steps=8)}`` makes
every trial of that target set a short training run: the worker restores the model and its
optimizer at the checkpoint, trains ``steps`` steps with the faults of
:class:`~.faults.TrainingFaults` (the trial's error model, BER and seed), scores the model and
classifies the run against a golden trajectory. Steps are counted from the start of the window
(step 0 is the first step after the checkpoint). The campaign's error models, BERs, repetitions
and mitigations (:class:`~.mitigations.GradClip`, :class:`~.mitigations.SkipOnSpike`,
:class:`~.mitigations.Rollback`, ``SBP``) are the other factors, as for inference trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pytei_ray.errors import CampaignSpecError
from pytei_ray.faults.models import BitFlip

from .faults import TrainingFaults
from .outcomes import Thresholds
from .schedule import Schedule
from .sites import TrainingSite

__all__ = ["Training", "check_targets", "check_targets_fresh", "is_training_target"]


class Training:
    """Training faults as a campaign target set.

    Args:
        site: one :class:`~.sites.TrainingSite` or a list (``Weights``, ``Outputs``,
            ``ActivationGrads``, ``ParamGrads``, ``OptimizerState``).
        when: the schedule, in steps of the window (``AtStep(2)``, ``Every(0.25)``,
            ``Permanent()``...).
        steps: the window's length (int >= 1): each trial trains this many steps.
        thresholds: the outcome-class thresholds (:class:`~.outcomes.Thresholds`; default
            ``Thresholds()``).

    Raises:
        ValueError: a schedule outside ``range(steps)`` or an empty window (at construction,
            so in the job file, before anything runs).

    Example:
        >>> from pytei_ray.training import AtStep, ParamGrads
        >>> Training(ParamGrads(), AtStep(2), steps=8)
        Training([ParamGrads(None)], AtStep(2), steps=8)
        >>> Training(ParamGrads(), AtStep(9), steps=8)
        Traceback (most recent call last):
        ...
        ValueError: Expected the schedule AtStep(9) of Training(...) inside the window ...
    """

    def __init__(self, site: TrainingSite | Sequence[TrainingSite], when: Schedule, *,
                 steps: int, thresholds: Thresholds | None = None) -> None:
        sites = [site] if isinstance(site, TrainingSite) else list(site)
        if not sites or not all(isinstance(s, TrainingSite) for s in sites):
            raise TypeError("Expected argument `site` of Training(...) to be a training site "
                            "(Weights, Outputs, ActivationGrads, ParamGrads, OptimizerState) "
                            f"or a list of them, but got {site!r}.")
        if not isinstance(when, Schedule):
            raise TypeError("Expected argument `when` of Training(...) to be a schedule "
                            f"(AtStep, Window, Every, Permanent), but got {when!r}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Expected argument `steps` of Training(...) to be an int >= 1 (the "
                             f"window's length), but got {steps!r}.")
        first, end = when.bounds()
        if first >= steps or (end is not None and end > steps):
            raise ValueError(
                f"Expected the schedule {when!r} of Training(...) inside the window of {steps} "
                f"steps [0, {steps}), but it covers [{first}, {end if end is not None else ''})."
                f" Steps count from the checkpoint (0 = the first step of the window): use a "
                f"step below {steps}, or a longer window (steps=...).")
        thresholds = Thresholds() if thresholds is None else thresholds
        if not isinstance(thresholds, Thresholds):
            raise TypeError(f"Expected `thresholds` to be a Thresholds, but got {thresholds!r}.")
        self.sites, self.when, self.steps, self.thresholds = sites, when, steps, thresholds

    def training_faults(self, model: Any, optimizer: Any, error: Any, seed: int,
                        mitigations: Sequence[Any] = ()) -> TrainingFaults:
        """The :class:`~.faults.TrainingFaults` of one trial (raises on a site the model or
        the optimizer does not have)."""
        return TrainingFaults(model, optimizer, site=self.sites, error=error, when=self.when,
                              seed=seed, steps=self.steps, mitigations=mitigations)

    def __repr__(self) -> str:
        extra = "" if self.thresholds == Thresholds() else f", thresholds={self.thresholds!r}"
        return f"Training({self.sites!r}, {self.when!r}, steps={self.steps}{extra})"


def is_training_target(value: object) -> bool:
    """True for a :class:`Training` target set (told apart by its interface)."""
    return callable(getattr(value, "training_faults", None))


def check_targets(targets: Mapping[str, Any], model: Any, optimizer: Any) -> None:
    """Bind every :class:`Training` target set of ``targets`` to ``model`` and ``optimizer``
    (a model of the campaign's architecture, its optimizer with state), so that a site the
    model or the optimizer does not have is refused in the job file, before anything runs.

    Raises:
        ValueError: naming the target set, what does not exist and what does.
    """
    for name, spec in targets.items():
        spec = getattr(spec, "value", spec)  # a Level
        if not is_training_target(spec):
            continue
        try:
            spec.training_faults(model, optimizer, BitFlip(n=1), 0).remove()
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"Target set {name!r} does not fit the model: {exc}\nFix "
                             "`targets` in the job file.") from exc


def check_targets_fresh(targets: Mapping[str, Any], model: Any, optimizer: Any,
                        label: str = "") -> None:
    """:func:`check_targets` on a throwaway ``model`` and its new ``optimizer``: one
    zero-gradient step first, so that the optimizer's state (Adam's moments, SGD's momentum)
    exists to be checked. What a study's ``check_targets`` hook runs in the job file.

    Raises:
        CampaignSpecError: a target set that does not fit, its message prefixed by ``label``.
    """
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    try:
        check_targets(targets, model, optimizer)
    except ValueError as exc:
        raise CampaignSpecError(f"{label}{exc}") from exc
