"""Bit-level views of tensor dtypes and the names of their bit fields.

Every supported dtype maps to a signed or unsigned integer dtype of the same width, so a tensor's
words can be read and written through ``tensor.view(int_dtype)`` with no float<->int conversion.
Bit 0 is the least significant bit. Fields (``"sign"``, ``"exponent"``, ``"mantissa"`` for floats,
``"sign"``/``"value"`` for integers) are named per dtype so users can target or protect them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BitLayout:
    """How the words of one dtype are laid out.

    Attributes:
        dtype: the tensor dtype (for quantized dtypes, the quantized dtype itself).
        int_dtype: the SIGNED integer dtype of the same width used to view the words (so an
            all-ones mask is always -1).
        width: number of bits per word.
        fields: field name -> bit indices (bit 0 = least significant).
    """

    dtype: torch.dtype
    int_dtype: torch.dtype
    width: int
    fields: dict[str, tuple[int, ...]]

    @property
    def np_int(self) -> np.dtype:
        """The numpy integer dtype matching ``int_dtype``."""
        return _NP_INT[self.int_dtype]

    @property
    def np_uint(self) -> np.dtype:
        """The unsigned numpy dtype of the same width (for mask arithmetic)."""
        return np.dtype(f"uint{self.width}")

    def resolve_bits(self, bits: Iterable[int | str] | None) -> tuple[int, ...]:
        """Turn bit indices and/or field names into a sorted tuple of distinct bit indices.

        Raises:
            ValueError: for an unknown field name or an index outside ``[0, width)``.
        """
        if bits is None:
            return tuple(range(self.width))
        out: set[int] = set()
        for b in bits:
            if isinstance(b, str):
                if b not in self.fields:
                    raise ValueError(
                        f"Unknown bit field {b!r} for dtype {dtype_name(self.dtype)}.\n"
                        f"  expected one of: {sorted(self.fields)}\n  got: {b!r}"
                    )
                out.update(self.fields[b])
            elif isinstance(b, (int, np.integer)) and not isinstance(b, bool):
                if not 0 <= int(b) < self.width:
                    raise ValueError(
                        f"Bit index out of range for dtype {dtype_name(self.dtype)}.\n"
                        f"  expected an integer in [0, {self.width})\n  got: {b}"
                    )
                out.add(int(b))
            else:
                raise TypeError(
                    f"Expected bit indices (int) or field names (str), but got {b!r} "
                    f"of type {type(b).__name__}."
                )
        if not out:
            raise ValueError("Expected at least one bit in `bits`, but got an empty selection.")
        return tuple(sorted(out))

    @property
    def value_np(self) -> np.dtype:
        """For integer and quantized dtypes, the numpy dtype of the (integer) values."""
        unsigned = self.dtype in (torch.uint8, torch.quint8)
        return np.dtype(f"uint{self.width}") if unsigned else self.np_int

    def mask(self, bits: Sequence[int]) -> int:
        """Integer with the given bits set, as a signed value of this layout's width."""
        m = 0
        for b in bits:
            m |= 1 << b
        return int(np.array(m, dtype=self.np_uint).view(self.np_int))


_NP_INT = {
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
}


def _float_fields(width: int, exp_bits: int) -> dict[str, tuple[int, ...]]:
    man = width - 1 - exp_bits
    return {
        "sign": (width - 1,),
        "exponent": tuple(range(man, width - 1)),
        "mantissa": tuple(range(man)),
    }


def _int_fields(width: int, signed: bool) -> dict[str, tuple[int, ...]]:
    if signed:
        return {"sign": (width - 1,), "value": tuple(range(width - 1))}
    return {"value": tuple(range(width))}


def _build_layouts() -> dict[torch.dtype, BitLayout]:
    table: list[tuple[torch.dtype, torch.dtype, int, dict[str, tuple[int, ...]]]] = [
        (torch.float64, torch.int64, 64, _float_fields(64, 11)),
        (torch.float32, torch.int32, 32, _float_fields(32, 8)),
        (torch.float16, torch.int16, 16, _float_fields(16, 5)),
        (torch.bfloat16, torch.int16, 16, _float_fields(16, 8)),
        (torch.int64, torch.int64, 64, _int_fields(64, True)),
        (torch.int32, torch.int32, 32, _int_fields(32, True)),
        (torch.int16, torch.int16, 16, _int_fields(16, True)),
        (torch.int8, torch.int8, 8, _int_fields(8, True)),
        (torch.uint8, torch.int8, 8, _int_fields(8, False)),
        # Quantized tensors are injected through their integer representation.
        (torch.qint8, torch.int8, 8, _int_fields(8, True)),
        (torch.quint8, torch.int8, 8, _int_fields(8, False)),
        (torch.qint32, torch.int32, 32, _int_fields(32, True)),
    ]
    float8 = {
        "float8_e4m3fn": 4,
        "float8_e4m3fnuz": 4,
        "float8_e5m2": 5,
        "float8_e5m2fnuz": 5,
    }
    for name, exp_bits in float8.items():
        dt = getattr(torch, name, None)
        if dt is not None:
            table.append((dt, torch.int8, 8, _float_fields(8, exp_bits)))
    e8m0 = getattr(torch, "float8_e8m0fnu", None)
    if e8m0 is not None:  # exponent-only format (MX scales): no sign, no mantissa
        table.append((e8m0, torch.int8, 8, {"exponent": tuple(range(8))}))
    return {dt: BitLayout(dt, it, w, f) for dt, it, w, f in table}


LAYOUTS: dict[torch.dtype, BitLayout] = _build_layouts()
"""Every dtype the injector supports, with its bit layout."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of :func:`dtype_name`; raises ``TypeError`` for an unsupported name."""
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or dt not in LAYOUTS:
        raise TypeError(f"Unsupported dtype name {name!r}; supported: {supported_dtypes()}")
    return dt


def supported_dtypes() -> list[str]:
    """Names of all dtypes with a bit layout."""
    return [dtype_name(d) for d in LAYOUTS]


def layout_of(dtype: torch.dtype) -> BitLayout:
    """The :class:`BitLayout` of ``dtype``.

    Raises:
        TypeError: if the dtype has no bit layout (e.g. bool, complex).
    """
    try:
        return LAYOUTS[dtype]
    except KeyError:
        raise TypeError(
            f"Unsupported dtype for fault injection.\n"
            f"  expected one of: {supported_dtypes()}\n  got: {dtype_name(dtype)}"
        ) from None


def bit_fields(dtype: torch.dtype) -> dict[str, tuple[int, ...]]:
    """Field name -> bit indices for ``dtype`` (e.g. ``bit_fields(torch.float16)["exponent"]``)."""
    return dict(layout_of(dtype).fields)
