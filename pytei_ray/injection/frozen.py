"""Replay the golden outputs of a model's fault-free parts in a faulty evaluation.

A trial that puts faults only into the later layers of a model (the ``dense`` or ``predictor``
weights of a recommendation model, a classifier head) recomputes the earlier ones for nothing:
a module whose parameters and buffers hold no fault, called with the same inputs as in the
golden (fault-free) pass, returns the same output, since ``evaluate`` proved deterministic.
:class:`FrozenOutputs` records, in the golden pass of a (model, mitigation), the inputs and the
output of every call of each top-level child; during a faulty pass it swaps the ``forward`` of
every child that holds no fault for one that returns the recorded output (a copy) as long as
the call's inputs equal the recorded ones bit for bit, and calls the real ``forward`` from the
first call that differs on. Like ``torch.nn.utils.parametrize`` it changes the module only
inside a context and puts it back.

Only the outermost called submodules are frozen: the top-level children, and the children of a
top-level ``nn.ModuleDict`` / ``nn.ModuleList`` (e.g. a DRS model's ``embedding`` when the faults
are in ``dense``, 31-37% of its forward, and every ``dense.*`` part too when they are in the
``predictor``); a child whose recorded calls would exceed ``budget_bytes``, or whose output is
not a tensor (or a tuple/list of tensors), is not recorded. Recordings of the same model under
other mitigations share the tensors they have in common (``record(..., share=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..faults.dtypes import LAYOUTS

__all__ = ["FrozenOutputs"]

_BUDGET = 256 * 2**20  # bytes of recorded inputs and outputs per (model, mitigation)


def _tensor_output(obj: Any) -> bool:
    """Whether a part's output can be replayed: a tensor, or a flat tuple/list of tensors."""
    return isinstance(obj, torch.Tensor) or (
        isinstance(obj, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in obj))


def _copy(obj: Any) -> Any:
    """A fresh copy of a recorded output (callers may change what they get in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    return type(obj)(t.detach().clone() for t in obj)


def _words(t: torch.Tensor) -> torch.Tensor:
    """``t`` as integer words where it is floating point, so that equality is of bits (-0.0 is
    not 0.0; a NaN equals the same NaN)."""
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype.is_floating_point and t.dtype in LAYOUTS:
        return t.detach().contiguous().view(LAYOUTS[t.dtype].int_dtype)
    return t


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit equal call arguments (tensors: same dtype, shape, device and bits;
    anything else: ``==``)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
                and torch.equal(_words(a), _words(b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class FrozenOutputs:
    """Recorded calls of a model's outermost called submodules, replayed where one holds no
    fault.

    Args:
        model: the model (its top-level children with parameters or buffers, those of a
            top-level ModuleDict/ModuleList in its place, are candidates).
        budget_bytes: most bytes of recorded inputs and outputs kept.
    """

    def __init__(self, model: nn.Module, budget_bytes: int = _BUDGET) -> None:
        self.model = model
        self.budget_bytes = budget_bytes
        self.calls: dict[str, list[tuple[Any, Any, Any]]] = {}  # child -> (args, kwargs, out)
        self.nbytes = 0  # bytes of the recorded tensors (each stored once)
        self._children = dict(_called_children(model))

    def rebind(self, model: nn.Module) -> bool:
        """Move the recording to ``model``, a rebuilt copy of the recorded one (bit-identical
        state: the caller checks), so that its replays serve the new replica and the old one
        is freed. False (nothing changed) if ``model``'s parts are not the recorded ones."""
        children = dict(_called_children(model))
        if children.keys() != self._children.keys():
            return False
        self.model, self._children = model, children
        return True

    def record(self, run: Callable[[], Any], share: Iterable[FrozenOutputs] = ()) -> Any:
        """Run ``run()`` (the golden evaluation) and keep every call of each child; a child
        called with something other than tensors and constants, or past the budget, is not
        kept. Returns what ``run`` returns.

        ``share``: other recordings of the same model (its golden pass under other
        mitigations); a recorded tensor bit-equal to theirs at the same place (child, call,
        argument) is not copied but shared with them, and is not counted in :attr:`nbytes` or
        the budget (a part a mitigation does not act on is stored once for all of them).
        """
        calls: dict[str, list[tuple[Any, Any, Any]] | None] = {n: [] for n in self._children}
        keeper = _Keeper()
        others = [o for o in share if o is not self and o.model is self.model]

        def recording(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                out = forward(*args, **kwargs)
                if calls[name] is None:
                    return out
                if not _tensor_output(out):
                    calls[name] = None
                    return out
                k = len(calls[name])  # type: ignore[arg-type]
                like = next((o.calls[name][k] for o in others
                             if len(o.calls.get(name, ())) > k), (None, None, None))
                call = (keeper.keep(args, like[0]), keeper.keep(kwargs, like[1]),
                        keeper.keep(out, like[2]))
                if keeper.bytes > self.budget_bytes:
                    calls[name] = None
                    return out
                calls[name].append(call)  # type: ignore[union-attr]
                return out
            return wrapped

        with _swapped(self._children, recording):
            result = run()
        self.calls = {n: c for n, c in calls.items() if c}
        kept = {id(t) for c in self.calls.values() for call in c for t in _flat(call)}
        self.nbytes = sum(t.numel() * t.element_size() for t in keeper.copies.values()
                          if id(t) in kept and id(t) not in keeper.shared)
        return result

    def frozen(self, faulted: Iterable[str], tensors: Iterable[torch.Tensor]) -> list[str]:
        """The recorded children that hold none of the ``faulted`` sites (names as in
        ``named_parameters()``) and none of the faulted ``tensors`` (shared weights)."""
        names = list(faulted)
        ids = {id(t) for t in tensors}
        out = []
        for name in self.calls:
            child = self._children[name]
            if any(n == name or n.startswith(name + ".") for n in names):
                continue
            if any(id(p) in ids for p in child.parameters()) or \
                    any(id(b) in ids for b in child.buffers()):
                continue
            out.append(name)
        return out

    @contextmanager
    def replay(self, names: Iterable[str]) -> Iterator[None]:
        """Inside the context, child ``n`` of ``names`` returns its recorded outputs while its
        calls repeat the recorded inputs, and computes from the first call that differs."""
        chosen = {n: self._children[n] for n in names if n in self.calls}

        def replaying(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
            recorded = self.calls[name]
            state = {"next": 0, "live": False}

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                k = state["next"]
                state["next"] = k + 1
                if not state["live"] and k < len(recorded):
                    r_args, r_kwargs, r_out = recorded[k]
                    if _same(args, r_args) and _same(kwargs, r_kwargs):
                        return _copy(r_out)
                state["live"] = True  # the inputs left the golden pass: compute from here on
                return forward(*args, **kwargs)
            return wrapped

        with _swapped(chosen, replaying):
            yield


def _called_children(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The outermost submodules a forward calls: the children, and in place of a container
    that is never called itself (``nn.ModuleDict``, ``nn.ModuleList``) its children; only
    those with parameters or buffers (the others cost little to compute)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)):
            yield from _called_children(child, f"{prefix}{name}.")
        elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            yield f"{prefix}{name}", child


def _flat(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _flat(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _flat(x)


class _Keeper:
    """Copies of the tensors a recording pass sees, each copied once: the output of one part is
    often the input of the next, and is then stored once for both. The originals are held until
    the pass ends, so that no ``id`` is reused for another tensor meanwhile. A tensor bit-equal
    to the one another recording holds at the same place is that recording's tensor (not
    copied, not counted)."""

    def __init__(self) -> None:
        self.copies: dict[int, torch.Tensor] = {}
        self.alive: list[torch.Tensor] = []
        self.shared: set[int] = set()  # ids of copies that belong to another recording
        self.bytes = 0

    def keep(self, obj: Any, like: Any = None) -> Any:
        if isinstance(obj, torch.Tensor):
            copy = self.copies.get(id(obj))
            if copy is None:
                if isinstance(like, torch.Tensor) and _same(obj.detach(), like):
                    copy = self.copies[id(obj)] = like
                    self.shared.add(id(like))
                else:
                    copy = self.copies[id(obj)] = obj.detach().clone()
                    self.bytes += obj.numel() * obj.element_size()
                self.alive.append(obj)
            return copy
        if isinstance(obj, (tuple, list)):
            likes = like if isinstance(like, (tuple, list)) and len(like) == len(obj) \
                else [None] * len(obj)
            return type(obj)(self.keep(x, y) for x, y in zip(obj, likes))
        if isinstance(obj, dict):
            likes = like if isinstance(like, dict) else {}
            return {k: self.keep(v, likes.get(k)) for k, v in obj.items()}
        return obj


@contextmanager
def _swapped(children: dict[str, nn.Module],
             make: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Give each child an instance ``forward`` made by ``make(name, real_forward)`` (hooks
    still run around it), and remove it afterwards, whatever happens."""
    had: dict[str, Any] = {}
    try:
        for name, child in children.items():
            had[name] = child.__dict__.get("forward")
            child.forward = make(name, child.forward)
        yield
    finally:
        for name in had:
            child = children[name]
            if had[name] is None:
                child.__dict__.pop("forward", None)
            else:
                child.forward = had[name]
