"""A model and its optimizer at a checkpoint, restorable in place: what a training trial trains.

A campaign's training trial (:mod:`pytei_ray.execution.training`) asks the model factory for
one of these: it resets it, trains a window step by step (``closure(i)``), scores it and resets
it again. A study builds it from its checkpoint and sets the closure that knows its data, e.g.
:meth:`pytei_ray.studies.gpt.GPTStudy.trainable` or
:meth:`pytei_ray.studies.drs.DRSStudy.trainable`.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
    >>> x = torch.ones(4, 2)
    >>> state = TrainingState.snapshot(net, opt, step=0,
    ...                                closure=lambda s: lambda: net(x).sum().backward())
    >>> before = net.weight.detach().clone()
    >>> opt.zero_grad(); state.closure(0)(); opt.step()
    >>> bool((net.weight != before).all())
    True
    >>> state.reset(); bool((net.weight == before).all())
    True
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["TrainingState", "one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread (the previous count restored after).

    CPU kernels split their reductions by thread count, so a golden window and its trials must
    share it to agree bit for bit; one is also the fastest on a shared machine.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(eq=False)
class TrainingState:
    """A model and its optimizer at a checkpoint, restorable in place.

    :meth:`reset` writes the checkpoint back into the same parameter tensors (their identity,
    and so the optimizer's references, survive) and gives the optimizer fresh copies of the
    stored moments (``Optimizer.load_state_dict`` alone would alias the stored tensors, and
    the next step would change the checkpoint).

    Attributes:
        model, optimizer: trained in place by a window.  step: the checkpoint's step (where a
            window starts).  fmt: the training format.
        _model_state, _optim_state: the checkpoint (a ``state_dict`` of each; not aliased by
            the live model or optimizer).
        _closure: ``step -> (() -> loss)``: the forward and backward of training step ``step``
            (set by the study that knows the data; None: the state cannot train by itself).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    fmt: str = "fp32"
    _model_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    _optim_state: dict[str, Any] = field(repr=False, default_factory=dict)
    _closure: Callable[[int], Callable[[], torch.Tensor]] | None = field(repr=False,
                                                                          default=None)

    @classmethod
    def snapshot(cls, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                 fmt: str = "fp32",
                 closure: Callable[[int], Callable[[], torch.Tensor]] | None = None
                 ) -> TrainingState:
        """A state whose checkpoint is ``model`` and ``optimizer`` as they are now (copied,
        so that training them later leaves the checkpoint as it was)."""
        model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optim_state = copy.deepcopy(optimizer.state_dict())
        return cls(model, optimizer, int(step), fmt, model_state, optim_state, closure)

    def reset(self) -> None:
        """Model and optimizer back to the checkpoint, bit for bit."""
        with torch.no_grad():
            self.model.load_state_dict(self._model_state)
        self.optimizer.load_state_dict(copy.deepcopy(self._optim_state))

    # ---- what a campaign's training trial uses (pytei_ray.execution.training) ---------------
    def closure(self, i: int) -> Callable[[], torch.Tensor]:
        """Forward + backward of step ``i`` of the window (step ``self.step + i`` of training:
        its batch and learning rate); only for states whose study set the closure."""
        if self._closure is None:
            raise TypeError("This TrainingState has no data: build it with the study's "
                            "trainable(...) (e.g. GPTStudy.trainable(fmt), "
                            "DRSStudy.trainable(name)) to train it step by step.")
        return self._closure(self.step + i)

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Where a window runs: one torch thread (so golden is bit for bit)."""
        return one_thread()

    def to(self, device: torch.device | str) -> TrainingState:
        """Model, optimizer state and checkpoint on ``device`` (then reset)."""
        self.model.to(device)
        self._model_state = {k: v.to(device) for k, v in self._model_state.items()}
        self._optim_state = _to(self._optim_state, torch.device(device))
        self.reset()
        return self


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        # Adam(W) keeps its `step` counters on the CPU unless capturable/fused
        return obj if obj.dim() == 0 and not obj.is_floating_point() else obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj
