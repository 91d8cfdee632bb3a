"""Write a fault map into a model in place, and undo exactly those words.

The handle records, per tensor, the flat indices and the ORIGINAL words it overwrote; ``restore()``
writes them back, so tensor identity (and any optimizer reference) survives and the model is
bit-identical afterwards. A failure half way rolls back what was already written, then re-raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..faults.dtypes import dtype_name, layout_of
from ..faults.faultmap import FaultMap, TensorFaults
from .targets import Site, candidate_sites


class _Write:
    """One tensor's applied faults: enough to restore it and to report what changed."""

    def __init__(
        self,
        site: Site,
        faults: TensorFaults,
        old: torch.Tensor,
        new: torch.Tensor,
        idx: torch.Tensor,
        original: torch.Tensor | None,
    ) -> None:
        self.site = site
        self.faults = faults
        self.old = old  # original words at idx (int view, on the tensor's device)
        self.new = new  # faulty words written
        self.idx = idx  # flat indices, on the tensor's device
        self.original = original  # quantized sites: the original quantized weight object
        self.nonfinite: torch.Tensor | None = None

    def restore(self) -> None:
        if self.original is not None:
            _set_quantized(self.site, self.original)
        elif self.idx.numel():
            _flat_words(self.site.tensor).index_copy_(0, self.idx, self.old)


def _flat_words(t: torch.Tensor) -> torch.Tensor:
    """A flat integer view sharing ``t``'s storage (``t`` must be contiguous)."""
    return t.detach().view(layout_of(t.dtype).int_dtype).view(-1)


def _set_quantized(site: Site, weight: torch.Tensor) -> None:
    mod = site.module
    assert mod is not None
    if hasattr(mod, "set_weight_bias"):
        bias = mod.bias() if callable(getattr(mod, "bias", None)) else None
        mod.set_weight_bias(weight, bias)
    else:
        mod.set_weight(weight)
    site.tensor = weight


def _requantize(q: torch.Tensor, int_repr: torch.Tensor) -> torch.Tensor:
    scheme = q.qscheme()
    if scheme == torch.per_tensor_affine:
        return torch._make_per_tensor_quantized_tensor(int_repr, q.q_scale(), q.q_zero_point())
    if scheme in (torch.per_channel_affine, torch.per_channel_affine_float_qparams):
        return torch._make_per_channel_quantized_tensor(
            int_repr,
            q.q_per_channel_scales(),
            q.q_per_channel_zero_points(),
            q.q_per_channel_axis(),
        )
    raise TypeError(f"Unsupported quantization scheme {scheme} for fault injection.")


def _check_compatible(faults: TensorFaults, site: Site) -> None:
    t = site.tensor
    if t.dtype != faults.dtype or tuple(t.shape) != tuple(faults.shape):
        raise ValueError(
            f"Fault map does not fit tensor {faults.name!r}.\n"
            f"  expected: {dtype_name(faults.dtype)} {tuple(faults.shape)}\n"
            f"  got: {dtype_name(t.dtype)} {tuple(t.shape)}"
        )
    if site.kind != "quantized" and not t.is_contiguous():
        raise ValueError(
            f"Tensor {faults.name!r} is not contiguous; call .contiguous() on it first."
        )


class InjectionHandle:
    """Faults written into a model; ``restore()`` (or leaving the ``with`` block) undoes them.

    Entering the context returns the applied :class:`FaultMap`.
    """

    def __init__(self, faults: FaultMap, writes: list[_Write], hooks: list[Any]) -> None:
        self.faults = faults
        self._writes = writes
        self._hooks = hooks  # handles of mitigation hooks, removed on restore
        self.restored = False

    def restore(self) -> None:
        """Write back every original word and remove mitigation hooks (idempotent)."""
        if self.restored:
            return
        errors = []
        for h in reversed(self._hooks):
            try:
                h.remove()
            except Exception as e:  # keep restoring the weights regardless
                errors.append(e)
        with torch.no_grad():
            for w in reversed(self._writes):
                w.restore()
        self.restored = True
        if errors:
            raise errors[0]

    remove = restore  # RemovableHandle-style alias

    def __enter__(self) -> FaultMap:
        return self.faults

    def __exit__(self, *exc: object) -> None:
        self.restore()

    @property
    def n_nonfinite(self) -> int:
        """NaN/Inf words produced by this application (floating-point tensors only)."""
        return int(sum(int(w.nonfinite) for w in self._writes if w.nonfinite is not None))

    def per_tensor_stats(self) -> dict[str, dict[str, int]]:
        """Bits actually changed and NaN/Inf produced, per tensor (synchronizes with the device)."""
        stats = {}
        for w in self._writes:
            lay = layout_of(w.faults.dtype)
            changed = (w.old ^ w.new).cpu().numpy().view(lay.np_uint)
            stats[w.faults.name] = {
                "n_bits_changed": int(np.bitwise_count(changed).sum()),
                "n_nonfinite": int(w.nonfinite) if w.nonfinite is not None else 0,
            }
        return stats


def _write_one(site: Site, tf: TensorFaults) -> _Write:
    t = site.tensor
    dev = t.device
    idx = torch.from_numpy(tf.index).to(dev, non_blocking=True)
    a = torch.from_numpy(tf.and_mask).to(dev, non_blocking=True)
    x = torch.from_numpy(tf.xor_mask).to(dev, non_blocking=True)
    if site.kind == "quantized":
        original = t
        ints = t.int_repr().contiguous()
        flat = ints.view(layout_of(t.dtype).int_dtype).view(-1)
        old = flat[idx]
        new = (old & a) ^ x
        flat.index_copy_(0, idx, new)
        _set_quantized(site, _requantize(original, ints))
        return _Write(site, tf, old, new, idx, original)
    flat = _flat_words(t)
    old = flat[idx]
    new = (old & a) ^ x
    flat.index_copy_(0, idx, new)
    w = _Write(site, tf, old, new, idx, None)
    if t.dtype.is_floating_point:
        values = new.view(t.dtype)
        if values.element_size() == 1:  # float8: isfinite has no kernel; the cast keeps NaN/Inf
            values = values.float()
        w.nonfinite = (~torch.isfinite(values)).sum()
    return w


def apply_faults(
    faults: FaultMap, model: nn.Module, mitigations: Sequence[Any] = ()
) -> InjectionHandle:
    """Apply ``faults`` (filtered by ``mitigations``) to ``model`` in place.

    Everything is checked before the first word is written: every tensor of the map must exist
    in the model with the same dtype and shape.
    """
    for m in mitigations:
        faults = m.filter_faults(faults)
    include_buffers = True
    sites = candidate_sites(model, include_buffers)
    missing = [t.name for t in faults.tensors if t.name not in sites]
    if missing:
        raise ValueError(
            f"Fault map names tensors the model does not have: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    for tf in faults.tensors:
        _check_compatible(tf, sites[tf.name])
    writes: list[_Write] = []
    hooks: list[Any] = []
    try:
        with torch.no_grad():
            for tf in faults.tensors:
                if tf.n_words:
                    writes.append(_write_one(sites[tf.name], tf))
        for m in mitigations:
            hooks.append(m.attach(model))
    except BaseException:
        InjectionHandle(faults, writes, hooks).restore()
        raise
    handle = InjectionHandle(faults, writes, hooks)
    faults._applied = handle
    return handle
