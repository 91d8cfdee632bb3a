"""The reusable half of a GPT training-fault campaign: pretrain once (cached), restore, continue.

    study = GPTStudy.preset("full")
    state = study.replica("bf16", ctx)          # model + AdamW at the checkpoint, in bf16
    data = study.eval_data("gpt-bf16")          # the corpus (train batches + validation)
    run = study.continue_training(state, data, n_steps=16, hooks=[injector, mitigation])
    state.reset()                               # back to the checkpoint, in place, bit for bit

Pretraining runs once per (setting, seed, corpus fingerprint): the model, the optimizer state
and the step are stored as one artifact through the
:class:`~pytei_ray.execution.context.BuildContext` cache (``gpt-<key>.pt``), so every worker, a
resumed run and a later campaign in the same results directory load it instead of training.
Every format starts from the same fp32 checkpoint, cast on load (AdamW's moments too).
"""

from __future__ import annotations

import functools
import io
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytei_ray.studies.common import checkpoint_key, torch_threads, trained_or_cached
from pytei_ray.training.state import TrainingState

from .corpus import ByteCorpus, CorpusSpec, load_corpus
from .model import GPT, build_gpt
from .train import (
    SETTINGS,
    GPTSetting,
    TrainingRun,
    continue_training,
    format_dtype,
    loss_closure,
    make_optimizer,
    perplexity,
    set_lr,
    validation_loss,
)

__all__ = ["GPTStudy", "TrainingState"]

_CKPT_FORMAT = 1


@dataclass(frozen=True)
class GPTStudy:
    """Hooks of a GPT campaign: pretrain once (then load), restore, continue training, score.

    Args:
        setting: model size and schedule (:data:`~pytei_ray.studies.gpt.SETTINGS`).
        corpus: which standard-library files, and how they are split.
        seed: initialization and data-order seed.

    Example:
        >>> GPTStudy.preset("tiny").checkpoint_name()  # doctest: +ELLIPSIS
        'gpt-...pt'
    """

    setting: GPTSetting = field(default_factory=lambda: SETTINGS["full"])
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    seed: int = 0

    @classmethod
    def preset(cls, name: str = "full", seed: int = 0) -> GPTStudy:
        """A study with the :data:`~pytei_ray.studies.gpt.SETTINGS` preset ``name``."""
        if name not in SETTINGS:
            raise ValueError(f"Expected `setting` to be one of {sorted(SETTINGS)}, but got "
                             f"{name!r}.")
        return cls(SETTINGS[name], CorpusSpec(), seed)

    def data(self) -> ByteCorpus:
        """The corpus (read once per process)."""
        return load_corpus(self.corpus)

    # ---- the checkpoint --------------------------------------------------------------------
    def checkpoint_name(self) -> str:
        """``gpt-<key>.pt``: the key hashes the setting, the seed and the corpus fingerprint
        (so another Python's standard library gets a checkpoint of its own)."""
        ident = {"setting": self.setting.as_dict(), "seed": self.seed,
                 "corpus": self.data().fingerprint, "format": _CKPT_FORMAT}
        return f"gpt-{checkpoint_key(ident)}.pt"

    def checkpoint(self, ctx: Any = None) -> dict[str, Any]:
        """The pretrained checkpoint: ``{"state_dict", "optimizer", "step", "meta"}`` (fp32), from
        ``ctx``'s artifact cache, else pretrained now (and stored when ``ctx`` is given)."""
        return trained_or_cached(ctx, self.checkpoint_name(), self._pretrain_bytes, _read)

    def _pretrain_bytes(self) -> bytes:
        corpus = self.data()
        model = build_gpt(self.setting.model, seed=self.seed)
        optimizer = make_optimizer(model, self.setting)
        with torch_threads(1):  # the checkpoint is a function of the seeds
            run = continue_training(model, optimizer, corpus, self.setting, 0,
                                    self.setting.steps, seed=self.seed)
        meta = {"format": _CKPT_FORMAT, "setting": self.setting.as_dict(), "seed": self.seed,
                "corpus_fingerprint": corpus.fingerprint, "corpus_missing": list(corpus.missing),
                "python": platform.python_version(), "torch": str(torch.__version__),
                "parameters": sum(p.numel() for p in model.parameters()),
                "val_loss": run.val_loss, "unigram_loss": corpus.unigram_loss(),
                "train_losses": run.losses, "train_seconds": run.seconds}
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": self.setting.steps, "meta": meta}, buf)
        return buf.getvalue()

    # ---- models and training states --------------------------------------------------------
    def model(self, fmt: str) -> functools.partial:
        """The factory of the pretrained model in format ``fmt``: ``(ctx=None) -> model``.

        Raises:
            ValueError: an unknown format (before any trial: the job calls this).
        """
        format_dtype(fmt)
        return functools.partial(self.trained, fmt)

    def trained(self, fmt: str = "fp32", ctx: Any = None) -> GPT:
        """The pretrained model in format ``fmt``, in eval mode."""
        return self.replica(fmt, ctx).model.eval()

    def replica(self, fmt: str = "fp32", ctx: Any = None) -> TrainingState:
        """Model and AdamW at the checkpoint in format ``fmt`` (every parameter and moment
        cast to its dtype), ready for :meth:`continue_training`."""
        dtype = format_dtype(fmt)
        ckpt = self.checkpoint(ctx)
        model = build_gpt(self.setting.model, seed=self.seed).to(dtype)
        optimizer = make_optimizer(model, self.setting)
        state = TrainingState(model, optimizer, int(ckpt["step"]), fmt, ckpt["state_dict"],
                              ckpt["optimizer"])
        state.reset()
        return state

    def trainer(self, fmt: str) -> functools.partial:
        """The model factory of a training campaign: ``(ctx=None) -> TrainingState`` (model and
        AdamW at the checkpoint in format ``fmt``, able to run its window step by step).

        Raises:
            ValueError: an unknown format (before any trial: the job calls this).
        """
        format_dtype(fmt)
        return functools.partial(self.trainable, fmt)

    def trainable(self, fmt: str = "fp32", ctx: Any = None) -> TrainingState:
        """:meth:`replica` that knows its batches: ``state.closure(i)`` runs step ``i`` of
        the window (what :func:`pytei_ray.training.train_step` takes)."""
        state = self.replica(fmt, ctx)
        data = self.data()
        state._closure = lambda step: self.step_closure(state, data, step)
        return state

    def continue_training(self, state: TrainingState, data: ByteCorpus, n_steps: int,
                          hooks: Any = ()) -> TrainingRun:
        """Train ``state`` in place for ``n_steps`` from its checkpoint step, calling ``hooks``
        (see :func:`~pytei_ray.studies.gpt.train.continue_training`).

        Runs on one torch thread, as pretraining does: CPU kernels split their reductions by
        thread, and a bf16 trajectory measured here differs in the last bits between one and
        two threads, so a golden run and its trials must share the thread count (one is also
        the fastest on a shared machine: two threads under load were 4x slower).
        """
        with torch_threads(1):
            return continue_training(state.model, state.optimizer, data, self.setting,
                                     state.step, n_steps, seed=self.seed, hooks=tuple(hooks))

    def step_closure(self, state: TrainingState, data: ByteCorpus, step: int
                     ) -> Callable[[], torch.Tensor]:
        """The forward and backward of training step ``step`` for a loop of one's own (e.g.
        ``pytei_ray.training.train_step(step, model, optimizer, closure)``): sets the step's
        learning rate on ``state.optimizer`` and returns
        :func:`~pytei_ray.studies.gpt.train.loss_closure` (run it on one torch thread, as
        :meth:`continue_training` does, to get the same numbers)."""
        set_lr(state.optimizer, self.setting, step)
        return loss_closure(state.model, data, self.setting, self.seed, step)

    def check_targets(self, targets: Any) -> None:
        """Refuse, in the job file, a Training target set whose sites this model or AdamW does
        not have (a fresh model of the setting, its optimizer after one zero-gradient step so
        that its state exists; no pretraining, no data).

        Raises:
            CampaignSpecError: naming the target set and the names that do exist.
        """
        from pytei_ray.training import check_targets_fresh

        model = build_gpt(self.setting.model, seed=self.seed)
        check_targets_fresh(targets, model, make_optimizer(model, self.setting))

    # ---- data and metrics ------------------------------------------------------------------
    def eval_data(self, model_name: str) -> ByteCorpus:
        """The ``data`` hook: the corpus (training batches and validation windows)."""
        del model_name  # every format sees the same bytes
        return self.data()

    def evaluate(self, model: nn.Module, data: ByteCorpus) -> dict[str, float]:
        """The ``evaluate`` hook: ``val_loss`` (nats per byte) and ``perplexity`` on the
        validation windows."""
        loss = validation_loss(model, data, self.setting)
        return {"val_loss": loss, "perplexity": perplexity(loss)}

    def calibrate(self, model: nn.Module, data: ByteCorpus) -> None:
        """The ``calibrate`` hook: one clean pass over the validation windows (Ranger)."""
        validation_loss(model, data, self.setting)


def _read(data: bytes) -> dict[str, Any]:
    payload = torch.load(io.BytesIO(data), weights_only=True)
    for key in ("state_dict", "optimizer", "step", "meta"):
        if key not in payload:
            raise KeyError(f"GPT checkpoint without {key!r}")
    return payload
