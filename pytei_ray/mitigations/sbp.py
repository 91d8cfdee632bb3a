"""Selective bit protection (SBP): protected bits never change, as with ECC on those bits only."""

from __future__ import annotations

from collections.abc import Iterable

from ..faults.dtypes import dtype_name, layout_of
from ..faults.faultmap import FaultMap
from .base import Mitigation


class SBP(Mitigation):
    """Remove faults on protected bits from the fault map (PyTEI's SBP clears bits 31..23 of fp32).

    Args:
        bits: bit indices and/or field names to protect, resolved per dtype. The default protects
            ``("sign", "exponent")`` of floating-point tensors (and the sign of signed integers).

    Example:
        >>> SBP()
        SBP(bits=('sign', 'exponent'))
    """

    name = "sbp"

    def __init__(self, bits: Iterable[int | str] | None = None) -> None:
        self.bits = tuple(bits) if bits is not None else None

    def _protected(self, dtype) -> tuple[int, ...]:
        lay = layout_of(dtype)
        if self.bits is not None:
            return lay.resolve_bits(self.bits)
        fields = [f for f in ("sign", "exponent") if f in lay.fields]
        return lay.resolve_bits(fields) if fields else ()

    def filter_faults(self, faults: FaultMap) -> FaultMap:
        keep_and, keep_xor = {}, {}
        for t in faults.tensors:
            if t.dtype in keep_and:
                continue
            try:
                bits = self._protected(t.dtype)
            except ValueError as e:
                raise ValueError(
                    f"SBP cannot protect {t.name!r} ({dtype_name(t.dtype)}): {e}"
                ) from e
            mask = layout_of(t.dtype).mask(bits) if bits else 0
            keep_and[t.dtype], keep_xor[t.dtype] = mask, ~mask
        return faults.filtered(keep_and, keep_xor)

    def __repr__(self) -> str:
        return f"SBP(bits={self.bits if self.bits is not None else ('sign', 'exponent')!r})"
