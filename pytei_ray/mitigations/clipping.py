"""Activation clipping: forward hooks that bound layer outputs and zero NaNs.

:class:`Clip` uses fixed bounds (PyTEI: +-100 on every ``nn.Linear`` but the last, NaN -> 0);
:class:`Ranger` profiles per-layer bounds on clean data first (Chen et al., "Ranger").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import HookHandles, Mitigation


def _clamp_hook(low: float, high: float, nan_to: float) -> Callable:
    def hook(module: nn.Module, args: Any, out: Any) -> Any:
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return torch.nan_to_num(out, nan=nan_to, posinf=high, neginf=low).clamp_(low, high)
        return out

    return hook


class _LayerClamp(Mitigation):
    def __init__(
        self, layers: tuple[type, ...] = (nn.Linear,), skip_last: bool = True, nan_to: float = 0.0
    ) -> None:
        self.layers = tuple(layers)
        self.skip_last = skip_last
        self.nan_to = float(nan_to)

    def hooked_modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs that get a clamp: every ``layers`` module but the last."""
        mods = [(n, m) for n, m in model.named_modules() if isinstance(m, self.layers)]
        if self.skip_last:
            mods = mods[:-1]
        if not mods:
            raise ValueError(
                f"{type(self).__name__} found no {[t.__name__ for t in self.layers]} layer to "
                f"clamp in {type(model).__name__} (skip_last={self.skip_last})."
            )
        return mods

    def bounds(self, name: str) -> tuple[float, float]:
        raise NotImplementedError

    def attach(self, model: nn.Module) -> HookHandles:
        handles = HookHandles()
        try:
            for name, mod in self.hooked_modules(model):
                lo, hi = self.bounds(name)
                handles.handles.append(mod.register_forward_hook(_clamp_hook(lo, hi, self.nan_to)))
        except BaseException:
            handles.remove()
            raise
        return handles


class Clip(_LayerClamp):
    """Clamp outputs of every ``nn.Linear`` but the last to ``[low, high]``, NaN -> ``nan_to``.

    A forward hook on each clamped layer replaces NaN by ``nan_to``, +inf by ``high``, -inf by
    ``low`` and clamps the rest to ``[low, high]`` (PyTEI's activation clipping: +-100, NaN ->
    0). Only floating-point tensor outputs are touched (a layer returning a tuple is left as it
    is). The hooks live as long as the injection handle.

    Args:
        low, high: the bounds (finite, ``low < high``).
        layers: module types whose outputs are clamped, matched with ``isinstance`` in
            ``model.named_modules()`` order; default ``(nn.Linear,)`` only. Convolutions are
            not clamped unless named: ``layers=(nn.Linear, nn.Conv2d)`` (any ``nn.Module``
            subclass works, e.g. ``nn.Conv1d``, ``nn.EmbeddingBag``).
        skip_last: leave the last matching layer (in ``named_modules()`` order, i.e. the
            order of attribute definition, not of execution) unclamped, as PyTEI does so that
            the output layer's logits keep their range; ``False`` clamps every matching layer.
        nan_to: the value NaN becomes.

    Raises:
        ValueError: on attach, when the model has no layer to clamp (none of ``layers``, or
            only one with ``skip_last=True``).

    Example:
        >>> Clip()
        Clip(low=-100.0, high=100.0)
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 3),
        ...                       nn.Linear(3, 1))
        >>> [n for n, _ in Clip().hooked_modules(model)]
        ['2']
        >>> [n for n, _ in Clip(layers=(nn.Linear, nn.Conv1d)).hooked_modules(model)]
        ['0', '2']
        >>> [n for n, _ in Clip(skip_last=False).hooked_modules(model)]
        ['2', '3']
    """

    name = "clip"

    def __init__(
        self,
        low: float = -100.0,
        high: float = 100.0,
        *,
        layers: tuple[type, ...] = (nn.Linear,),
        skip_last: bool = True,
        nan_to: float = 0.0,
    ) -> None:
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"Expected finite `low` < `high`, but got low={low!r}, high={high!r}.")
        super().__init__(layers, skip_last, nan_to)
        self.low, self.high = float(low), float(high)

    def bounds(self, name: str) -> tuple[float, float]:
        return self.low, self.high

    def __repr__(self) -> str:
        return f"Clip(low={self.low}, high={self.high})"


class Ranger(_LayerClamp):
    """Clamp each layer's outputs to the range it showed on clean data (profile first).

    Args:
        margin: widen each profiled range by this fraction of its width.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> import torch
        >>> r = Ranger().profile(model, lambda m: m(torch.randn(32, 4)))
        >>> sorted(r.ranges)
        ['0']
    """

    name = "ranger"

    def __init__(
        self,
        margin: float = 0.0,
        *,
        layers: tuple[type, ...] = (nn.Linear,),
        skip_last: bool = True,
        nan_to: float = 0.0,
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"Expected argument `margin` to be >= 0, but got {margin!r}.")
        super().__init__(layers, skip_last, nan_to)
        self.margin = float(margin)
        self.ranges: dict[str, tuple[float, float]] = {}

    def profile(self, model: nn.Module, run: Callable[[nn.Module], Any]) -> Ranger:
        """Record per-layer output min/max while ``run(model)`` evaluates clean data."""
        seen: dict[str, list[float]] = {}

        def recorder(name: str) -> Callable:
            def hook(module: nn.Module, args: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor) and out.numel():
                    lo, hi = float(out.detach().min()), float(out.detach().max())
                    cur = seen.setdefault(name, [lo, hi])
                    cur[0], cur[1] = min(cur[0], lo), max(cur[1], hi)

            return hook

        with HookHandles(
            [m.register_forward_hook(recorder(n)) for n, m in self.hooked_modules(model)]
        ):
            with torch.no_grad():
                run(model)
        if not seen:
            raise ValueError("Ranger.profile: `run(model)` ran none of the profiled layers.")
        self.ranges = {
            n: (lo - self.margin * (hi - lo), hi + self.margin * (hi - lo))
            for n, (lo, hi) in seen.items()
        }
        return self

    def bounds(self, name: str) -> tuple[float, float]:
        if not self.ranges:
            raise RuntimeError(
                "Ranger has no profiled bounds: call ranger.profile(model, run) first."
            )
        try:
            return self.ranges[name]
        except KeyError:
            raise RuntimeError(
                f"Ranger was not profiled on layer {name!r}: profile this model."
            ) from None

    def __repr__(self) -> str:
        return f"Ranger(margin={self.margin})"
