"""The per-trial runner shared by every executor: replicas, golden runs, trials -> rows.

A :class:`TrialWorker` builds each model (and loads its data) once, keeps the replica, and runs
chunks of trials on it: inject in place, evaluate, restore. Before each chunk it checks that the
replica is bit-identical to the pristine model (``state_checksum``) and rebuilds it if not.
A trial whose faults change no word (none sampled, all masked, every write a no-op) is the
golden run: it gets the golden metrics without an evaluation (``evaluated=False``), provided
``evaluate`` proved deterministic on this worker (two golden runs, bit for bit). With a split
``evaluate``, a trial whose faults all lie in embedding rows re-scores only the samples that
look them up (``n_rescored``; :mod:`.rescoring`); a trial scored in full replays the golden
outputs of the parts its faults leave alone (:mod:`.replay`).
The in-process executor calls it directly; the Ray executor wraps one in each actor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.campaign.spec import Campaign, is_activation_target, is_training_target
from pytei_ray.campaign.trials import Trial
from pytei_ray.columns import golden_column, same_metrics
from pytei_ray.errors import TrialSetupError
from pytei_ray.injection.rescoring import subsample_ids
from pytei_ray.mitigations.base import fresh_instances

from .chunk import ChunkResult, _check_metrics, _error_text, _version, to_device
from .context import BuildContext, call_hook, context_for
from .replay import ReplicaReplay
from .rescoring import ReplicaRescoring

__all__ = ["TrialWorker", "ChunkResult"]

class TrialWorker:
    """Runs chunks of trials of one campaign, keeping a replica per model.

    Args:
        campaign: the campaign (built in this process, e.g. via ``JobRef.campaign()``).
        device: where replicas live (``"cpu"``, ``"cuda"``, ``"cuda:1"``); default: CUDA if
            available, else CPU.
        worker_id: name recorded in the ``worker`` column; default ``host:pid``.
        context: handed to model factories and the data hook that declare a ``ctx``
            parameter; default: the context bound to ``campaign`` by the
            :class:`~pytei_ray.campaign.JobRef` that built it (see :meth:`for_job`), else one
            without a results location.

    Example:
        >>> import torch
        >>> from pytei_ray.campaign import Campaign, expand
        >>> c = Campaign(name="doc", models={"lin": lambda: torch.nn.Linear(8, 1)},
        ...              data=lambda name: torch.ones(4, 8),
        ...              evaluate=lambda m, x: {"out": float(m(x).sum())},
        ...              bers=[0.0], repetitions=1)
        >>> result = TrialWorker(c, device="cpu").run_chunk(expand(c))
        >>> row = result.rows[0]
        >>> row["status"], row["n_faults"], row["evaluated"], row["out"] == row["golden_out"]
        ('ok', 0, False, True)
    """

    def __init__(self, campaign: Campaign, *, device: str | torch.device | None = None,
                 worker_id: str | None = None, context: BuildContext | None = None) -> None:
        self.campaign = campaign
        self.context = context or context_for(campaign) or BuildContext()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._version = _version()
        self._models: dict[str, torch.nn.Module] = {}  # model name -> replica
        self._pristine: dict[str, str] = {}  # model name -> state_checksum right after building
        self._sites: dict[tuple[str, str], list[Any]] = {}  # (model, target) -> resolved Sites
        self._data: dict[str, Any] = {}  # model name -> evaluation data (loaded once)
        self._mits: dict[tuple[str, str], list[Any]] = {}  # (model, mitigation) -> instances
        self._golden: dict[tuple[str, str], dict[str, float]] = {}  # (model, mitigation) -> metrics
        self._new_golden: list[dict[str, Any]] = []  # golden rows not yet returned
        self._nondeterministic: set[str] = set()  # models whose golden evaluate varied
        self._rescoring = ReplicaRescoring(
            campaign.split, self.worker_id, rescore=campaign.rescores,
            subsample=campaign.subsample) \
            if campaign.rescores or campaign.subsample is not None else None  # index maps,
        # re-scorers and subsample scorers of the replicas
        # golden calls of the replicas' parts, replayed in a full evaluation for the parts a
        # trial's faults leave alone (weight targets only: the others never replay them)
        self._replay = ReplicaReplay() if any(
            not is_activation_target(s) and not is_training_target(s)
            for s in campaign.targets.values()) else None
        self._states: dict[str, Any] = {}  # model name -> trainable replica (training targets)
        self._training: Any = None  # TrainingTrials, made on the first training target

    @classmethod
    def for_job(cls, job: JobRef, *, device: str | torch.device | None = None,
                worker_id: str | None = None) -> TrialWorker:
        """A worker for the campaign of ``job``, its hooks given ``job``'s results location."""
        return cls(job.campaign(), device=device, worker_id=worker_id,
                   context=BuildContext(job.results_uri))

    # ---- setup -----------------------------------------------------------------------------
    def _setup_error(self, what: str, exc: BaseException, model: str) -> TrialSetupError:
        return TrialSetupError(
            f"{what} raised {type(exc).__name__}: {exc}\n"
            f"(campaign {self.campaign.name!r}, worker {self.worker_id}). No trial of it can run;"
            f" fix the job file and run the same command again: stored rows are kept.\n"
            + _error_text(exc), model
        )

    def _build(self, name: str) -> torch.nn.Module:
        from pytei_ray import state_checksum

        try:
            model = call_hook(self.campaign.models[name], self.context)
        except Exception as exc:
            raise self._setup_error(f"The factory of model {name!r}", exc, name) from exc
        if self._training_runner() is not None:
            from .training import is_trainable

            if is_trainable(model):  # model + optimizer at a checkpoint (training targets)
                state = model.to(self.device) if callable(getattr(model, "to", None)) else model
                self._states[name] = state
                model = state.model
        if not isinstance(model, torch.nn.Module):
            raise TrialSetupError(f"Expected the factory of model {name!r} to return an "
                                  f"nn.Module, but got {type(model).__name__}.", name)
        model = model.to(self.device).eval()
        for key in [k for k in self._sites if k[0] == name]:  # sites of the replaced replica
            del self._sites[key]
        self._check_targets(name, model)
        self._models[name] = model
        before, self._pristine[name] = self._pristine.get(name), state_checksum(model)
        if self._replay is not None and before is not None:  # a rebuilt replica
            self._replay.rebuilt(name, model, same_state=before == self._pristine[name])
        return model

    def _check_targets(self, name: str, model: torch.nn.Module) -> None:
        """Resolve every target set against a new model, so that a misspelled name stops the
        run before any trial (instead of failing every trial of that target set)."""
        from pytei_ray.injection import resolve_targets

        for target, spec in self.campaign.targets.items():
            if is_training_target(spec):
                self._training_runner().check(name, self._states.get(name), target, spec)
                continue
            try:
                if is_activation_target(spec):
                    spec.resolve(model)  # names checked; hooks go in per trial
                else:
                    self._sites[(name, target)] = resolve_targets(model, spec)
            except (ValueError, TypeError) as exc:
                raise TrialSetupError(
                    f"Target set {target!r} does not fit model {name!r}: {exc}\n"
                    "Fix `targets` in the job file and run the same command again.", name
                ) from exc
            if not is_activation_target(spec):
                self._check_error_models(name, target)

    def _check_error_models(self, name: str, target: str) -> None:
        """Every error model that makes points with (model, target) fits the dtypes of its
        words (e.g. a bit index inside the word), checked before any trial."""
        from pytei_ray.faults.dtypes import layout_of

        dtypes = {site.info.dtype for site in self._sites[(name, target)]}
        for e, factory in self.campaign.error_models.items():
            if not self.campaign.pairs(name, target, e):
                continue
            try:
                error = factory(self.campaign.bers[0])
                for dtype in dtypes:
                    check = getattr(error, "check_dtype", None)
                    if check is not None:
                        check(layout_of(dtype))
            except (ValueError, TypeError) as exc:
                raise TrialSetupError(
                    f"Error model {e!r} does not fit target set {target!r} of model {name!r}: "
                    f"{exc}\nFix `error_models` in the job file (or pair its levels with the "
                    "models they fit: Level(..., format=...)) and run the same command again.",
                    name) from exc

    def _training_runner(self) -> Any:
        """The :class:`~.training.TrainingTrials` of a campaign with training targets, else
        None (imported only then)."""
        if self._training is None and any(
                is_training_target(s) for s in self.campaign.targets.values()):
            from .training import TrainingTrials

            self._training = TrainingTrials(self)
        return self._training

    def _model(self, name: str) -> torch.nn.Module:
        model = self._models.get(name)
        if model is None:
            model = self._build(name)
        if name not in self._data:
            try:
                data = call_hook(self.campaign.data, self.context, name)
                self._data[name] = to_device(data, self.device)
            except Exception as exc:
                raise self._setup_error(f"Loading the data of model {name!r}", exc,
                                        name) from exc
        return model

    def prepare(self, model_names: Sequence[str]) -> dict[str, float]:
        """Build each named model and load its data now (before any trial), keeping them.

        Factories with side effects (training, caching a checkpoint through ``ctx``) do them
        here, once, instead of inside the first chunk. Models already built are skipped.

        Returns:
            model name -> seconds spent building it and loading its data (0.0 if it was built).

        Raises:
            TrialSetupError: a factory or the data hook failed.
        """
        seconds: dict[str, float] = {}
        for name in model_names:
            if name not in self.campaign.models:
                raise KeyError(f"Unknown model {name!r}; the campaign has "
                               f"{list(self.campaign.models)}.")
            t0 = time.perf_counter()
            built = name in self._models and name in self._data
            self._model(name)
            seconds[name] = 0.0 if built else time.perf_counter() - t0
        return seconds

    def checksums(self) -> dict[str, str]:
        """Model name -> ``state_checksum`` of the replica right after its factory built it."""
        return dict(self._pristine)

    def _run_eval(self, fn: Callable[[Any, Any], Any], model: torch.nn.Module, name: str) -> Any:
        with torch.no_grad():
            return fn(model, self._data[name])

    def _mitigations(self, model_name: str, mit_name: str) -> list[Any]:
        key = (model_name, mit_name)
        if key in self._mits:
            return self._mits[key]
        model = self._model(model_name)
        spec = self.campaign.mitigations[mit_name]
        instances = fresh_instances(spec)  # profiled state is per model
        calibrate = self.campaign.calibrate or self.campaign.evaluate
        try:
            for m in instances:
                m.profile(model, lambda mod: self._run_eval(calibrate, mod, model_name))
        except Exception as exc:
            raise self._setup_error(f"Calibrating mitigation {mit_name!r} on {model_name!r}",
                                    exc, model_name) from exc
        self._mits[key] = instances
        self._golden_run(model_name, mit_name, model, instances)
        return instances

    def _golden_run(self, model_name: str, mit_name: str, model: torch.nn.Module,
                    instances: list[Any]) -> None:
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        handles = []
        try:
            handles = [m.attach(model) for m in instances]
            metrics = _check_metrics(self._run_eval(self.campaign.evaluate, model, model_name),
                                     None)
            clash = [m for m in metrics if m in self.campaign.level_columns]
            if clash:
                raise ValueError(f"Expected metric names other than the campaign's attribute "
                                 f"columns {list(self.campaign.level_columns)}, but got {clash}.")
            duration = time.perf_counter() - t0
            if self.campaign.skip_ineffective:  # skipping stands on a deterministic evaluate
                # with weight targets, the second golden run also records the parts' calls
                run = lambda: _check_metrics(  # noqa: E731
                    self._run_eval(self.campaign.evaluate, model, model_name), list(metrics))
                again, frozen = self._replay.record(model_name, model, run) \
                    if self._replay is not None else (run(), None)
                if not same_metrics(metrics, again):
                    self._not_deterministic(model_name, mit_name, metrics, again)
                elif frozen is not None:
                    self._replay.keep(model_name, mit_name, frozen, run, metrics)
        except Exception as exc:
            raise self._setup_error(
                f"The golden (fault-free) evaluation of {model_name!r} with mitigation "
                f"{mit_name!r}", exc, model_name) from exc
        finally:
            for h in reversed(handles):
                h.remove()
        if self._rescoring is not None and self._may_skip(model_name):
            try:  # golden outputs and the self-check, on the pristine replica
                self._rescoring.prepare(model_name, mit_name, model, self._data[model_name],
                                        instances, metrics)
            except Exception as exc:
                raise self._setup_error(f"Preparing re-scoring of {model_name!r} with "
                                        f"mitigation {mit_name!r}", exc, model_name) from exc
        self._golden[(model_name, mit_name)] = metrics
        self._new_golden.append({
            "campaign": self.campaign.name, "model": model_name, "mitigation": mit_name,
            **metrics, "worker": self.worker_id, "device": str(self.device),
            "started_at": started, "duration_s": duration, "version": self._version,
        })

    def _not_deterministic(self, model_name: str, mit_name: str, first: dict[str, float],
                           second: dict[str, float]) -> None:
        """Record (and warn once per model) that two golden runs of a model differed."""
        if model_name in self._nondeterministic:
            return
        self._nondeterministic.add(model_name)
        warnings.warn(
            f"evaluate() of model {model_name!r} (mitigation {mit_name!r}) is not deterministic "
            f"on {self.worker_id}: two fault-free runs gave different metrics.\n"
            f"  first:  {first}\n  second: {second}\n"
            "Every trial of this model is evaluated (none is skipped as fault-free), and the "
            "model is listed under 'nondeterministic_evaluate' in the results manifest. Seed or "
            "remove the randomness in evaluate() to let fault-free trials be skipped.",
            stacklevel=2)

    def _may_skip(self, model_name: str) -> bool:
        """Trials of this model whose faults change no word may take the golden metrics."""
        return self.campaign.skip_ineffective and model_name not in self._nondeterministic

    def ensure_pristine(self, model_name: str) -> bool:
        """Rebuild the replica if its state differs from the pristine checksum.

        Returns:
            True if the replica had to be rebuilt.
        """
        from pytei_ray import state_checksum

        model = self._models.get(model_name)
        if model is None or state_checksum(model) == self._pristine[model_name]:
            return False
        warnings.warn(f"Replica of model {model_name!r} on {self.worker_id} differs from the "
                      "pristine model; rebuilding it. If this repeats, evaluate() or calibrate() "
                      "modifies the model.", stacklevel=2)
        self._build(model_name)
        return True

    # ---- trials ----------------------------------------------------------------------------
    def run_chunk(self, trials: Sequence[Trial]) -> ChunkResult:
        """Run ``trials`` (any models) and return one row per trial plus new golden rows.

        Raises:
            TrialSetupError: a model factory, data loader, calibration or golden run failed.
        """
        rebuilt = [m for m in dict.fromkeys(t.model for t in trials) if self.ensure_pristine(m)]
        rows: list[dict[str, Any]] = []
        sampled: tuple | None = None  # (point, FaultMap, ...): shared across mitigations
        for t in trials:
            row, sampled = self._run_trial(t, sampled)
            rows.append(row)
        golden, self._new_golden = self._new_golden, []
        return ChunkResult(rows, golden, self.worker_id, rebuilt, sorted(self._nondeterministic),
                           self.checksums(), self._rescoring.off if self._rescoring else [])

    def _run_trial(self, t: Trial, sampled: tuple | None) -> tuple[dict[str, Any], tuple | None]:
        """Run one trial; ``sampled`` is the last (point, FaultMap, p_no_fault, sites by name,
        error model, read columns once known), reused when ``t`` has the same point (the
        mitigations of a point share its faults)."""
        if is_activation_target(self.campaign.targets[t.target]):
            return self._run_activation_trial(t), sampled
        if is_training_target(self.campaign.targets[t.target]):
            return self._training_runner().run(t), sampled
        from pytei_ray.faults.faultmap import sample_fault_map
        from pytei_ray.injection.apply import apply_faults

        mits, model, golden, row = self._start_row(t, evaluated=False)
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        metrics: dict[str, float] = {}
        try:
            point = (t.model, t.target, t.error_model, t.ber, t.seed)
            if sampled is None or sampled[0] != point:
                error = self.campaign.error_models[t.error_model](t.ber)
                sites = self._sites[(t.model, t.target)]  # resolved once per replica
                fmap = sample_fault_map([site.info for site in sites], error, t.seed)
                sampled = (point, fmap, error.p_no_fault(fmap.n_targeted),
                           {site.name: site for site in sites}, error, {})
            _, fmap, p_no_fault, by_name, _, _ = sampled
            row.update(n_faults_sampled=fmap.n_faults, n_sites=fmap.n_targeted,
                       p_no_fault=p_no_fault)
            row.update(self._read_columns(t, sampled))
            handle = apply_faults(fmap, model, mits, by_name)
            with handle as faults:  # the applied faults, after the mitigations filtered them
                row["n_faults"], row["n_words"] = faults.n_faults, faults.n_words
                row["n_nonfinite"] = faults.n_nonfinite
                skip, changed = self._may_skip(t.model), handle.n_words_changed
                plan = self._rescoring.plan(t.model, t.mitigation, faults.map) \
                    if skip and changed and self._rescoring is not None else None
                if skip and (not changed or (plan is not None and not len(plan[1]))):
                    out: Any = golden  # no output changes: the golden run, bit for bit
                elif plan is not None:  # every fault in a table row: those samples only
                    row.update(evaluated=True, n_rescored=len(plan[1]))
                    with torch.no_grad():
                        out = plan[0].metrics(model, plan[1])
                elif (sampler := self._rescoring.sampler(t.model, t.mitigation)
                      if skip and self._rescoring is not None else None) is not None:
                    ids = subsample_ids(t.seed, sampler.n_samples, self.campaign.subsample)
                    row.update(evaluated=True, n_scored=len(ids))  # a random subset's estimate
                    out = sampler.subset_metrics(model, ids)
                else:
                    row["evaluated"] = True
                    replay = self._replay.context(t.model, t.mitigation, model, faults.map,
                                                  by_name) \
                        if self._replay is not None and skip else contextlib.nullcontext()
                    with replay:
                        out = self._run_eval(self.campaign.evaluate, model, t.model)
            metrics = _check_metrics(out, list(golden))
            row.update(status="ok", error=None)
        except Exception as exc:
            row.update(status="failed", error=_error_text(exc))
            if self.ensure_pristine(t.model):
                sampled = None  # its sites belong to the replica just replaced
        self._finish_row(row, metrics, golden, started, t0)
        return row, sampled

    def _read_columns(self, t: Trial, sampled: tuple) -> dict[str, Any]:
        """``n_words_read`` / ``p_none_read`` of a weight trial: its sampled faulted words that
        the evaluation reads, and the exact chance that sampling draws none (the trial is then
        the golden run for every mitigation: docs/report.md). Known only where re-scoring of
        (model, mitigation) passed its self-check on this worker; else both null. Computed
        once per point (the model's index map is the same for every mitigation) and kept in
        ``sampled``."""
        imap = self._rescoring.reads(t.model, t.mitigation) \
            if self._rescoring is not None and self._may_skip(t.model) else None
        _, fmap, _, by_name, error, memo = sampled
        if imap is None or fmap.n_targeted is None:
            return {}
        if not memo:
            from pytei_ray.faults.dtypes import layout_of

            unread = sum(imap.unread_words(name, site.info.shape)
                         * error.sites_per_word(layout_of(site.info.dtype))
                         for name, site in by_name.items())
            memo.update(n_words_read=imap.words_read(fmap),
                        p_none_read=error.p_no_fault_among(fmap.n_targeted - unread,
                                                           fmap.n_targeted))
        return dict(memo)

    def _start_row(self, t: Trial, evaluated: bool) -> tuple[list[Any], torch.nn.Module,
                                                              dict[str, float], dict[str, Any]]:
        """``(mitigations, replica, golden metrics, row)`` of a trial about to run: the row holds
        its factors and nulls for the fault statistics it fills in."""
        mits = self._mitigations(t.model, t.mitigation)
        row: dict[str, Any] = {"campaign": self.campaign.name, **t.as_dict(),
                               "n_faults": None, "n_words": None, "n_nonfinite": None,
                               "n_faults_sampled": None, "n_sites": None, "p_no_fault": None,
                               "evaluated": evaluated, "n_rescored": None, "n_scored": None,
                               "n_words_read": None, "p_none_read": None}
        return mits, self._models[t.model], self._golden[(t.model, t.mitigation)], row

    def _finish_row(self, row: dict[str, Any], metrics: dict[str, float],
                    golden: dict[str, float], started: datetime, t0: float) -> None:
        """Metrics (null for a failed trial), golden metrics and bookkeeping columns."""
        row.update({m: metrics.get(m) for m in golden})
        row.update({golden_column(m): v for m, v in golden.items()})
        row.update(worker=self.worker_id, device=str(self.device), started_at=started,
                   duration_s=time.perf_counter() - t0, version=self._version)

    def _run_activation_trial(self, t: Trial) -> dict[str, Any]:
        """Run a trial of an activation target set: the fault hooks (seeded with the trial seed,
        so the mitigations of a point see the same faults) are installed while ``evaluate``
        runs. ``n_faults``/``n_faults_sampled``/``n_words`` count the activation faults of that
        evaluation (after / before mitigations such as SBP); ``n_sites``, ``p_no_fault`` and
        ``n_nonfinite`` are null (the sites depend on the calls evaluate makes); ``evaluated``
        is True (docs/activations.md)."""
        mits, model, golden, row = self._start_row(t, evaluated=True)
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        metrics: dict[str, float] = {}
        try:
            error = self.campaign.error_models[t.error_model](t.ber)
            injector = self.campaign.targets[t.target].injector(error, t.seed)
            with injector.inject(model, mitigations=mits) as faults:
                out = self._run_eval(self.campaign.evaluate, model, t.model)
            row.update(n_faults=faults.n_faults, n_faults_sampled=faults.n_faults_sampled,
                       n_words=faults.n_words)
            metrics = _check_metrics(out, list(golden))
            row.update(status="ok", error=None)
        except Exception as exc:
            row.update(status="failed", error=_error_text(exc))
            self.ensure_pristine(t.model)
        self._finish_row(row, metrics, golden, started, t0)
        return row
