"""The one training loop of the GPT study: pretraining runs it from step 0, a trial from the
checkpoint, with hooks where a training-time fault injector and its mitigations act.

A step ``s`` is: hooks' ``before_forward`` -> forward on batch ``s`` -> loss -> backward ->
hooks' ``after_backward`` (the gradients are in ``.grad``; may ask to skip the update) ->
``optimizer.step()`` -> hooks' ``after_step`` (may ask to recompute the step). Everything in it
is a function of the weights, the optimizer state and ``(seed, s)``: with one torch thread on a
given machine and torch build, two runs from the same state are identical bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .corpus import ByteCorpus
from .model import CONFIGS, VOCAB, GPTConfig

__all__ = ["FORMATS", "SETTINGS", "TELEMETRY", "GPTSetting", "StepAction", "StepState",
           "TrainingHooks", "TrainingRun", "continue_training", "format_dtype",
           "loss_closure", "make_optimizer", "perplexity", "set_lr",
           "validation_loss"]

#: Training number formats: every parameter, gradient, optimizer moment and activation is
#: stored in this dtype (bf16 matrix products accumulate in fp32, see ``model.matmul``).
FORMATS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

#: Per-step telemetry columns of :class:`TrainingRun`, in order.
TELEMETRY = ("step", "lr", "loss", "grad_norm", "update_norm", "max_attn_logit",
             "nonfinite_grads", "nonfinite_params", "skipped", "attempts")


def format_dtype(fmt: str) -> torch.dtype:
    """The dtype of training format ``fmt`` (``ValueError`` for an unknown one)."""
    if fmt not in FORMATS:
        raise ValueError(f"Expected a training format in {list(FORMATS)}, but got {fmt!r}.")
    return FORMATS[fmt]


@dataclass(frozen=True)
class GPTSetting:
    """Model size and training schedule.

    The learning rate warms up linearly for ``warmup`` steps and then stays at ``lr``: a trial
    continues training where pretraining stopped, at the rate of the middle of a run (where
    silent data corruption hits a long training job), not at the end of a decay.

    Attributes:
        model: the architecture.  batch_size: sequences per step.  steps: pretraining steps.
        lr, warmup, weight_decay, beta1, beta2: AdamW (decay on matrices only).
        eval_windows: validation windows (of ``model.context`` bytes) the loss is scored on.
    """

    model: GPTConfig = field(default_factory=GPTConfig)
    batch_size: int = 16
    steps: int = 300
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eval_windows: int = 64

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "eval_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer, but got "
                                 f"{value!r}.")
        if not (self.lr > 0 and self.warmup >= 0):
            raise ValueError(f"Expected `lr` > 0 and `warmup` >= 0, but got lr={self.lr!r}, "
                             f"warmup={self.warmup!r}.")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (linear warmup, then constant)."""
        return self.lr * min(1.0, (step + 1) / self.warmup) if self.warmup else self.lr

    def as_dict(self) -> dict[str, Any]:
        """Plain fields (checkpoint keys and metadata)."""
        return asdict(self)


#: ``tiny``: tests (seconds); ``small``: a first look (pretraining ~1 min on 2 CPUs);
#: ``full``: the study (pretraining a few minutes).
SETTINGS: dict[str, GPTSetting] = {
    "tiny": GPTSetting(CONFIGS["tiny"], batch_size=8, steps=40, lr=3e-3, warmup=5,
                       eval_windows=16),
    "small": GPTSetting(CONFIGS["small"], batch_size=16, steps=300, lr=3e-3, warmup=30,
                        eval_windows=64),
    "full": GPTSetting(CONFIGS["full"], batch_size=16, steps=400, lr=2e-3, warmup=40,
                       eval_windows=64),
}


def make_optimizer(model: nn.Module, setting: GPTSetting) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters; weight decay on matrices only (not on biases, norms).

    ``foreach=False``: the per-tensor implementation on every device, so a state's numbers do
    not depend on which implementation torch picks for the device.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": setting.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=setting.lr, betas=(setting.beta1, setting.beta2),
                             foreach=False)


class StepAction(Enum):
    """What a hook may ask of the loop: ``SKIP`` the optimizer step (from ``after_backward``),
    ``RETRY`` the step on the same batch (from ``after_step``; the hook restores what it wants
    restored first, e.g. a snapshot of the weights and optimizer state)."""

    SKIP = "skip"
    RETRY = "retry"


@dataclass
class StepState:
    """What the hooks of one step see.

    Attributes:
        step: the training step (the clock of the data order and the learning rate).
        attempt: 0, then 1, 2... when a hook asked to recompute the step.
        model, optimizer: trained in place.
        loss: the batch loss (0-d float32, detached), from the forward pass on.
    """

    step: int
    attempt: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: torch.Tensor | None = None


class TrainingHooks:
    """Base of the objects :func:`continue_training` calls at the three points of a step (any
    object with some of these methods works; the missing ones are skipped)."""

    def before_forward(self, state: StepState) -> None:
        """Before the forward pass (weights as the step will use them)."""

    def after_backward(self, state: StepState) -> StepAction | None:
        """After ``backward()``, before ``optimizer.step()``; ``SKIP`` drops the update."""
        return None

    def after_step(self, state: StepState) -> StepAction | None:
        """After ``optimizer.step()``; ``RETRY`` recomputes the step."""
        return None


@dataclass
class TrainingRun:
    """Per-step telemetry (columns named by :data:`TELEMETRY`, one value per step) and the
    validation loss after the last step.

    Attributes:
        telemetry: ``column -> list``: the step, its learning rate, the batch loss, the L2 norm
            of the gradients the optimizer used (after ``after_backward`` hooks), the L2 norm of
            the parameter change, the largest attention logit, NaN/inf gradient and parameter
            elements, whether the update was skipped, and how many attempts the step took.
        val_loss: mean next-byte cross-entropy (nats) on the validation windows after the run.
        perplexity: ``exp(val_loss)``.
        seconds: wall time of the steps and the evaluation.
    """

    telemetry: dict[str, list[Any]]
    val_loss: float
    perplexity: float
    seconds: float

    @property
    def losses(self) -> list[float]:
        """The batch loss of each step."""
        return self.telemetry["loss"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per step (``pandas.DataFrame(run.rows())``)."""
        cols = list(self.telemetry)
        return [dict(zip(cols, vals)) for vals in zip(*self.telemetry.values())]


#: What each point of a step may ask for (see :class:`TrainingHooks`).
_ALLOWED = {"before_forward": (), "after_backward": (StepAction.SKIP,),
            "after_step": (StepAction.RETRY,)}


def _call(hooks: Sequence[Any], name: str, state: StepState) -> set[StepAction]:
    actions = set()
    for hook in hooks:
        fn = getattr(hook, name, None)
        if fn is None:
            continue
        action = fn(state)
        if action is None:
            continue
        if action not in _ALLOWED[name]:
            allowed = " or ".join([str(a) for a in _ALLOWED[name]] + ["None"])
            raise ValueError(f"Expected {type(hook).__name__}.{name} to return {allowed}, but "
                             f"got {action!r} at step {state.step}.")
        actions.add(action)
    return actions


def _norm(tensors: Sequence[torch.Tensor]) -> tuple[float, int]:
    """The L2 norm of ``tensors`` together (accumulated in fp32) and their count of NaN/inf
    elements; the elements are counted only when the norm is not finite (rarely), which keeps
    the telemetry at a few per cent of a step."""
    if not tensors:
        return 0.0, 0
    norms = torch.stack([torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors])
    total = float(torch.linalg.vector_norm(norms))
    if math.isfinite(total):
        return total, 0
    return total, int(sum(int((~torch.isfinite(t)).sum()) for t in tensors))


def _update(params: Sequence[torch.Tensor], before: Sequence[torch.Tensor]) -> float:
    """The L2 norm of the change ``params - before`` (differences taken in fp32)."""
    if params and all(p.dtype == torch.float32 for p in params):
        return _norm(torch._foreach_sub(params, before))[0]
    return _norm([p.float() - b.float() for p, b in zip(params, before)])[0]


def _check_window(start_step: object, n_steps: object) -> None:
    for name, value in (("start_step", start_step), ("n_steps", n_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"Expected `{name}` to be an integer >= 0, but got {value!r}.")


def set_lr(optimizer: torch.optim.Optimizer, setting: GPTSetting, step: int) -> float:
    """Give every parameter group the learning rate of ``step``; returns it."""
    lr = setting.lr_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def loss_closure(model: nn.Module, corpus: ByteCorpus, setting: GPTSetting, seed: int,
                 step: int) -> Callable[[], torch.Tensor]:
    """The forward and backward of training step ``step``: a callable that computes the loss
    on the step's batch (picked by ``(seed, step)``, so calling it again recomputes the same
    step), runs ``backward()`` and returns the loss (0-d fp32, detached). Gradients
    accumulate: zero them first (the loops do)."""
    device = next(model.parameters()).device
    inputs, targets = (t.to(device) for t in corpus.batch(
        seed, step, setting.batch_size, setting.model.context))

    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(inputs).float().reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        return loss.detach()

    return closure


def continue_training(model: nn.Module, optimizer: torch.optim.Optimizer, corpus: ByteCorpus,
                      setting: GPTSetting, start_step: int, n_steps: int, *, seed: int = 0,
                      hooks: Sequence[Any] = (), max_attempts: int = 2) -> TrainingRun:
    """Train ``model`` in place for steps ``start_step .. start_step + n_steps - 1``.

    Args:
        model, optimizer: the state to continue from (e.g. a restored checkpoint).
        corpus: batches (:meth:`ByteCorpus.batch` keyed by ``(seed, step)``) and validation.
        setting: batch size, context and learning-rate schedule.
        seed: the data-order seed (pretraining's, so a window continues its data stream).
        hooks: objects with ``before_forward`` / ``after_backward`` / ``after_step`` (see
            :class:`TrainingHooks`), called in order at each step.
        max_attempts: attempts per step; a ``RETRY`` on the last one is not honoured.

    Returns:
        Per-step telemetry and the validation loss after the last step.

    Example:
        >>> from pytei_ray.studies.gpt import SETTINGS, build_gpt, load_corpus
        >>> s = SETTINGS["tiny"]
        >>> model = build_gpt(s.model, seed=0)
        >>> run = continue_training(model, make_optimizer(model, s), load_corpus(), s, 0, 2)
        >>> len(run.losses), run.val_loss < 6.0
        (2, True)
    """
    _check_window(start_step, n_steps)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"Expected `max_attempts` to be an integer >= 1, but got "
                         f"{max_attempts!r}.")
    t0 = time.perf_counter()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    telemetry: dict[str, list[Any]] = {name: [] for name in TELEMETRY}
    model.train()
    for step in range(start_step, start_step + n_steps):
        lr = set_lr(optimizer, setting, step)
        closure = loss_closure(model, corpus, setting, seed, step)
        for attempt in range(max_attempts):
            state = StepState(step, attempt, model, optimizer)
            optimizer.zero_grad(set_to_none=True)
            _call(hooks, "before_forward", state)
            state.loss = closure()
            skipped = StepAction.SKIP in _call(hooks, "after_backward", state)
            grad_norm, bad_grads = _norm([p.grad for p in params if p.grad is not None])
            update = 0.0
            if not skipped:
                before = [p.detach().clone() for p in params]
                optimizer.step()
                update = _update([p.detach() for p in params], before)
            if StepAction.RETRY not in _call(hooks, "after_step", state):
                break
        logit = getattr(model, "max_attention_logit", None)
        loss = math.nan if state.loss is None else float(state.loss)
        values = (step, lr, loss, grad_norm, update,
                  float("nan") if logit is None else float(logit), bad_grads,
                  _norm([p.detach() for p in params])[1], skipped, attempt + 1)
        for name, value in zip(TELEMETRY, values):
            telemetry[name].append(value)
    val = validation_loss(model, corpus, setting)
    return TrainingRun(telemetry, val, perplexity(val), time.perf_counter() - t0)


def validation_loss(model: nn.Module, corpus: ByteCorpus, setting: GPTSetting,
                    batch_size: int = 64) -> float:
    """Mean next-byte cross-entropy (nats) of ``model`` on the fixed validation windows
    (NaN if a logit is NaN; the model is left in eval mode)."""
    device = next(model.parameters()).device
    inputs, targets = corpus.eval_windows(setting.eval_windows, setting.model.context)
    inputs, targets = inputs.to(device), targets.to(device)
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            logits = model(inputs[i:i + batch_size]).float().reshape(-1, VOCAB)
            total += F.cross_entropy(logits, targets[i:i + batch_size].reshape(-1),
                                     reduction="sum").double()
    return float(total) / targets.numel()


def perplexity(loss: float) -> float:
    """``exp(loss)`` (inf when it overflows, NaN for NaN)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
