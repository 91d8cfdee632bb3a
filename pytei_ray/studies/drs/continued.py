"""Continued training of a trained DRS model: the state a training-fault trial starts from.

The DRS models are trained once (:func:`~pytei_ray.studies.drs.train.train`, cached by the
study); the training variant of ``jobs/drs.py`` then hits them while they keep training. Adam's
moments are not part of the cached checkpoint, so :func:`continued_state` populates them with a
few warm-up steps of continued training on the train split, and snapshots model and optimizer
there as the checkpoint that every trial restores (a fresh Adam would make the first steps of
every window lr-sized sign steps, unlike training).

Batches are a function of ``(seed, step)`` only (:func:`batch_indices`), not of an iterator, so
a recomputed step (``Rollback``) and a golden rerun see the same rows; with one torch thread
(:meth:`~pytei_ray.training.TrainingState.session`) a window is bit-for-bit reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pytei_ray.training.state import TrainingState, one_thread

from .data import ClickLog

__all__ = ["WARMUP_STEPS", "batch_indices", "continued_state", "step_closure"]

#: Warm-up steps that give Adam its moments before the checkpoint of the training variant.
WARMUP_STEPS = 4


def batch_indices(n_rows: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The rows of training step ``step``: ``batch_size`` distinct rows of ``n_rows``, drawn by
    a generator seeded by ``(seed, step)`` (all rows when the split is smaller).

    Example:
        >>> bool((batch_indices(100, 8, 0, 3) == batch_indices(100, 8, 0, 3)).all())
        True
        >>> bool((batch_indices(100, 8, 0, 3) == batch_indices(100, 8, 0, 4)).all())
        False
    """
    if batch_size < 1 or n_rows < 1:
        raise ValueError(f"Expected `batch_size` and `n_rows` >= 1, got {batch_size}, {n_rows}.")
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    return torch.randperm(n_rows, generator=gen)[:batch_size]


def step_closure(model: nn.Module, train: ClickLog, batch_size: int, seed: int, step: int
                 ) -> Callable[[], torch.Tensor]:
    """Forward + backward (BCE with logits) of training step ``step`` on its seeded batch."""
    idx = batch_indices(len(train), batch_size, seed, step)
    dense, sparse, labels = train.dense[idx], train.sparse[idx], train.labels[idx]

    def run() -> torch.Tensor:
        device = next(model.parameters()).device
        logits = model(dense.to(device), sparse.to(device))
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(device))
        loss.backward()
        return loss

    return run


def continued_state(model: nn.Module, train: ClickLog, *, batch_size: int, lr: float,
                    seed: int, warmup: int = WARMUP_STEPS) -> TrainingState:
    """``model`` (trained) and an Adam at step ``warmup`` of continued training, restorable.

    Args:
        model: the trained model (trained further in place by the warm-up).
        train: the train split (never validation or test).
        batch_size, lr: the study's schedule (as in training).
        seed: the batch-order seed.
        warmup: steps that populate Adam's moments (>= 1); the checkpoint is after them, so
            step ``i`` of a window is training step ``warmup + i``.

    Returns:
        A :class:`~pytei_ray.training.TrainingState` whose ``closure(i)`` runs window step ``i``.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"Expected `warmup` to be an int >= 1 (Adam needs a step to have "
                         f"moments), but got {warmup!r}.")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with one_thread():  # the checkpoint is a function of the seeds, as the window is
        for step in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            step_closure(model, train, batch_size, seed, step)()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return TrainingState.snapshot(
        model, optimizer, warmup,
        closure=lambda step: step_closure(model, train, batch_size, seed, step))
