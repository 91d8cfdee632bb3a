"""Write faults into a tensor flowing through a model, without corrupting what others hold.

Three rules, each one a defect of earlier versions (issue 17):

* A tensor that autograd records (``requires_grad``) is never written in place: autograd may
  have saved it for backward (Tanh, Sigmoid and Exp save their output), and a write through an
  integer view bypasses its version counter, so backward would silently use the faulty value.
  Such a tensor gets a faulty *copy* through :class:`StraightThrough`, whose backward passes the
  gradient on unchanged: the fault is an identity for autograd (straight-through), and the
  gradient reaches everything upstream.
* A tensor that shares storage with something the caller or the module holds (an input passed
  by position or by keyword, a parameter or buffer, an element written earlier in the same
  call) is copied, so the caller's tensors and the weights never change.
* Otherwise (a fresh, contiguous, non-autograd output) the write is in place: no copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..faults.dtypes import layout_of
from ..faults.faultmap import TensorFaults
from ..faults.models import keeps_every_bit
from .apply import _requantize

__all__ = ["StraightThrough", "storage_ptrs", "write_faults"]


def storage_ptrs(*objs: Any) -> set[int]:
    """Storage addresses of every tensor in ``objs`` (tuples, lists and dict values searched)."""
    out: set[int] = set()
    stack = list(objs)
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.device.type != "meta" and not o.is_quantized:
                out.add(o.untyped_storage().data_ptr())
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return out


def module_ptrs(tensors: Iterable[torch.Tensor]) -> set[int]:
    """Storage addresses of a module's parameters and buffers."""
    return {t.untyped_storage().data_ptr() for t in tensors if t.device.type != "meta"}


class StraightThrough(torch.autograd.Function):
    """``forward(t, make)`` returns ``make(t)`` (a faulty copy); backward passes the gradient
    through unchanged, as if the fault were the identity."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, make: Any) -> torch.Tensor:  # grad mode is off here
        return make(t)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def write_faults(t: torch.Tensor, tf: TensorFaults, per_sample: bool = False,
                 shared: set[int] | None = None) -> tuple[torch.Tensor, Any, Any]:
    """Apply ``tf`` to ``t`` and return ``(result, old_words, new_words)``.

    Args:
        t: the tensor (any supported dtype; quantized through its integer representation).
        tf: the faults; ``tf.index`` is over the whole tensor, or over one sample (the first
            dimension) when ``per_sample``, in which case every sample is hit there.
        per_sample: see ``tf``.
        shared: storage addresses the result must not write into (the module's inputs,
            parameters and buffers). None: never write in place (always a copy). When the
            write is in place, ``t``'s address is added, so a later element aliasing it is
            copied.

    Returns:
        The faulty tensor (``t`` itself when written in place), and the old and new words at
        the faulty positions (numpy arrays for CPU tensors, device tensors otherwise).
    """
    if t.is_quantized:  # no autograd; the integer representation is a fresh tensor already
        ints = t.int_repr().contiguous()
        old, new = _write_words(ints, tf, per_sample)
        return _requantize(t, ints), old, new
    ptr = t.untyped_storage().data_ptr()
    if (shared is not None and not t.requires_grad and t.is_contiguous()
            and ptr not in shared):
        with torch.no_grad():
            old, new = _write_words(t, tf, per_sample)
        shared.add(ptr)
        return t, old, new
    words: list[Any] = []

    def make(x: torch.Tensor) -> torch.Tensor:
        copy = x.detach().clone(memory_format=torch.contiguous_format)
        words.extend(_write_words(copy, tf, per_sample))
        return copy

    if t.requires_grad:
        out = StraightThrough.apply(t, make)
    else:
        with torch.no_grad():
            out = make(t)
    return out, words[0], words[1]


def _write_words(words: torch.Tensor, tf: TensorFaults, per_sample: bool) -> tuple[Any, Any]:
    """Write ``tf``'s masks into the contiguous tensor ``words`` in place; (old, new) words."""
    lay = layout_of(tf.dtype)
    flat = words.detach().view(layout_of(words.dtype).int_dtype).view(-1)
    if per_sample:
        flat = flat.view(words.shape[0], -1)
    pure_flip = keeps_every_bit(tf.and_mask)
    if flat.device.type == "cpu":
        arr = flat.numpy()
        idx = tf.index
        old = arr[:, idx] if per_sample else np.take(arr, idx)
        new = old ^ tf.xor_mask if pure_flip else (old & tf.and_mask) ^ tf.xor_mask
        if per_sample:
            arr[:, idx] = new
        else:
            arr[idx] = new
        return old, new
    dev = flat.device
    idx = torch.from_numpy(tf.index).to(dev)
    x = torch.from_numpy(np.ascontiguousarray(tf.xor_mask, dtype=lay.np_int)).to(dev)
    old = flat.index_select(-1, idx)
    if pure_flip:
        new = old ^ x
    else:
        a = torch.from_numpy(np.ascontiguousarray(tf.and_mask, dtype=lay.np_int)).to(dev)
        new = (old & a) ^ x
    flat.index_copy_(flat.dim() - 1, idx, new)
    return old, new


def count_changed_nonfinite(dtype: torch.dtype, old: Any, new: Any) -> tuple[int, int]:
    """``(words whose value changed, NaN/Inf among the new words)`` (synchronizes a device)."""
    if isinstance(old, np.ndarray):
        old, new = torch.from_numpy(np.ascontiguousarray(old)), torch.from_numpy(
            np.ascontiguousarray(new))
    changed = int((old != new).sum())
    if not dtype.is_floating_point:
        return changed, 0
    values = new.view(dtype)
    if values.element_size() == 1:  # float8: isfinite has no kernel; the cast keeps NaN/Inf
        values = values.float()
    return changed, int((~torch.isfinite(values)).sum())
