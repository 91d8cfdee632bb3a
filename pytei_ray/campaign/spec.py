"""The :class:`Campaign` spec: factors and hooks of a fault-injection study, validated once.

A campaign is data. Its factors (models, targets, error models, BERs, repetitions, mitigations)
expand into trials (:mod:`pytei_ray.campaign.trials`); its hooks (model factories, data loader,
evaluation, calibration) run where the trials run. :meth:`Campaign.spec` describes everything that
determines the results as plain JSON, and :func:`compare_specs` says how two specs differ and
whether the new one only *adds* trials (an extension) or changes existing ones.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytei_ray.columns import LEVEL_FACTORS
from pytei_ray.errors import CampaignSpecError

from .hashing import stable_sha256
from .levels import Level, pairs, row_values, split_levels

__all__ = ["Campaign", "describe", "spec_hash"]

SPEC_FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def _default_error_models() -> dict[str, Callable[[float], Any]]:
    from pytei_ray.faults.models import BitFlip  # lazy: keeps `import pytei_ray.campaign` light

    return {"bitflip": BitFlip}


def _fail(arg: str, expected: str, got: object) -> CampaignSpecError:
    return CampaignSpecError(f"Expected argument `{arg}` to be {expected}, but got {got!r}.")


def _check_names(arg: str, value: object, check: Callable[[str, object], None]) -> dict:
    if not isinstance(value, Mapping) or not value:
        raise _fail(arg, "a non-empty dict mapping names to values", value)
    out: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise CampaignSpecError(
                f"Expected the names in argument `{arg}` to be non-empty strings of letters, "
                f"digits and `_.+-`, but got {name!r}."
            )
        check(f"{arg}[{name!r}]", item)
        out[name] = item
    return out


def _check_callable(arg: str, value: object) -> None:
    if not callable(value):
        raise _fail(arg, "callable", value)


def _check_factory(arg: str, value: object) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.nn.Module):
        raise CampaignSpecError(
            f"Expected argument `{arg}` to be a model factory (a function returning a new "
            f"nn.Module, run where the trials run), but got a {type(value).__name__} instance. "
            "Pass the class or a function that builds it, e.g. `lambda: MyNet()`."
        )
    _check_callable(arg, value)


def _check_mitigation(arg: str, value: object) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if item is None and len(items) == 1:
            continue
        if not (hasattr(item, "attach") and hasattr(item, "filter_faults")) \
                and not is_training_mitigation(item):
            raise _fail(arg, "None, a Mitigation (e.g. SBP()), a training mitigation (e.g. "
                        "GradClip()) or a list of them", value)


def is_training_mitigation(value: object) -> bool:
    """True for a training mitigation (``GradClip``, ``SkipOnSpike``, ``Rollback``: it answers
    ``check`` each step), told apart by its interface, so this module needs no torch."""
    return callable(getattr(value, "check", None)) and callable(getattr(value, "begin", None))


def is_training_target(value: object) -> bool:
    """True for a target set of training faults (``pytei_ray.training.Training``)."""
    return callable(getattr(value, "training_faults", None))


def is_activation_target(value: object) -> bool:
    """True for a target set of activations (``pytei_ray.Activations``), told apart from
    weight targets by its interface, so this module needs no torch."""
    return callable(getattr(value, "injector", None)) and callable(getattr(value, "resolve", None))


def _check_target(arg: str, value: object) -> None:
    if value is None or isinstance(value, (str, Path, type)) or is_activation_target(value) \
            or is_training_target(value):
        return
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (str, type)) for v in value
    ):
        return
    raise _fail(arg, "None (all parameters), a name, glob, Path or module type, a list of "
                "names and module types, Activations(...) or Training(...)", value)


def _check_bers(bers: object) -> tuple[float, ...]:
    if isinstance(bers, (str, bytes)) or not isinstance(bers, Iterable):
        raise _fail("bers", "a non-empty list of floats in [0, 1]", bers)
    out: list[float] = []
    for b in bers:
        if isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise _fail("bers", "a non-empty list of floats in [0, 1]", bers)
        b = float(b)
        if math.isnan(b) or not 0.0 <= b <= 1.0:
            raise CampaignSpecError(
                f"Expected every value of argument `bers` to be a float in [0, 1], but got {b}."
            )
        if b in out:
            raise CampaignSpecError(
                f"Expected argument `bers` to hold distinct values, but {b!r} appears twice."
            )
        out.append(b)
    if not out:
        raise _fail("bers", "a non-empty list of floats in [0, 1]", bers)
    return tuple(out)


def _check_int(arg: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _fail(arg, f"an integer >= {minimum}", value)
    return int(value)


def _check_number(arg: str, value: object, minimum: float, strict: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        raise _fail(arg, f"a number {'>' if strict else '>='} {minimum}", value)
    return float(value)


def describe(obj: object) -> Any:
    """A stable, JSON-able description of a factor value (no memory addresses).

    Classes and functions are named by module and qualified name; objects by their ``repr`` with
    any ``at 0x...`` removed; lists element-wise. Used to detect changed factor definitions.

    Example:
        >>> describe(["fc1.weight", Path("t.txt")])
        ['fc1.weight', 't.txt']
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [describe(o) for o in obj]
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return _ADDRESS_RE.sub("", repr(obj))


@dataclass(frozen=True, eq=False)
class Campaign:
    """A fault-injection campaign: factors to cross and hooks to build, load and evaluate.

    Every trial is one point of models x targets x error_models x bers x repetitions x
    mitigations. The faults of a trial depend on (seed, model, target, error model, BER,
    repetition) only, so all mitigations of that point see the same faults (paired comparison).

    Args:
        name: campaign name (letters, digits, ``_.+-``); names the default output directory.
        models: name -> factory ``() -> nn.Module``, called on the worker that runs the trials.
            Any level of ``models``, ``targets``, ``error_models`` or ``mitigations`` may be
            wrapped in :class:`~pytei_ray.campaign.levels.Level` to add typed attribute
            columns to its rows (``Level(factory, format="bf16")``); an attribute two point
            factors declare pairs their levels (see :mod:`pytei_ray.campaign.levels`).
        data: ``(model_name) -> data``, called once per model on each worker.
        evaluate: ``(model, data) -> {metric: float}``; runs under ``torch.no_grad()`` on a model
            in eval mode; it must return the same metric names for every trial of a model.
            A :class:`~pytei_ray.SplitEvaluation` (per-sample ``outputs`` and a ``score`` of
            them) is such an ``evaluate`` that also lets trials whose faults all lie in
            embedding tables re-score only the samples that look a faulted row up
            (``rescore``; docs/campaign.md).
        bers: bit error rates in [0, 1], distinct (0 is a valid fault-free control).
        repetitions: Monte-Carlo repetitions (seeds) per point, >= 1.
        mitigations: name -> ``None`` | Mitigation | list of Mitigations.
            Default ``{"none": None}``.
        targets: name -> target spec for :class:`~pytei_ray.Injector` (``None`` = every
            parameter; a target-file path; a list of parameter names / module types), or
            :class:`~pytei_ray.Activations` (faults in module outputs while ``evaluate`` runs,
            docs/activations.md). Default ``{"all": None}``.
        error_models: name -> factory ``(ber) -> ErrorModel``. Default ``{"bitflip": BitFlip}``.
        seed: campaign seed; the whole campaign is a pure function of it.
        calibrate: ``(model, data) -> None`` running the model on clean data while profiled
            mitigations (e.g. Ranger) record bounds; defaults to ``evaluate``.
        chunk_size: trials sent to a worker at once (executors batch by model).
        num_cpus_per_worker: CPUs each Ray worker reserves.
        num_gpus_per_worker: GPUs (or a fraction) each Ray worker reserves; 0 runs on CPU;
            None (default): one GPU per worker when the cluster has GPUs, else CPU workers.
        precision: a :class:`~pytei_ray.stats.Precision` target: run ``repetitions`` per point
            first, then add repetitions (doubling, or ``precision.growth``, up to
            ``precision.max_reps``) only to the points whose cells are not yet conclusive (an
            adaptive campaign, docs/campaign.md).
            None (default): exactly ``repetitions`` per point.
        skip_ineffective: give a trial whose faults change no weight (none sampled, all
            masked by a mitigation, or every write leaving its word as it was) the golden
            metrics without running ``evaluate`` (its row says ``evaluated=False``). Sound only
            for a deterministic ``evaluate``, which each worker checks (two golden runs, bit
            for bit) before skipping any trial of a model. False evaluates every trial.
        metrics: metric name -> :class:`~pytei_ray.stats.Metric` declaring its range and
            direction (``{"auc": Metric(bounds=(0, 1), higher_is_better=True)}``): a bounded
            metric gets distribution-free intervals, and a value outside its bounds stops the
            run before it is stored. Metrics not declared keep the name heuristics
            (docs/report.md). Recorded in the spec (only when given, so other specs hash as
            before).
        rescore: with a split ``evaluate`` (and ``skip_ineffective``), re-score a trial whose
            faults all lie in embedding tables on the samples that look a faulted row up,
            after a per-worker check that this equals a full evaluation bit for bit (its row
            records ``n_rescored``). False scores every trial in full. Appears in the spec
            only when False.
        stratify_unread: judge a cell (stopping rule and report) on the trials with a fault
            the evaluation reads: a trial whose sampled faults all lie in table rows that no
            evaluation sample looks up is the golden run for every mitigation (re-scoring's
            self-check proves it per worker), with an exactly known chance (``p_none_read``),
            so it joins the fault-free trials in the known golden stratum and costs the
            interval nothing (docs/report.md). False: stratify on fault-free trials only
            (``p_no_fault``). Appears in the spec only when False.
        subsample: score a trial that needs a full evaluation on this many evaluation samples
            instead of all of them, drawn at random without replacement for the trial (a
            function of its seed: the same samples for every mitigation of its point and
            repetition); its row records ``n_scored``. The value is then an unbiased
            estimate of the trial's full metric when each metric is a mean of per-sample values
            or a two-sample rank statistic (AUC-ROC), so cell means and their confidence
            sequences stay valid; per-trial quantities (SDC rate, quantiles) become those of
            the estimates and the report says so (docs/campaign.md). Needs a
            :class:`~pytei_ray.SplitEvaluation` with ``score_subset`` and
            ``skip_ineffective``; each worker checks per (model, mitigation) that a sample's
            output does not depend on its batch, else that pair is scored in full. Re-scored,
            skipped and activation or training trials are unaffected. None (default): every
            evaluation scores all samples. Appears in the spec only when set.

    Example:
        >>> import torch
        >>> c = Campaign(
        ...     name="demo",
        ...     models={"mlp": lambda: torch.nn.Linear(4, 2)},
        ...     data=lambda name: torch.ones(8, 4),
        ...     evaluate=lambda model, x: {"mean": float(model(x).mean())},
        ...     bers=[1e-4, 1e-3], repetitions=3)
        >>> c.n_trials
        6
    """

    name: str
    models: Mapping[str, Callable[[], Any]]
    data: Callable[[str], Any]
    evaluate: Callable[[Any, Any], Mapping[str, float]]
    bers: Iterable[float]
    repetitions: int
    mitigations: Mapping[str, Any] = field(default_factory=lambda: {"none": None})
    targets: Mapping[str, Any] = field(default_factory=lambda: {"all": None})
    error_models: Mapping[str, Callable[[float], Any]] = field(
        default_factory=_default_error_models
    )
    seed: int = 0
    calibrate: Callable[[Any, Any], Any] | None = None
    chunk_size: int = 16
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float | None = None
    precision: Any = None
    skip_ineffective: bool = True
    rescore: bool = True
    metrics: Mapping[str, Any] | None = None
    stratify_unread: bool = True
    subsample: int | None = None
    #: column name -> {"type", factor -> {level -> value}}: the attributes of the ``Level``
    #: values, computed at construction (an init field only so that ``dataclasses.replace``
    #: keeps them; do not pass it)
    level_columns: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        def put(attr: str, value: object) -> None:
            object.__setattr__(self, attr, value)

        wrapped = {f: getattr(self, f) for f in LEVEL_FACTORS
                   if isinstance(getattr(self, f), Mapping)
                   and any(isinstance(v, Level) for v in getattr(self, f).values())}
        if wrapped:  # attributes -> columns; the factors keep the plain values
            plain, columns = split_levels(wrapped)
            for f, levels in plain.items():
                put(f, levels)
            put("level_columns", MappingProxyType(columns))

        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise _fail("name", "a non-empty name of letters, digits and `_.+-`", self.name)
        put("models", MappingProxyType(_check_names("models", self.models, _check_factory)))
        _check_callable("data", self.data)
        _check_callable("evaluate", self.evaluate)
        if self.calibrate is not None:
            _check_callable("calibrate", self.calibrate)
        put("bers", _check_bers(self.bers))
        put("repetitions", _check_int("repetitions", self.repetitions, 1))
        put("mitigations", MappingProxyType(
            _check_names("mitigations", self.mitigations, _check_mitigation)))
        put("targets", MappingProxyType(_check_names("targets", self.targets, _check_target)))
        put("error_models", MappingProxyType(
            _check_names("error_models", self.error_models, _check_callable)))
        put("seed", _check_int("seed", self.seed, 0))
        put("chunk_size", _check_int("chunk_size", self.chunk_size, 1))
        put("num_cpus_per_worker",
            _check_number("num_cpus_per_worker", self.num_cpus_per_worker, 0.0, strict=True))
        if self.num_gpus_per_worker is not None:
            put("num_gpus_per_worker", _check_number(
                "num_gpus_per_worker", self.num_gpus_per_worker, 0.0, strict=False))
        if self.precision is not None:
            from pytei_ray.stats import Precision  # lazy: scipy only for adaptive campaigns

            if not isinstance(self.precision, Precision):
                raise _fail("precision", "None or a Precision (e.g. Precision('auc', 0.005))",
                            self.precision)
            self.precision.looks(self.repetitions)  # raises if max_reps < repetitions
        for flag in ("skip_ineffective", "rescore", "stratify_unread"):
            if not isinstance(getattr(self, flag), bool):
                raise _fail(flag, "a bool", getattr(self, flag))
        if self.subsample is not None:
            put("subsample", _check_int("subsample", self.subsample, 2))
            split = self.split
            if split is None or getattr(split, "score_subset", None) is None:
                raise _fail("subsample", "None, unless `evaluate` is a SplitEvaluation with a "
                            "`score_subset` (the metrics of some samples alone)", self.subsample)
            if not self.skip_ineffective:
                raise _fail("subsample", "None when skip_ineffective=False (subsampling stands "
                            "on the golden run being deterministic)", self.subsample)
        if self.metrics is not None:
            put("metrics", MappingProxyType(_check_metrics(self.metrics)))
            if self.precision is not None and self.precision.metric in self.metrics:
                declared = self.metrics[self.precision.metric].higher_is_better
                if None not in (declared, self.precision.higher_is_better) and \
                        declared != self.precision.higher_is_better:
                    raise _fail("precision", f"a target whose higher_is_better agrees with "
                                f"metrics[{self.precision.metric!r}] ({declared})",
                                self.precision)

    def metric_info(self, name: str) -> Any:
        """The declared :class:`~pytei_ray.stats.Metric` of ``name``, or None."""
        return (self.metrics or {}).get(name)

    @property
    def split(self) -> Any:
        """The split evaluation (``evaluate`` with per-sample ``outputs`` and a ``score``), or
        None for a black-box ``evaluate``."""
        ev = self.evaluate
        return ev if callable(getattr(ev, "outputs", None)) and callable(
            getattr(ev, "score", None)) else None

    @property
    def rescores(self) -> bool:
        """Whether workers may re-score trials: a split ``evaluate``, ``rescore`` and
        ``skip_ineffective`` (re-scoring, like skipping, stands on a deterministic one)."""
        return self.rescore and self.skip_ineffective and self.split is not None

    def looks(self) -> list[int]:
        """Repetition counts at which an adaptive campaign decides which points continue
        (``[repetitions]`` for a fixed campaign)."""
        if self.precision is None:
            return [self.repetitions]
        return list(self.precision.looks(self.repetitions))

    @property
    def n_trials(self) -> int:
        """Number of trials in the full grid."""
        combos = sum(1 for m in self.models for t in self.targets for e in self.error_models
                     if self.pairs(m, t, e))
        return combos * len(self.bers) * self.repetitions * len(self.mitigations)

    def pairs(self, model: str, target: str, error_model: str) -> bool:
        """Whether these levels make points: they agree on every attribute two of them
        declare (always True without ``Level`` attributes; see :mod:`~.levels`)."""
        return not self.level_columns or pairs(self.level_columns, model, target, error_model)

    def attributes(self, model: str, target: str, error_model: str,
                   mitigation: str) -> dict[str, Any]:
        """The ``Level`` attribute columns of a trial (``{}`` without attributes)."""
        if not self.level_columns:
            return {}
        return row_values(self.level_columns, {"models": model, "targets": target,
                                               "error_models": error_model,
                                               "mitigations": mitigation})

    def column_types(self) -> dict[str, str]:
        """Attribute column -> ``"int"``/``"float"``/``"str"`` (what the row schema adds)."""
        return {name: col["type"] for name, col in self.level_columns.items()}

    def factor_levels(self) -> dict[str, dict[str, Any]]:
        """Description of every level of the named factors (name -> :func:`describe`)."""
        return {
            "models": {k: None for k in self.models},
            "targets": {k: describe(v) for k, v in self.targets.items()},
            "error_models": {k: describe(v) for k, v in self.error_models.items()},
            "mitigations": {k: describe(v) for k, v in self.mitigations.items()},
        }

    def spec(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Everything that determines the results, as JSON-able data (stored in the manifest).

        ``skip_ineffective``, ``rescore`` and ``stratify_unread`` appear only when False
        (``subsample`` only when set), so
        the spec (and its hash) of a campaign with the defaults is the one stored before the
        options existed.

        Args:
            params: the job parameters the campaign was made with (``--set k=v``).
        """
        spec = {
            "format": SPEC_FORMAT,
            "name": self.name,
            "seed": self.seed,
            "params": _jsonable(dict(params or {})),
            **self.factor_levels(),
            "bers": list(self.bers),
            "repetitions": self.repetitions,
            # only when set, so that the specs (and hashes) of fixed campaigns are unchanged
            **({"stopping": {**self.precision.to_spec(), "min_reps": self.repetitions}}
               if self.precision is not None else {}),
        }
        if not self.skip_ineffective:
            spec["skip_ineffective"] = False
        if not self.rescore:
            spec["rescore"] = False
        if not self.stratify_unread:
            spec["stratify_unread"] = False
        if self.subsample is not None:
            spec["subsample"] = self.subsample
        if self.level_columns:  # only when used, so that other specs (and hashes) are unchanged
            spec["factors"] = _jsonable(dict(self.level_columns))
        if self.metrics:  # likewise
            spec["metrics"] = {k: v.to_spec() for k, v in self.metrics.items()}
        return spec


def _check_metrics(metrics: Any) -> dict[str, Any]:
    """``metrics``: a mapping of non-empty metric names to ``Metric`` declarations."""
    from pytei_ray.stats import Metric  # lazy: scipy only when metrics are declared

    if not isinstance(metrics, Mapping):
        raise _fail("metrics", "a dict of metric name -> Metric(bounds=..., "
                    "higher_is_better=...)", metrics)
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.strip():
            raise _fail("metrics", "metric names that are non-empty strings", name)
        if not isinstance(value, Metric):
            raise _fail(f"metrics[{name!r}]", "a Metric (e.g. Metric(bounds=(0, 1), "
                        "higher_is_better=True))", value)
    return dict(metrics)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    return describe(obj)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``spec`` (key order and level order do not matter)."""
    canonical = dict(spec)
    canonical["bers"] = sorted(float(b) for b in spec.get("bers", []))
    return stable_sha256(canonical).hexdigest()
