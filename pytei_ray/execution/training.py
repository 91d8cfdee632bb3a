"""Training trials: a short window of training with faults, scored and classified against golden.

A campaign whose target set is a :class:`~pytei_ray.training.target.Training` runs its trials
here (the :class:`~pytei_ray.execution.worker.TrialWorker` hands them over). The model factory
returns a *trainable* replica instead of a bare module: an object with ``model``,
``optimizer``, ``reset()`` (back to the checkpoint in place, bit for bit: model, optimizer and
so the data position), ``closure(i)`` (forward + backward of step ``i`` of the window) and
``session()`` (where a window runs, e.g. one torch thread);
:meth:`pytei_ray.studies.gpt.GPTStudy.trainer` makes one.

A trial: reset, train ``steps`` steps with the trial's :class:`~pytei_ray.training.TrainingFaults`
(seeded by the trial seed, which leaves the mitigation out: every mitigation of a point sees the
same faults) and its mitigations, evaluate (the campaign's ``evaluate``), reset. It is classified
(:func:`~pytei_ray.training.classify`, on the first metric ``evaluate`` returns) against the
golden trajectory of its (model, mitigation): two fault-free windows on this worker, which must
agree bit for bit, else the run stops before any trial with the first difference
(:class:`~pytei_ray.training.NotReproducibleError`). The row carries the metrics, one 0/1 column
per outcome class (so ``--precision divergence=0.1`` works on a rate), ``skipped_steps`` and
``recomputed_steps`` (what a mitigation cost), and its per-step telemetry under
:data:`STEPS_KEY` (the writer stores it as the step table, docs/gpt.md). The golden row of
(model, mitigation) carries the golden window's telemetry the same way, with trial_id
``golden/<model>/<mitigation>`` (:func:`~pytei_ray.columns.golden_trial_id`; the writer
stores it as the golden step table, next to the golden part).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from pytei_ray.campaign.trials import Trial
from pytei_ray.columns import STEPS_KEY, golden_trial_id
from pytei_ray.errors import TrialSetupError
from pytei_ray.mitigations.base import fresh_instances
from pytei_ray.training import (
    OUTCOMES,
    GoldenTrajectory,
    NotReproducibleError,
    StepRecord,
    classify,
    train_step,
)

from .chunk import _check_metrics, _error_text

__all__ = ["TrainingTrials", "is_trainable", "outcome_metrics"]


def is_trainable(obj: object) -> bool:
    """Whether a model factory returned a trainable replica (see the module docstring)."""
    return isinstance(getattr(obj, "model", None), torch.nn.Module) and all(
        callable(getattr(obj, a, None)) for a in ("reset", "closure", "session")) and \
        hasattr(obj, "optimizer")


def outcome_metrics(name: str) -> dict[str, float]:
    """One 0/1 metric per outcome class (1.0 for ``name``)."""
    return {o: float(o == name) for o in OUTCOMES}


def _cost(records: Sequence[StepRecord]) -> dict[str, float]:
    return {"skipped_steps": float(sum(r.action == "skip" for r in records)),
            "recomputed_steps": float(sum(r.attempts - 1 for r in records))}


class TrainingTrials:
    """Golden trajectories and trials of the training target sets of one worker's campaign."""

    def __init__(self, worker: Any) -> None:  # the TrialWorker (not imported: no cycle)
        self.w = worker
        self._golden: dict[tuple[str, str], tuple[GoldenTrajectory, dict[str, float]]] = {}

    def check(self, name: str, state: Any, target: str, spec: Any) -> None:
        """Bind the target's sites to a new replica once (a site the model or optimizer does
        not have raises here, before any trial), with every error model that pairs with it."""
        if not is_trainable(state):
            raise TrialSetupError(
                f"Target set {target!r} is a Training target, but the factory of model "
                f"{name!r} returned a {type(state).__name__}, not a trainable replica (model, "
                "optimizer, reset(), closure(i), session()). Use e.g. GPTStudy.trainer(fmt) "
                "as the model factory.", name)
        c = self.w.campaign
        for e, factory in c.error_models.items():
            if not c.pairs(name, target, e):
                continue
            try:
                spec.training_faults(state.model, state.optimizer, factory(c.bers[0]), 0).remove()
            except (ValueError, TypeError, KeyError) as exc:
                raise TrialSetupError(
                    f"Target set {target!r} does not fit model {name!r} (error model {e!r}): "
                    f"{exc}\nFix `targets` in the job file and run the same command again.",
                    name) from exc

    def _mitigations(self, mit_name: str) -> list[Any]:
        spec = self.w.campaign.mitigations[mit_name]
        return fresh_instances(spec)  # detectors keep running statistics

    def _window(self, model_name: str, spec: Any, mits: list[Any], faults: Any = None
                ) -> tuple[list[StepRecord], dict[str, float]]:
        """Reset, train the window, evaluate, reset: ``(step records, metrics)``."""
        state = self.w._states[model_name]
        state.reset()
        try:
            with state.session():
                state.model.train()
                records = [train_step(i, state.model, state.optimizer, state.closure(i),
                                      faults=faults, mitigations=mits)
                           for i in range(spec.steps)]
                state.model.eval()
                out = self.w._run_eval(self.w.campaign.evaluate, state.model, model_name)
        finally:
            if faults is not None:
                faults.remove()
            state.reset()
        return records, _check_metrics(out, None)

    def golden(self, model_name: str, target: str, mit_name: str
               ) -> tuple[GoldenTrajectory, dict[str, float]]:
        """The checked golden trajectory of (model, mitigation) and its metrics (computed on
        the first trial that needs it, with the window of ``target``)."""
        spec = self.w.campaign.targets[target]
        key = (model_name, mit_name, spec.steps)
        if key in self._golden:
            return self._golden[key]
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        try:
            run, metrics = self._window(model_name, spec, self._mitigations(mit_name))
            rerun, again = self._window(model_name, spec, self._mitigations(mit_name))
            first = next(iter(metrics))
            golden = GoldenTrajectory(run, rerun, metrics[first], again[first])
        except NotReproducibleError as exc:
            raise TrialSetupError(
                f"The golden training run of model {model_name!r} (mitigation {mit_name!r}, "
                f"{spec.steps} steps) on {self.w.worker_id} is not reproducible, so no trial "
                f"can be classified against it.\n{exc}", model_name) from exc
        except Exception as exc:
            raise self.w._setup_error(f"The golden training run of {model_name!r} with "
                                      f"mitigation {mit_name!r}", exc, model_name) from exc
        metrics = {**metrics, **outcome_metrics("masked"), **_cost(run)}
        self._golden[key] = (golden, metrics)
        c = self.w.campaign
        self.w._new_golden.append({
            "campaign": c.name, "model": model_name, "mitigation": mit_name, **metrics,
            "worker": self.w.worker_id, "device": str(self.w.device), "started_at": started,
            "duration_s": time.perf_counter() - t0, "version": self.w._version,
            STEPS_KEY: [{"trial_id": golden_trial_id(model_name, mit_name), **r.as_row()}
                        for r in run]})
        return golden, metrics

    def run(self, t: Trial) -> dict[str, Any]:
        """Run one training trial; its row holds its step table under :data:`STEPS_KEY`."""
        w = self.w
        w._model(t.model)
        golden, golden_metrics = self.golden(t.model, t.target, t.mitigation)
        spec = w.campaign.targets[t.target]
        state = w._states[t.model]
        row: dict[str, Any] = {"campaign": w.campaign.name, **t.as_dict(),
                               "n_faults": None, "n_words": None, "n_nonfinite": None,
                               "n_faults_sampled": None, "n_sites": None, "p_no_fault": None,
                               "evaluated": True, STEPS_KEY: []}
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        metrics: dict[str, float] = {}
        try:
            error = w.campaign.error_models[t.error_model](t.ber)
            mits = self._mitigations(t.mitigation)
            faults = spec.training_faults(state.model, state.optimizer, error, t.seed, mits)
            records, out = self._window(t.model, spec, mits, faults)
            active = [r.step for r in faults.records if r.active]
            first = next(iter(out))
            outcome = classify(records, golden, min(active, default=0), final=out[first],
                               thresholds=spec.thresholds)
            metrics = _check_metrics({**out, **outcome_metrics(outcome.name), **_cost(records)},
                                     list(golden_metrics))
            row.update(n_faults_sampled=sum(r.n_faults_sampled for r in records),
                       n_faults=sum(r.n_faults for r in records),
                       n_words=sum(r.n_words_changed for r in records),
                       n_nonfinite=sum(r.n_nonfinite_faults for r in records),
                       status="ok", error=None)
            row[STEPS_KEY] = [{"trial_id": t.trial_id, **r.as_row()} for r in records]
        except Exception as exc:
            row.update(status="failed", error=_error_text(exc))
            w.ensure_pristine(t.model)
        w._finish_row(row, metrics, golden_metrics, started, t0)
        return row
