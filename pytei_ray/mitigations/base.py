"""The :class:`Mitigation` protocol and a handle grouping hook handles."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from ..faults.faultmap import FaultMap


def fresh_instances(spec: Any) -> list[Any]:
    """Deep copies of the mitigations of one entry of a campaign's ``mitigations`` (None, one
    mitigation, or a list/tuple of them): each replica profiles and keeps state in its own."""
    items = [] if spec is None else list(spec) if isinstance(spec, (list, tuple)) else [spec]
    return [copy.deepcopy(m) for m in items]


class HookHandles:
    """Several hook handles removed together; also a context manager."""

    def __init__(self, handles: list[RemovableHandle] | None = None) -> None:
        self.handles = list(handles or [])

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        while self.handles:
            self.handles.pop().remove()

    def __enter__(self) -> HookHandles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Mitigation:
    """Base class: by default a mitigation changes nothing (that is the ``"none"`` mitigation)."""

    name: str = "none"

    def filter_faults(self, faults: FaultMap) -> FaultMap:
        """Return the faults that still reach the weights (default: all of them)."""
        return faults

    def attach(self, model: nn.Module) -> HookHandles:
        """Attach hooks to ``model`` for the duration of an injection (default: none)."""
        return HookHandles()

    def profile(self, model: nn.Module, run: Any) -> Mitigation:
        """Calibrate on clean data, where the mitigation needs it (default: nothing to do)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
