"""Module hooks of training faults: forward outputs and backward activation gradients.

The hooks stay installed for the whole run and cost a dictionary lookup at steps without
faults. At a faulty step they draw each call's faults from a counter-based stream keyed by
``(seed, site, module, element, shape, dtype)`` and numbered ``(step, call)`` (transient), or
fix per-sample positions once (permanent). Writes never touch what autograd saved or what the
caller holds (:func:`~pytei_ray.injection.activation_write.write_faults`); gradients are
corrupted out of place, in the backward of an identity function wrapped around this module's
inputs (or outputs), so only this module's share of a gradient is hit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..faults.callstream import CallStream
from ..faults.dtypes import dtype_name, layout_of
from ..faults.faultmap import SiteInfo, TensorFaults
from ..injection.activation_sources import PermanentFaults
from ..injection.activation_write import (
    count_changed_nonfinite,
    module_ptrs,
    storage_ptrs,
    write_faults,
)
from .sites import TrainingSite
from .stats import SiteStats


class _GradFault(torch.autograd.Function):
    """Identity in forward (a copy, so in-place ops after it are safe); in backward the
    gradient goes through ``corrupt`` (which returns a new tensor, or the same one)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, corrupt: Callable) -> torch.Tensor:
        ctx.corrupt = corrupt
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.corrupt(grad), None


class HookSite:
    """One hook site (:class:`~.sites.Outputs` or :class:`~.sites.ActivationGrads`) installed
    on its modules; the owner's clock says when it strikes. ``owner`` is the
    :class:`~.faults.TrainingFaults` (typed ``Any``: this module does not import it back)."""

    def __init__(self, owner: Any, site: TrainingSite,
                 modules: list[tuple[str, nn.Module]]) -> None:
        self.owner, self.site, self.key = owner, site, site.key()
        self.modules = [n for n, _ in modules]
        self.calls: dict[str, int] = {}  # module -> calls in the current step (reset per step)
        self._stream = CallStream(owner.error, owner.seed, f"training-{site.kind}")
        self._keys: dict[tuple, int] = {}  # (module, element, shape, dtype) -> stream key
        self._fixed = PermanentFaults(owner.error, f"Permanent faults in {self.key}",
                                      "use a transient schedule")  # per (module, element)
        self.handles: list[Any] = []
        grads = site.kind == "activation_grads"
        of_input = grads and getattr(site, "of", "input") == "input"
        for name, mod in modules:
            if of_input:
                h = mod.register_forward_pre_hook(self._input_grads(name), with_kwargs=True)
            else:
                fn = self._output_grads(name) if grads else self._outputs(name, mod)
                h = mod.register_forward_hook(fn, prepend=not grads, with_kwargs=True)
            self.handles.append(h)

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        while self.handles:
            self.handles.pop().remove()

    def new_step(self) -> None:
        self.calls.clear()

    # ---- sampling ----------------------------------------------------------------------------
    def _faults(self, module: str, call: int, element: int, t: torch.Tensor
                ) -> tuple[TensorFaults, bool] | None:
        shape, dtype = tuple(t.shape), t.dtype
        try:
            layout_of(dtype)
        except TypeError as e:
            raise TypeError(f"Training faults in {self.key}, module {module!r}: {e}") from None
        name = f"{module}[{element}]"
        owner = self.owner
        if not owner.schedule.permanent:
            site = (module, element, shape, dtype)
            key = self._keys.get(site)
            if key is None:
                key = self._keys[site] = self._stream.key(self.key, module, element, shape,
                                                          dtype_name(dtype))
            tf = self._stream.sample(key, (owner.current_step, call), SiteInfo(name, dtype,
                                                                                shape))
            return None if tf is None else (tf, False)
        parts = (owner.seed, "training-permanent/v1", self.key, module, element)
        return self._fixed.get((module, element), parts, name, module, shape, dtype), True

    def _corrupt(self, module: str, call: int, element: int, t: torch.Tensor,
                 shared: set[int] | None) -> torch.Tensor:
        got = self._faults(module, call, element, t)
        if got is None or t.numel() == 0:
            return t
        tf, per_sample = got
        rows = t.shape[0] if per_sample else 1
        stats = SiteStats(n_sampled=tf.n_sites * rows, n_faults=tf.n_sites * rows,
                          n_words=tf.n_words * rows, n_calls=1)
        if tf.n_words:
            t, old, new = write_faults(t, tf, per_sample, shared)
            stats.n_words_changed, stats.n_nonfinite = count_changed_nonfinite(tf.dtype, old,
                                                                               new)
        self.owner._record(self.key, stats)
        return t

    def _next_call(self, module: str) -> int | None:
        """The call's index in this step, or None when this step draws no faults here."""
        if not self.owner.hot:
            return None
        call = self.calls.get(module, 0)
        self.calls[module] = call + 1
        return call

    # ---- hooks -------------------------------------------------------------------------------
    def _outputs(self, name: str, mod: nn.Module) -> Callable:
        own = module_ptrs((*mod.parameters(), *mod.buffers()))

        def hook(module: nn.Module, args: Any, kwargs: dict, out: Any) -> Any:
            call = self._next_call(name)
            if call is None:
                return None
            shared = own | storage_ptrs(args, kwargs)
            if isinstance(out, (tuple, list)):  # elements sharing storage are copied
                ptrs = [t.untyped_storage().data_ptr() for t in out
                        if isinstance(t, torch.Tensor) and not t.is_quantized]
                shared |= {p for p in ptrs if ptrs.count(p) > 1}
            return self._map(out, name, lambda i, t: self._corrupt(name, call, i, t, shared))

        return hook

    def _input_grads(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            call = self._next_call(name)
            if call is None:
                return None
            keys = sorted(kwargs)
            items = [*args, *(kwargs[k] for k in keys)]
            new = [self._wrap(name, call, i, t) for i, t in enumerate(items)]
            if all(a is b for a, b in zip(new, items)):
                return None
            return tuple(new[:len(args)]), dict(zip(keys, new[len(args):]))

        return hook

    def _output_grads(self, name: str) -> Callable:
        def hook(module: nn.Module, args: Any, kwargs: dict, out: Any) -> Any:
            call = self._next_call(name)
            if call is None:
                return None
            return self._map(out, name, lambda i, t: self._wrap(name, call, i, t))

        return hook

    def _wrap(self, module: str, call: int, element: int, t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or not t.requires_grad:
            return t
        return _GradFault.apply(
            t, lambda g: self._corrupt(module, call, element, g, None))  # None: a copy

    def _map(self, out: Any, name: str, fn: Callable[[int, torch.Tensor], Any]) -> Any:
        if isinstance(out, torch.Tensor):
            new = fn(0, out)
            return None if new is out else new
        if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
            new = [fn(i, t) for i, t in enumerate(out)]
            if all(a is b for a, b in zip(new, out)):
                return None
            return type(out)(*new) if hasattr(out, "_fields") else type(out)(new)
        raise TypeError(
            f"Training faults in {self.key} need a tensor or a tuple/list of tensors, but "
            f"module {name!r} returned a {type(out).__name__}.\n"
            "Target a submodule whose output is a tensor.")
