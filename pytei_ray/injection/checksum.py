"""A cheap, bit-exact checksum of a module's state, computed on the tensors' own device."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..faults.dtypes import LAYOUTS
from .targets import candidate_sites

_BLOCK = 1 << 20


def _tensor_sums(t: torch.Tensor) -> tuple[int, int]:
    """(plain sum, position-weighted sum) of the words of ``t`` as int64, wrapping."""
    ints = t.int_repr() if t.is_quantized else t.detach()
    if ints.dtype in LAYOUTS and ints.dtype.is_floating_point:
        ints = ints.contiguous().view(LAYOUTS[ints.dtype].int_dtype)
    flat = ints.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.int8)
    ramp = torch.arange(1, min(_BLOCK, flat.numel()) + 1, device=flat.device, dtype=torch.int64)
    s1 = torch.zeros((), dtype=torch.int64, device=flat.device)
    s2 = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, flat.numel(), _BLOCK):
        block = flat[start : start + _BLOCK].to(torch.int64)
        s1 += block.sum()
        s2 += (block * ramp[: block.numel()]).sum() + start * block.sum()
    return int(s1), int(s2)


def state_checksum(model: nn.Module) -> str:
    """Hex digest over every parameter, quantized weight and buffer (names, dtypes, shapes, words).

    A single flipped bit always changes it; it is cheap enough to run before every chunk of
    trials (one pass over the weights on their own device, no copy to the host).
    """
    h = hashlib.sha256()
    for name, site in sorted(candidate_sites(model, include_buffers=True).items()):
        t = site.tensor
        s1, s2 = _tensor_sums(t)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{s1}|{s2};".encode())
    return h.hexdigest()
