"""A campaign's post-stratification on a bit class: the declaration and the row columns.

Trials sample exactly as in an unstratified campaign (same ids, seeds and maps); each row adds
which stratum its sampled faults fell in and the exact weights, so that the report can combine
the unstratified interval with the stratified one from the rows alone (docs/strata.md,
:func:`pytei_ray.stats.stratified.estimate_from_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .faultmap import FaultMap
from .strata import CLASS_NAMES, SiteClasses, bit_class_strata, count_in_class

__all__ = ["STRATA_COLUMNS", "ClassStrata"]

#: Row columns a post-stratified campaign adds (name -> schema type), see :class:`ClassStrata`.
STRATA_COLUMNS = {"n_faults_class": "int", "p_class_hit": "float", "stratum": "str",
                  "stratum_weight": "float"}
_FIELD_NAMES = frozenset({"sign", "exponent", "mantissa", "value"}) | CLASS_NAMES


@dataclass(frozen=True)
class ClassStrata:
    """A campaign's post-stratification on a bit class (docs/strata.md): each trial samples as
    an unstratified one does, and its row says which stratum its faults fell in.

    The strata are :func:`bit_class_strata` ``(1)``: golden (no fault), no fault in the class
    with at least one elsewhere (``"C0/O1-"``), at least one in the class (``"C1-/O0-"``).

    Args:
        bits: the class (field names, ``"exponent_msb"``, bit indices).
        share: the part of the error the stratified interval gets (the unstratified one the
            rest), fixed before any trial (:func:`pytei_ray.stats.stratified.post_stratified_mean`).

    Example:
        >>> ClassStrata("exponent_msb").to_spec()
        {'bits': ['exponent_msb'], 'share': 0.25}
    """

    bits: tuple[int | str, ...] | int | str = "exponent_msb"
    share: float = 0.25

    def __post_init__(self) -> None:
        bits = (self.bits,) if isinstance(self.bits, (int, str)) else tuple(self.bits)
        for b in bits:
            bad_str = isinstance(b, str) and b not in _FIELD_NAMES
            bad_int = not isinstance(b, str) and (isinstance(b, bool) or not isinstance(b, int)
                                                  or not 0 <= b < 64)
            if bad_str or bad_int:
                raise ValueError(f"Expected the class `bits` to be field names "
                                 f"{sorted(_FIELD_NAMES)} or bit indices in [0, 64), but got "
                                 f"{b!r}.")
        if not bits:
            raise ValueError("Expected the class `bits` to name at least one bit, got ().")
        if isinstance(self.share, bool) or not isinstance(self.share, (int, float)) or \
                not 0.0 < self.share < 1.0:
            raise ValueError(f"Expected argument `share` in (0, 1), but got {self.share!r}.")
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "share", float(self.share))

    def to_spec(self) -> dict[str, object]:
        """The design as JSON-able data (the campaign spec's ``"strata"`` key)."""
        return {"bits": list(self.bits), "share": self.share}

    def row_columns(self, fmap: FaultMap, split: SiteClasses, rate: float) -> dict[str, object]:
        """The :data:`STRATA_COLUMNS` of a trial's row, from its sampled map (before any
        mitigation) and the class split of its targets (:func:`site_classes`): the class
        count, ``P(>= 1 class fault)`` at ``rate`` (exact), the stratum and its weight."""
        golden, none_in, hit = bit_class_strata(1)
        k = count_in_class(fmap, self.bits)
        stratum = hit if k else (none_in if fmap.n_faults else golden)
        return {"n_faults_class": k, "p_class_hit": hit.probability(split, rate),
                "stratum": stratum.key(), "stratum_weight": stratum.probability(split, rate)}
