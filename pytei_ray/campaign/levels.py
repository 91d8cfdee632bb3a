"""Factor levels that carry attributes: extra typed columns in every result row.

A level of a named factor (``models``, ``targets``, ``error_models``, ``mitigations``) may be
wrapped in :class:`Level` to attach scalar attributes, e.g. the number format of a model or the
bit an error model flips::

    models={"vit-bf16": Level(factory, format="bf16")}
    error_models={"bit3": Level(OneBitFlip(3), bit=3)}

Every attribute becomes a column of every row (``format``, ``bit``), typed ``int``, ``float`` or
``str``; levels that do not declare it leave it null. The manifest lists the columns
(``spec["factors"]``), so the report groups by them (and draws the by-bit plot for ``bit``).

An attribute declared by levels of two point factors (models, targets, error models) *pairs*
them: only combinations whose values agree are trials. So ``format="bf16"`` on a model and on
an error model that flips bf16 bits keeps that error model away from the fp32 model, whose word
is wider. A level that does not declare the attribute pairs with every level.

The rules are checked once, at ``Campaign`` construction (:func:`split_levels`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from pytei_ray.columns import LEVEL_FACTORS, RESERVED, metric_of_golden
from pytei_ray.errors import CampaignSpecError

__all__ = ["ATTR_TYPES", "BitFlipIn", "Level", "OneBitFlip", "bit_levels", "pairs",
           "split_levels"]

#: Column type of an attribute, by the Python type of its values.
ATTR_TYPES = {int: "int", float: "float", str: "str"}
#: The factors of a point whose levels may carry attributes (the BER is a number).
_POINT_FACTORS = LEVEL_FACTORS[:3]


class Level:
    """A factor level with attributes that become columns of its rows.

    Args:
        value: the level itself (a model factory, a target spec, an error-model factory, a
            mitigation), exactly what the factor takes without ``Level``.
        **attrs: column name -> an ``int``, ``float`` or ``str`` (not bool, not NaN).

    Example:
        >>> Level(len, format="bf16", bits=16)
        Level(<built-in function len>, format='bf16', bits=16)
    """

    __slots__ = ("value", "attrs")

    def __init__(self, value: Any, /, **attrs: int | float | str) -> None:
        self.value = value
        self.attrs = dict(attrs)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.attrs.items())
        return f"Level({self.value!r}{extra})"


def _kind(arg: str, name: str, value: object) -> tuple[str, int | float | str]:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real, str)):
        raise CampaignSpecError(
            f"Expected attribute `{name}` of {arg} to be an int, float or str (a column value), "
            f"but got {value!r} of type {type(value).__name__}.")
    if isinstance(value, numbers.Integral):
        return "int", int(value)
    if isinstance(value, str):
        return "str", str(value)
    if not math.isfinite(float(value)):
        raise CampaignSpecError(
            f"Expected attribute `{name}` of {arg} to be a finite number, but got {value!r}.")
    return "float", float(value)


def split_levels(factors: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Unwrap :class:`Level` values and check their attributes.

    Args:
        factors: factor (``"models"``, ...) -> level name -> value or ``Level``.

    Returns:
        ``(plain, columns)``: the factors with plain values, and column name ->
        ``{"type": "int"|"float"|"str", <factor>: {level: value}}`` (empty if no attributes).

    Raises:
        CampaignSpecError: a reserved or invalid column name, a value that is not a scalar,
            levels of one factor declaring different attribute names, a column with values of
            different types, or an attribute on a mitigation shared with a point factor.
    """
    plain: dict[str, dict[str, Any]] = {}
    columns: dict[str, dict[str, Any]] = {}
    for factor, levels in factors.items():
        plain[factor] = {}
        names: tuple[str, ...] | None = None
        first = ""
        for level, value in levels.items():
            if not isinstance(value, Level):
                plain[factor][level] = value
                continue
            plain[factor][level] = value.value
            arg = f"{factor}[{level!r}]"
            declared = tuple(sorted(value.attrs))
            if names is None:
                names, first = declared, level
            elif declared != names:
                raise CampaignSpecError(
                    f"Expected every Level of `{factor}` to declare the same attributes (they are "
                    f"columns of every row), but {first!r} declares {list(names)} and {level!r} "
                    f"declares {list(declared)}.")
            for name, v in value.attrs.items():
                _check_column(arg, name)
                kind, v = _kind(arg, name, v)
                col = columns.setdefault(name, {"type": kind})
                if col["type"] != kind:
                    if {col["type"], kind} == {"int", "float"}:
                        col["type"] = "float"
                    else:
                        raise CampaignSpecError(
                            f"Expected attribute `{name}` to have one type in every level, but "
                            f"{arg} gives {type(v).__name__} {v!r} where other levels give "
                            f"{col['type']}.")
                col.setdefault(factor, {})[level] = v
    for name, col in columns.items():
        if "mitigations" in col and any(f in col for f in _POINT_FACTORS):
            raise CampaignSpecError(
                f"Attribute `{name}` is declared by mitigations and by "
                f"{[f for f in _POINT_FACTORS if f in col]}: an attribute shared by two factors "
                "pairs their levels, and mitigations cannot be paired (every mitigation of a "
                "point sees the same faults). Rename one of them.")
    for col in columns.values():  # float columns hold floats
        if col["type"] == "float":
            for factor in LEVEL_FACTORS:
                if factor in col:
                    col[factor] = {k: float(v) for k, v in col[factor].items()}
    return plain, columns


def _check_column(arg: str, name: str) -> None:
    if not name.isidentifier() or metric_of_golden(name) is not None or name in RESERVED:
        raise CampaignSpecError(
            f"Expected the attribute names of {arg} to be new column names (identifiers, not "
            f"starting with 'golden_', not one of the row's columns {sorted(RESERVED)}), "
            f"but got {name!r}.")


def pairs(columns: Mapping[str, Mapping[str, Any]], model: str, target: str,
          error_model: str) -> bool:
    """Whether a point's levels agree on every attribute that two of them declare."""
    for col in columns.values():
        seen = [col[f][lv] for f, lv in zip(_POINT_FACTORS, (model, target, error_model))
                if f in col and lv in col[f]]
        if len(seen) > 1 and any(v != seen[0] for v in seen[1:]):
            return False
    return True


def row_values(columns: Mapping[str, Mapping[str, Any]], levels: Mapping[str, str]
               ) -> dict[str, Any]:
    """Column values of a trial given its level per factor (None where no level declares one)."""
    out: dict[str, Any] = {}
    for name, col in columns.items():
        value = None
        for factor, level in levels.items():
            if factor in col and level in col[factor]:
                value = col[factor][level]
                break
        out[name] = value
    return out


class OneBitFlip:
    """Error-model factory of a bit-position sweep: exactly one flip, at bit ``bit`` of one
    uniformly drawn targeted word; the campaign's BER is ignored (it only seeds the draw).

    Args:
        bit: bit index (0 = least significant); it must fit the targeted words' dtype, which
            the worker checks when it builds the model, before any trial.

    Example:
        >>> OneBitFlip(30)(1e-6)
        BitFlip(n=1, bits=(30,))
    """

    def __init__(self, bit: int) -> None:
        if isinstance(bit, bool) or not isinstance(bit, numbers.Integral) or not 0 <= bit < 64:
            raise CampaignSpecError(f"Expected `bit` to be an integer in [0, 64), but got {bit!r}.")
        self.bit = int(bit)

    def __call__(self, ber: float) -> Any:
        from pytei_ray.faults.models import BitFlip  # lazy: torch/numpy only where trials run

        del ber  # one fault whatever the rate
        return BitFlip(n=1, bits=[self.bit])

    def __repr__(self) -> str:
        return f"OneBitFlip({self.bit})"


class BitFlipIn:
    """Error-model factory that flips bits of one class (bit indices and/or field names): at
    the campaign's BER (a rate), or exactly ``n`` flips per site and step (a count; the BER
    then only seeds the draw).

    Args:
        bits: bit indices and/or field names (``"sign"``, ``"exponent"``, ``"mantissa"``).
        n: None for a rate, else the exact number of flips.

    Example:
        >>> BitFlipIn("exponent")(1e-5)
        BitFlip(ber=1e-05, bits=('exponent',))
        >>> BitFlipIn([30], n=1)(1e-5)
        BitFlip(n=1, bits=(30,))
    """

    def __init__(self, bits: int | str | list[int | str], n: int | None = None) -> None:
        items = [bits] if isinstance(bits, (int, str)) else list(bits)
        if not items or not all(isinstance(b, (int, str)) and not isinstance(b, bool)
                                for b in items):
            raise CampaignSpecError(f"Expected `bits` to be bit indices and/or field names, but "
                                    f"got {bits!r}.")
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)
                              or n < 1):
            raise CampaignSpecError(f"Expected `n` to be None (a rate) or an int >= 1, but got "
                                    f"{n!r}.")
        self.bits, self.n = tuple(items), None if n is None else int(n)

    def __call__(self, ber: float) -> Any:
        from pytei_ray.faults.models import BitFlip  # lazy: torch/numpy only where trials run

        if self.n is not None:
            return BitFlip(n=self.n, bits=list(self.bits))
        return BitFlip(ber, bits=list(self.bits))

    def __repr__(self) -> str:
        return f"BitFlipIn({list(self.bits)!r}{'' if self.n is None else f', n={self.n}'})"


def bit_levels(bits: range | list[int], prefix: str = "bit",
               make: Callable[[int], Any] = OneBitFlip, **attrs: int | float | str
               ) -> dict[str, Level]:
    """Error-model levels of a bit-position sweep: ``{f"{prefix}{k}": Level(make(k), bit=k)}``.

    Args:
        bits: the bit indices.
        prefix: level-name prefix (e.g. ``"fp16-bit"``).
        make: bit -> error-model factory (default: one flip at that bit).
        **attrs: further attributes of every level (e.g. ``format="fp16"`` to pair the levels
            with the models of that format).

    Example:
        >>> sorted(bit_levels(range(2), format="fp16"))
        ['bit0', 'bit1']
    """
    return {f"{prefix}{k}": Level(make(k), bit=int(k), **attrs) for k in bits}
