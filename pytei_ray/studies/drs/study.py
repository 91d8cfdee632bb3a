"""The reusable half of a DRS robustness campaign: which data, train-or-load, evaluate, calibrate.

A job file declares the campaign; a :class:`DRSStudy` supplies its hooks::

    study = DRSStudy.preset("full")                       # synthetic Criteo-like clicks
    Campaign(models={m: study.model(m) for m in MODELS},  # trained once, cached with results
             data=study.eval_data,                        # test split (+ validation)
             evaluate=study.split,                        # AUC-ROC and log loss on test
             calibrate=study.calibrate, ...)              # Ranger profiles on validation

Data. :class:`ClickData` names the log (the synthetic generator, or a real Criteo ``train.txt``
/ MovieLens-1M ``ratings.dat`` file, of which the first ``n_rows`` lines are read) and the
seeded train/validation/test split (:func:`~pytei_ray.studies.drs.data.split`; vocabularies are
fit on train only). Each process loads and splits it once.

Training. ``study.model(name)`` is a factory taking a
:class:`~pytei_ray.execution.context.BuildContext`. It trains the model on the train split with
early stopping on validation AUC (one torch thread, so the weights are a function of the seeds)
and stores the checkpoint in the results directory's artifact cache (``<model>-<key>.pt``), where
``key`` hashes the data, the split, the schedule and the model's hyper-parameters. Whoever
builds the model next (another worker, a resumed run, another campaign into the same
directory) loads it instead of training. The test split is used only by :meth:`evaluate`.

Scoring. :attr:`DRSStudy.split` is the evaluation split in two: per-sample test logits
(:meth:`DRSStudy.outputs`, batches padded by :func:`~pytei_ray.injection.sample_batches` so a
sample's logit does not depend on its batch) and the metrics of a logit vector
(:meth:`DRSStudy.score`). Calling it is the full evaluation; a campaign also uses it to
re-score only the samples an embedding fault can change (docs/campaign.md).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytei_ray.injection import SplitEvaluation
from pytei_ray.training.state import TrainingState

from ..common import (
    EvalData,
    checkpoint_bytes,
    checkpoint_key,
    load_checkpoint,
    torch_threads,
    trained_or_cached,
)
from .continued import WARMUP_STEPS, continued_state
from .data import ClickLog, split, synthetic_criteo
from .layers import CrossNetwork, DotInteraction, FMInteraction
from .loaders import load_criteo, load_movielens
from .models import MODELS, build_model
from .train import (
    SETTINGS,
    DRSSetting,
    binary_metrics,
    predict,
    predict_samples,
    train,
)

__all__ = ["CLAMP_LAYERS", "DATASETS", "ClickData", "DRSStudy", "EvalData", "torch_threads"]

#: Accepted ``dataset`` names.
DATASETS = ("synthetic", "criteo", "movielens")
#: Layers whose outputs activation clipping (``Clip``, ``Ranger``) bounds in the DRS models:
#: PyTEI's ``nn.Linear`` plus the FM, cross and dot interactions that feed the predictor, so
#: FM (whose only Linear is its predictor, never clamped) is protected too. AFN's logarithmic
#: neurons are left out: their clean outputs (products of embeddings) exceed +-100, and
#: clamping them costs AFN 0.05 AUC without any fault. Use as ``Clip(layers=CLAMP_LAYERS)``.
CLAMP_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, FMInteraction, CrossNetwork, DotInteraction)
_CKPT_FORMAT = 1



@dataclass(frozen=True)
class ClickData:
    """A click log and its seeded train/validation/test split.

    Args:
        dataset: ``"synthetic"`` (generated, needs no file), ``"criteo"`` (``train.txt``) or
            ``"movielens"`` (MovieLens-1M ``ratings.dat``).
        path: the file of a real dataset (None for synthetic).
        n_rows: rows generated (synthetic) or read from the head of the file (real).
        seed: seed of the synthetic generator (ignored for real data).
        split_seed: seed of the train/validation/test permutation.
        fractions: train, validation, test fractions.

    Example:
        >>> tr, va, te = ClickData(n_rows=1000).splits()
        >>> len(tr), len(va), len(te)
        (800, 100, 100)
    """

    dataset: str = "synthetic"
    path: str | None = None
    n_rows: int = 100_000
    seed: int = 0
    split_seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Expected `dataset` to be one of {list(DATASETS)}, but got "
                             f"{self.dataset!r}.")
        if isinstance(self.n_rows, bool) or not isinstance(self.n_rows, int) or self.n_rows < 10:
            raise ValueError(f"Expected `n_rows` to be an integer >= 10, but got {self.n_rows!r}.")
        if self.dataset == "synthetic":
            if self.path is not None:
                raise ValueError(f"The synthetic dataset reads no file, but got path "
                                 f"{self.path!r}; pass dataset='criteo' or 'movielens' with it.")
        elif self.path is None or not Path(self.path).is_file():
            raise ValueError(f"Expected `path` to be an existing {self.dataset} file, but got "
                             f"{self.path!r}. Nothing is downloaded: pass a local file.")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))

    def key(self) -> str:
        """A 16-hex-digit hash of everything that determines the split's tensors."""
        ident: dict[str, Any] = asdict(self)
        if self.path is not None:  # the file itself: absolute path and size
            ident["path"] = os.path.abspath(self.path)
            ident["size"] = os.path.getsize(self.path)
        return checkpoint_key(ident)

    def splits(self) -> tuple[ClickLog, ClickLog, ClickLog]:
        """``(train, validation, test)``, loaded and split once per process."""
        return _splits(self)


@functools.lru_cache(maxsize=4)
def _splits(data: ClickData) -> tuple[ClickLog, ClickLog, ClickLog]:
    if data.dataset == "synthetic":
        log = synthetic_criteo(data.n_rows, seed=data.seed)
    elif data.dataset == "criteo":
        log = load_criteo(str(data.path), max_rows=data.n_rows)
    else:
        log = load_movielens(str(data.path), max_rows=data.n_rows)
    return split(log, seed=data.split_seed, fractions=data.fractions)


@dataclass(frozen=True)
class DRSStudy:
    """Hooks of a DRS campaign: build (train once, then load) models, load and score data.

    Args:
        data: the click log and its split.
        schedule: training schedule (epochs, batch size, learning rate, early-stopping patience).
        model_kwargs: constructor arguments of every model (``embed_dim``, ``mlp_dims``).
        model_seed: initialization seed.  train_seed: shuffling seed.
        eval_batch_size: rows per forward pass when scoring.

    Example:
        >>> study = DRSStudy.preset("small")
        >>> study.checkpoint_name("fm")  # doctest: +ELLIPSIS
        'fm-...pt'
    """

    data: ClickData = field(default_factory=ClickData)
    schedule: DRSSetting = SETTINGS["full"]
    model_kwargs: Mapping[str, Any] = field(
        default_factory=lambda: {"embed_dim": 16, "mlp_dims": (16, 16)})
    model_seed: int = 0
    train_seed: int = 0
    eval_batch_size: int = 1024

    @classmethod
    def preset(cls, setting: str = "full", dataset: str = "synthetic", path: str | None = None,
               rows: int | None = None, seed: int = 0) -> DRSStudy:
        """A study with a :data:`~pytei_ray.studies.drs.SETTINGS` preset's size and schedule.

        Args:
            setting: a key of ``SETTINGS`` (``"small"``: a first look, ``"full"``).
            dataset, path: see :class:`ClickData`.
            rows: rows of the log (default: the preset's ``n_rows``).
            seed: data, split, initialization and training seed.
        """
        if setting not in SETTINGS:
            raise ValueError(f"Expected `setting` to be one of {sorted(SETTINGS)}, but got "
                             f"{setting!r}.")
        schedule = SETTINGS[setting]
        data = ClickData(dataset, path, rows if rows is not None else schedule.n_rows,
                         seed=seed, split_seed=seed)
        return cls(data, schedule, model_seed=seed, train_seed=seed)

    # ---- models ----------------------------------------------------------------------------
    def checkpoint_name(self, name: str) -> str:
        """``<model>-<key>.pt``: the key hashes data, split, schedule, hyper-parameters, seeds."""
        ident = {"model": name, "data": self.data.key(), "schedule": asdict(self.schedule),
                 "model_kwargs": _plain(self.model_kwargs), "model_seed": self.model_seed,
                 "train_seed": self.train_seed, "format": _CKPT_FORMAT}
        return f"{name}-{checkpoint_key(ident)}.pt"

    def model(self, name: str) -> functools.partial:
        """The factory of model ``name`` for ``Campaign(models=...)``: ``(ctx=None) -> model``."""
        if name not in MODELS:
            raise KeyError(f"Unknown DRS model {name!r}; expected one of {sorted(MODELS)}.")
        return functools.partial(self.trained, name)

    def trained(self, name: str, ctx: Any = None) -> nn.Module:
        """Model ``name`` with trained weights: loaded from ``ctx``'s cache, else trained now.

        Args:
            name: a key of :data:`~pytei_ray.studies.drs.MODELS`.
            ctx: a :class:`~pytei_ray.execution.context.BuildContext` (None: train, no cache).

        Returns:
            The model in eval mode, on the CPU.
        """
        return trained_or_cached(ctx, self.checkpoint_name(name),
                                 lambda: self._train_bytes(name), self._load)

    def _train_bytes(self, name: str) -> bytes:
        train_log, val_log, _ = self.data.splits()
        kwargs = dict(self.model_kwargs)
        model = build_model(name, train_log.field_dims, train_log.n_dense, seed=self.model_seed,
                            **kwargs)
        with torch_threads(1):  # deterministic weights for the seeds (and fastest here)
            result = train(model, train_log, val_log, seed=self.train_seed,
                           eval_batch_size=self.eval_batch_size, **self.schedule.train_kwargs())
        meta = {"format": _CKPT_FORMAT, "model": name, "field_dims": train_log.field_dims,
                "n_dense": train_log.n_dense, "model_kwargs": _plain(kwargs),
                "model_seed": self.model_seed, "history": result.history,
                "best_val_auc": result.best_val_auc, "best_epoch": result.best_epoch,
                "train_seconds": result.seconds, "data": _plain(asdict(self.data))}
        return checkpoint_bytes(result.state_dict, meta)

    @staticmethod
    def _load(data: bytes) -> nn.Module:
        state_dict, meta = load_checkpoint(data)
        kwargs = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in meta["model_kwargs"].items()}
        model = build_model(meta["model"], meta["field_dims"], meta["n_dense"],
                            seed=meta["model_seed"], **kwargs)
        model.load_state_dict(state_dict)
        return model.eval()

    # ---- the training variant (jobs/drs.py --set training=1) -------------------------------
    def trainer(self, name: str) -> functools.partial:
        """The model factory of a training campaign: ``(ctx=None) -> TrainingState`` (model
        ``name`` and a warm Adam, see :meth:`trainable`).

        Raises:
            KeyError: an unknown model (before any trial: the job calls this).
        """
        if name not in MODELS:
            raise KeyError(f"Unknown DRS model {name!r}; expected one of {sorted(MODELS)}.")
        return functools.partial(self.trainable, name)

    def trainable(self, name: str, ctx: Any = None, warmup: int = WARMUP_STEPS
                  ) -> TrainingState:
        """Model ``name`` as trained (:meth:`trained`: the cached checkpoint) plus an Adam with
        the schedule's learning rate, after ``warmup`` seeded steps of continued training on
        the train split (batch size of the schedule) that populate its moments; model and
        Adam there are the checkpoint a window restores, and ``closure(i)`` runs its step
        ``i`` (:func:`~pytei_ray.studies.drs.continued.continued_state`)."""
        train_log = self.data.splits()[0]
        return continued_state(self.trained(name, ctx), train_log,
                               batch_size=self.schedule.batch_size, lr=self.schedule.lr,
                               seed=self.train_seed, warmup=warmup)

    def evaluate_training(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        """The ``evaluate`` hook of the training variant: ``{"logloss", "auc"}`` on the test
        split, loss first (a training trial is classified on the first metric, as a loss).

        The test split, as the inference campaign scores it (same rows, same logits): nothing
        is selected on these numbers after the window, so validation would only make them
        incomparable with the inference study's.
        """
        out = self.evaluate(model, data)
        return {"logloss": out["logloss"], "auc": out["auc"]}

    def check_targets(self, targets: Any, models: Any = tuple(MODELS)) -> None:
        """Refuse, in the job file, a Training target set whose sites the models or Adam do
        not have (fresh models of the data's shape, Adam after one zero-gradient step so that
        its state exists; no training).

        Raises:
            CampaignSpecError: naming the target set and the names that do exist.
        """
        from pytei_ray.training import check_targets_fresh

        train_log = self.data.splits()[0]
        for name in models:
            model = build_model(name, train_log.field_dims, train_log.n_dense,
                                seed=self.model_seed, **dict(self.model_kwargs))
            check_targets_fresh(targets, model,
                                torch.optim.Adam(model.parameters(), lr=self.schedule.lr),
                                label=f"Model {name!r}: ")

    # ---- data and metrics ------------------------------------------------------------------
    def eval_data(self, model_name: str) -> EvalData:
        """The ``data`` hook: the held-out test split and the validation split."""
        del model_name  # every model is scored on the same rows
        _, val_log, test_log = self.data.splits()
        return EvalData(test_log, val_log)

    def outputs(self, model: nn.Module, data: EvalData,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        """Test logits of the samples ``indices`` (None: all), each independent of its batch."""
        return predict_samples(model, data.test, indices, self.eval_batch_size)

    def score(self, outputs: torch.Tensor, data: EvalData) -> dict[str, float]:
        """``{"auc", "logloss"}`` of test logits (NaN-robust)."""
        return binary_metrics(outputs, data.test.labels.to(outputs.device))

    def score_subset(self, outputs: torch.Tensor, data: EvalData,
                     indices: torch.Tensor) -> dict[str, float]:
        """``{"auc", "logloss"}`` of the test samples ``indices`` alone (their logits given):
        each an unbiased estimate of the whole split's, on a uniform random subset (log loss
        is a mean over samples; AUC a mean over (click, non-click) pairs)."""
        labels = data.test.labels[indices.to(data.test.labels.device)]
        return binary_metrics(outputs, labels.to(outputs.device))

    @property
    def split(self) -> SplitEvaluation:
        """The ``evaluate`` hook as a split evaluation: :meth:`outputs`, :meth:`score` and
        :meth:`score_subset` (every embedding table of the models is re-scored)."""
        return SplitEvaluation(self.outputs, self.score, score_subset=self.score_subset)

    def evaluate(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        """``{"auc", "logloss"}`` on the test split: ``split(model, data)``."""
        return self.score(self.outputs(model, data), data)

    def calibrate(self, model: nn.Module, data: EvalData) -> None:
        """The ``calibrate`` hook: one clean pass over the validation split (never test)."""
        predict(model, data.validation, self.eval_batch_size)


def _plain(obj: Any) -> Any:
    """JSON/weights_only-friendly copy: tuples -> lists, mappings -> dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj

