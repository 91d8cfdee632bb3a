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
from ..faults.faultmap import FaultMap, TensorFaults, set_applier
from ..faults.models import keeps_every_bit
from .handles import InjectionHandle, _set_quantized, _Write
from .targets import Site, candidate_sites


def _flat_words(t: torch.Tensor) -> torch.Tensor:
    """A flat integer view sharing ``t``'s storage (``t`` must be contiguous)."""
    return t.detach().view(layout_of(t.dtype).int_dtype).view(-1)


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


def _write_words(
    words: torch.Tensor, tf: TensorFaults
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``tf``'s masks to a CPU tensor's words in place; returns (flat view, old, new)."""
    flat = _flat_words(words).numpy()  # zero-copy
    old = np.take(flat, tf.index)  # faster than flat[tf.index] for a gather
    new = tf.faulty_words(old)
    flat[tf.index] = new
    return flat, old, new


def _write_quantized(site: Site, tf: TensorFaults) -> _Write:
    original = site.tensor  # kept whole: restore puts this very object back
    ints = original.int_repr().contiguous()
    _, old, new = _write_words(ints, tf)
    _set_quantized(site, _requantize(original, ints))
    return _Write(site, tf, None, old, new, tf.index, original)


def _write_cpu(site: Site, tf: TensorFaults) -> _Write:
    return _Write(site, tf, *_write_words(site.tensor, tf), tf.index, None)


def _write_device(device: torch.device, items: list[tuple[Site, TensorFaults]]) -> list[_Write]:
    """Write the faults of every tensor on one accelerator: one host-to-device copy of all
    indices, one of the XOR masks per word width (and one of the AND masks of the tensors that
    need them: none for pure flips), then three or four kernels per tensor."""
    idx_all = torch.from_numpy(np.concatenate([tf.index for _, tf in items])).to(device)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, (_, tf) in enumerate(items):
        by_dtype.setdefault(layout_of(tf.dtype).int_dtype, []).append(i)
    masks: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
    for positions in by_dtype.values():
        group = [items[i][1] for i in positions]
        needs_and = [not keeps_every_bit(tf.and_mask) for tf in group]
        xor_dev = torch.from_numpy(np.concatenate([tf.xor_mask for tf in group])).to(device)
        ands = [tf.and_mask for tf, needs in zip(group, needs_and) if needs]
        and_dev = torch.from_numpy(np.concatenate(ands)).to(device) if ands else None
        at = at_and = 0
        for i, tf, needs in zip(positions, group, needs_and):
            a = None
            if needs:
                a = and_dev[at_and : at_and + tf.n_words]
                at_and += tf.n_words
            masks[i] = (a, xor_dev[at : at + tf.n_words])
            at += tf.n_words
    writes, at = [], 0
    for i, (site, tf) in enumerate(items):
        idx = idx_all[at : at + tf.n_words]
        at += tf.n_words
        a, x = masks[i]
        flat = _flat_words(site.tensor)
        old = flat.index_select(0, idx)
        new = (old ^ x) if a is None else (old & a) ^ x
        flat.index_copy_(0, idx, new)
        writes.append(_Write(site, tf, flat, old, new, idx, None))
    return writes


def _write_all(items: list[tuple[Site, TensorFaults]]) -> list[_Write]:
    """Write faults into every listed tensor; on error, undo what was written and re-raise."""
    writes: list[_Write] = []
    by_device: dict[torch.device, list[tuple[Site, TensorFaults]]] = {}
    try:
        for site, tf in items:
            if site.kind == "quantized":
                writes.append(_write_quantized(site, tf))
            elif site.tensor.device.type == "cpu":
                writes.append(_write_cpu(site, tf))
            else:
                by_device.setdefault(site.tensor.device, []).append((site, tf))
        for device, group in by_device.items():
            writes.extend(_write_device(device, group))
    except BaseException:
        for w in reversed(writes):
            w.restore()
        raise
    return writes


def apply_faults(
    faults: FaultMap,
    model: nn.Module,
    mitigations: Sequence[Any] = (),
    sites: dict[str, Site] | None = None,
) -> InjectionHandle:
    """Apply ``faults`` (filtered by ``mitigations``) to ``model`` in place.

    Everything is checked before the first word is written: every tensor of the map must exist
    in the model with the same dtype and shape. ``sites`` (name -> :class:`Site`) saves looking
    the tensors up again when the caller has just resolved them.
    """
    for m in mitigations:
        faults = m.filter_faults(faults)
    if sites is None or any(tf.name not in sites for tf in faults.tensors):
        sites = candidate_sites(model, include_buffers=True)
    missing = [t.name for t in faults.tensors if t.name not in sites]
    if missing:
        raise ValueError(
            f"Fault map names tensors the model does not have: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    for tf in faults.tensors:
        _check_compatible(tf, sites[tf.name])
    items = [(sites[tf.name], tf) for tf in faults.tensors if tf.n_words]
    hooks: list[Any] = []
    with torch.no_grad():
        writes = _write_all(items)
    try:
        for m in mitigations:
            hooks.append(m.attach(model))
    except BaseException:
        InjectionHandle(faults, writes, hooks).restore()
        raise
    return InjectionHandle(faults, writes, hooks)


set_applier(apply_faults)
