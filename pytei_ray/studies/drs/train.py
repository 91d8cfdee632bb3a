"""Training, NaN-robust evaluation and checkpoints for the DRS models.

Non-finite outputs are routine under fault injection, so the metrics define them:

* ``auc`` (AUC-ROC, computed as torchmetrics' ``binary_auroc`` computes it, bit for bit): a NaN
  logit counts as an uninformative prediction, logit 0 (probability 0.5) — the same value
  activation clipping's ``nan_to_num(0)`` gives; ``+inf``/``-inf`` rank above/below every finite
  logit. The logits are compared as float64, which preserves order and ties exactly (a sigmoid
  in float32 would merge every logit above ~17 into a tie at 1.0). AUC is NaN only when the
  labels hold a single class.
* ``logloss`` (mean binary cross-entropy from logits, float64): NaN logits are scored as logit 0
  (``log 2``) as for AUC; a confidently wrong ``+-inf`` logit costs ``inf``, a right one 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytei_ray.injection.lookups import sample_batches

from ..common import checkpoint_payload, load_checkpoint
from .data import ClickLog

__all__ = [
    "SETTINGS",
    "DRSSetting",
    "TrainResult",
    "binary_metrics",
    "evaluate",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train",
]


@dataclass(frozen=True)
class DRSSetting:
    """A recommended synthetic-data size and training schedule (keyword arguments of train).

    Attributes:
        n_rows: Rows of :func:`~pytei_ray.studies.drs.data.synthetic_criteo` (split 0.8/0.1/0.1).
        epochs: Maximum training epochs.
        batch_size: Training batch size.
        lr: Adam learning rate.
        patience: Early-stopping patience in epochs.
    """

    n_rows: int
    epochs: int
    batch_size: int
    lr: float
    patience: int = 1

    def train_kwargs(self) -> dict[str, Any]:
        """``epochs, batch_size, lr, patience`` for :func:`train`."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
        }


#: Synthetic-campaign presets: "small" (~1 min campaign) and "full" (< 15 min incl. training).
SETTINGS: dict[str, DRSSetting] = {
    "small": DRSSetting(n_rows=20_000, epochs=3, batch_size=1024, lr=5e-3),
    "full": DRSSetting(n_rows=100_000, epochs=3, batch_size=2048, lr=5e-3),
}


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        state_dict: Parameters of the best epoch (by validation AUC), detached CPU copies.
        history: One dict per epoch: ``epoch, train_loss, val_auc, val_logloss, seconds``.
        best_val_auc: Validation AUC of ``state_dict``.
        best_epoch: 1-based epoch of ``state_dict`` (0: the initial weights were never beaten).
        seconds: Wall time of the whole call.
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_auc: float = float("nan")
    best_epoch: int = 0
    seconds: float = 0.0


def _auroc(x: torch.Tensor, positive: torch.Tensor) -> float:
    """AUC-ROC of float64 scores ``x`` (no NaN) for labels ``positive`` (both classes present).

    The operations of torchmetrics' ``binary_auroc`` (the ROC curve at every distinct score
    from a descending sort, cumulative true positives in float32, the trapezoidal rule) on the
    same arrays, so the same bits, with one sort of the scores instead of three (it used to be
    given their dense ranks; ``tests/test_drs_train.py`` compares the two on ties, NaN, +-inf
    and -0.0). The order within a tie does not matter: the curve is read at the end of each.
    """
    n = x.numel()
    if x.device.type == "cpu":
        order = torch.from_numpy(np.argsort(-x.numpy()))  # numpy's sort: ~3x torch's here
    else:
        order = torch.argsort(x, descending=True)
    xs = x[order]
    ends = F.pad(torch.nonzero(xs[1:] != xs[:-1]).flatten(), [0, 1], value=n - 1)
    tps = torch.cumsum(positive[order].to(torch.long) * 1.0, dim=0)[ends]
    fps = 1 + ends - tps
    zero = torch.zeros(1, dtype=tps.dtype, device=tps.device)
    tps, fps = torch.cat([zero, tps]), torch.cat([zero, fps])
    return float(torch.trapz(tps / tps[-1], fps / fps[-1]))


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC-ROC and log loss of click logits, defined for NaN/Inf logits (see module docs).

    Args:
        logits: ``[N]`` logits (any float dtype, any device).
        labels: ``[N]`` labels in {0, 1}.

    Returns:
        ``{"auc": float, "logloss": float}``.

    Example:
        >>> m = binary_metrics(torch.tensor([2.0, float("nan"), -1.0]), torch.tensor([1.0, 0, 0]))
        >>> m["auc"]
        1.0
    """
    if logits.shape != labels.shape or logits.dim() != 1:
        raise ValueError(
            f"Expected logits and labels of one shape [N], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if logits.numel() == 0:
        return {"auc": float("nan"), "logloss": float("nan")}
    x = torch.nan_to_num(
        logits.detach().to(torch.float64), nan=0.0, posinf=math.inf, neginf=-math.inf
    )
    y = labels.detach().to(x.device)
    positive = y > 0.5
    n_pos = int(positive.sum())
    auc = _auroc(x, positive) if 0 < n_pos < y.numel() else float("nan")
    loss = F.softplus(torch.where(positive, -x, x))  # softplus(-x) for clicks, else softplus(x)
    return {"auc": auc, "logloss": float(loss.mean())}


@torch.no_grad()
def predict(model: nn.Module, data: ClickLog, batch_size: int = 2048) -> torch.Tensor:
    """Logits ``[N]`` of ``model`` in eval mode, on the model's device (mode restored after)."""
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be >= 1, but got {batch_size}.")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        out = [
            model(
                data.dense[i : i + batch_size].to(device),
                data.sparse[i : i + batch_size].to(device),
            )
            for i in range(0, len(data), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def predict_samples(model: nn.Module, data: ClickLog, indices: torch.Tensor | None = None,
                    batch_size: int = 1024) -> torch.Tensor:
    """Logits of the samples ``indices`` (None: all, in order), in eval mode (mode restored).

    Batches of ``batch_size`` padded to a multiple of 16
    (:func:`~pytei_ray.injection.sample_batches`), so a sample's logit is the same in any batch
    (none falls into a kernel's scalar tail): the per-sample outputs that exact re-scoring of
    embedding faults patches (``DRSStudy.split``).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        out = [model(data.dense[ids.to(data.dense.device)].to(device),
                     data.sparse[ids.to(data.sparse.device)].to(device))[:n]
               for ids, n in sample_batches(len(data), indices, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def evaluate(model: nn.Module, data: ClickLog, batch_size: int = 2048) -> dict[str, float]:
    """``{"auc", "logloss"}`` of ``model`` on ``data`` (see :func:`binary_metrics`).

    Example:
        >>> from pytei_ray.studies.drs import build_model, synthetic_criteo
        >>> log = synthetic_criteo(500, seed=0)
        >>> sorted(evaluate(build_model("fm", log.field_dims, log.n_dense), log))
        ['auc', 'logloss']
    """
    logits = predict(model, data, batch_size)
    return binary_metrics(logits, data.labels.to(logits.device))


def train(
    model: nn.Module,
    train: ClickLog,
    val: ClickLog,
    *,
    epochs: int = 3,
    batch_size: int = 1024,
    lr: float = 5e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    patience: int = 1,
    eval_batch_size: int = 2048,
    log: Callable[[dict[str, float]], Any] | None = None,
) -> TrainResult:
    """Train with Adam on BCE-with-logits, early-stopping on validation AUC.

    Deterministic for a given ``seed`` (and thread count): batches are shuffled with a local
    ``torch.Generator`` and any RNG use inside the model runs under ``fork_rng`` seeded with
    ``seed``, so the caller's global RNG state is untouched. After each epoch the model is
    scored on ``val``; training stops after ``patience`` epochs without a better AUC, and the
    best epoch's weights are loaded back into ``model`` and returned.

    Args:
        model: A DRS model (trained in place, on its current device).
        train: Training rows.
        val: Validation rows (never the test split).
        epochs: Maximum number of epochs.
        batch_size: Training batch size.
        lr: Adam learning rate.
        weight_decay: Adam L2 penalty.
        seed: Shuffling/RNG seed.
        patience: Epochs without validation improvement before stopping.
        eval_batch_size: Batch size of validation passes.
        log: Optional callback receiving each epoch's history dict.

    Returns:
        A :class:`TrainResult`.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if value < 1:
            raise ValueError(f"Expected `{name}` to be >= 1, but got {value}.")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"Expected non-empty train and val logs, got {len(train)} and {len(val)}.")
    start = time.perf_counter()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    best_auc, best_epoch, stale, history = -math.inf, 0, 0, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            t0, total = time.perf_counter(), 0.0
            model.train()
            order = torch.randperm(len(train), generator=gen)
            for i in range(0, len(train), batch_size):
                idx = order[i : i + batch_size]
                logits = model(train.dense[idx].to(device), train.sparse[idx].to(device))
                loss = F.binary_cross_entropy_with_logits(logits, train.labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            metrics = evaluate(model, val, eval_batch_size)
            row = {
                "epoch": float(epoch),
                "train_loss": total / len(train),
                "val_auc": metrics["auc"],
                "val_logloss": metrics["logloss"],
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            if log is not None:
                log(row)
            if metrics["auc"] > best_auc:
                best_auc, best_epoch, stale = metrics["auc"], epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    # best_state holds its own clones: load_state_dict copied them into the model
    return TrainResult(best_state, history, float(best_auc), best_epoch,
                       time.perf_counter() - start)


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Atomically write ``{"state_dict", "meta"}`` with ``torch.save``.

    The file is written under a temporary name and renamed, so readers never see a partial
    checkpoint. ``meta`` must hold only ``weights_only``-loadable values (numbers, strings,
    lists, dicts, tensors), e.g. the training history and the model's constructor arguments.

    Args:
        path: Destination file.
        state_dict: Model parameters.
        meta: Optional metadata.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(checkpoint_payload(state_dict, meta), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
