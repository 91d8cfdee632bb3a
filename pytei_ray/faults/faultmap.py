"""The fault map: which words of which tensors get which masks. Sparse, device-free, replayable.

A :class:`FaultMap` is a pure description, ``O(faults)`` in size: per tensor the flat indices of the
hit words and an ``(and_mask, xor_mask)`` per word. Sampling it needs only tensor names, dtypes and
sizes, so it is a pure function of (seed, targets, error model, model layout): the same on any
machine, in any visiting order, on CPU or CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .dtypes import BitLayout, dtype_from_name, dtype_name, layout_of
from .models import ErrorModel, keeps_every_bit
from .sampling import bernoulli_positions, distinct_positions, rng_for

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: Writes a map into a model (``apply_faults(faults, model, mitigations)``); registered by
#: :mod:`pytei_ray.injection` when it is imported (``import pytei_ray`` does), so that this
#: package, a pure description of faults, does not depend on the one that applies them.
_applier: Callable[..., Any] | None = None


def set_applier(apply: Callable[..., Any]) -> None:
    """Register the function behind :meth:`FaultMap.apply` (done by pytei_ray.injection)."""
    global _applier
    _applier = apply


@dataclass(frozen=True)
class SiteInfo:
    """What sampling needs to know about one targeted tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class TensorFaults:
    """Faults of one tensor: flat word indices (sorted, distinct) and their masks.

    Treat the arrays as read-only: an AND mask that keeps every bit (pure flips) is a stride-0
    constant view, so a map of N flips costs N index and N XOR entries, not a third array.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    index: np.ndarray  # int64 flat indices of the hit words
    and_mask: np.ndarray  # layout.np_int, one per index
    xor_mask: np.ndarray  # layout.np_int, one per index
    n_sites: int  # fault sites sampled (bits for bit models, words for element models)

    @property
    def layout(self) -> BitLayout:
        return layout_of(self.dtype)

    @property
    def n_words(self) -> int:
        return int(self.index.size)

    def faulty_words(self, words: np.ndarray) -> np.ndarray:
        """Apply the masks to original words (numpy, same dtype as the masks); a new array."""
        if keeps_every_bit(self.and_mask):  # flips only: one pass, no AND
            return words ^ self.xor_mask
        new = words & self.and_mask
        new ^= self.xor_mask
        return new


@dataclass
class FaultSummary:
    """Per-tensor fault statistics and totals; ``str()`` renders a table."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    def __str__(self) -> str:
        cols = list(self.rows[0]) if self.rows else list(self.totals)
        table = [cols] + [[str(r.get(c, "")) for c in cols] for r in self.rows]
        table.append([str(self.totals.get(c, "")) for c in cols])
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(-1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


@dataclass
class FaultMap:
    """Sparse faults for a set of tensors, plus how they were made.

    Attributes:
        tensors: one :class:`TensorFaults` per targeted tensor (also those with no fault).
        error: the error model's key (e.g. ``"BitFlip(ber=1e-06)"``).
        unit: ``"bit"`` or ``"element"``: what one fault site is.
        seed: the seed the map was sampled with (None when loaded from elsewhere).
        n_targeted: fault sites the sampling drew from (the ``N`` of ``Binomial(N, rate)``:
            every targeted bit for bit models, every targeted element for element models);
            None for a map loaded from a file written before it was recorded. Filtering
            (SBP) keeps it: it describes the sampling, not what survived it.
    """

    tensors: list[TensorFaults]
    error: str
    unit: str
    seed: int | None = None
    n_targeted: int | None = None

    # ---- statistics --------------------------------------------------------------------------
    @property
    def n_faults(self) -> int:
        """Total fault sites (flipped/stuck bits for bit models, replaced words for others)."""
        return sum(t.n_sites for t in self.tensors)

    @property
    def n_words(self) -> int:
        """Total distinct words hit."""
        return sum(t.n_words for t in self.tensors)

    def summary(self, applied: Mapping[str, Mapping[str, int]] | None = None) -> FaultSummary:
        """Per-tensor statistics: faults and words hit; with ``applied`` (tensor name -> stats
        of one application, e.g. ``handle.per_tensor_stats()``) also bits changed and NaN/Inf
        produced. The map itself keeps no state of its applications: the statistics of one
        live on its handle (``with inj.inject(model) as faults: faults.summary()``).
        """
        rows = []
        for t in self.tensors:
            row: dict[str, Any] = {
                "tensor": t.name,
                "dtype": dtype_name(t.dtype),
                "numel": int(np.prod(t.shape, dtype=np.int64)),
                "n_faults": t.n_sites,
                "n_words": t.n_words,
            }
            if applied is not None:
                row.update(applied.get(t.name, {"n_bits_changed": 0, "n_nonfinite": 0}))
            rows.append(row)
        totals: dict[str, Any] = {
            "tensor": "TOTAL",
            "dtype": "",
            "numel": sum(r["numel"] for r in rows),
        }
        for key in ("n_faults", "n_words", "n_bits_changed", "n_nonfinite"):
            if rows and key in rows[0]:
                totals[key] = sum(r[key] for r in rows)
        return FaultSummary(rows, totals)

    # ---- transformations ---------------------------------------------------------------------
    def filtered(
        self, keep_and: dict[torch.dtype, int], keep_xor: dict[torch.dtype, int]
    ) -> FaultMap:
        """A copy with masks restricted: ``and |= keep_and``, ``xor &= keep_xor`` (per dtype).

        Words left with no effect are dropped. Used by selective bit protection (SBP).
        """
        out = []
        for t in self.tensors:
            lay = t.layout
            a = t.and_mask | lay.np_int.type(keep_and.get(t.dtype, 0))
            x = t.xor_mask & lay.np_int.type(keep_xor.get(t.dtype, -1))
            live = (a != -1) | (x != 0)
            a, x, idx = a[live], x[live], t.index[live]
            if self.unit == "bit":
                touched = (~a | x).view(lay.np_uint)
                n_sites = int(np.bitwise_count(touched).sum())
            else:
                n_sites = int(idx.size)
            out.append(replace(t, index=idx, and_mask=a, xor_mask=x, n_sites=n_sites))
        return FaultMap(out, self.error, self.unit, self.seed, self.n_targeted)

    # ---- applying ----------------------------------------------------------------------------
    def apply(self, model: nn.Module, mitigations: Sequence[Any] = ()) -> Any:
        """Write the faults into ``model`` in place; returns a handle that restores it exactly.

        The handle (:class:`~pytei_ray.injection.handles.InjectionHandle`) is a context manager
        (``with faults.apply(model) as applied: ...``) whose ``applied`` holds the statistics
        of this application. Mitigations filter the faults (SBP) and/or attach hooks
        (clipping) for the duration of the handle.
        """
        if _applier is None:  # pragma: no cover - `import pytei_ray` registers it
            raise RuntimeError("Import pytei_ray (or pytei_ray.injection) to apply fault maps.")
        return _applier(self, model, mitigations)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to a ``torch.save`` file loadable with ``weights_only=True`` (sparse, O(faults))."""
        payload = {
            "format": "pytei_ray.FaultMap/1",
            "error": self.error,
            "unit": self.unit,
            "seed": -1 if self.seed is None else self.seed,
            "n_targeted": -1 if self.n_targeted is None else self.n_targeted,
            "tensors": [
                {
                    "name": t.name,
                    "dtype": dtype_name(t.dtype),
                    "shape": list(t.shape),
                    "index": torch.from_numpy(t.index),
                    "and_mask": torch.from_numpy(np.require(t.and_mask, requirements="CW")),
                    "xor_mask": torch.from_numpy(np.require(t.xor_mask, requirements="CW")),
                    "n_sites": t.n_sites,
                }
                for t in self.tensors
            ],
        }
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaultMap:
        """Load a map written by :meth:`save`."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "pytei_ray.FaultMap/1":
            raise ValueError(f"{os.fspath(path)!r} is not a pytei_ray fault map file.")
        tensors = [
            TensorFaults(
                name=t["name"],
                dtype=dtype_from_name(t["dtype"]),
                shape=tuple(t["shape"]),
                index=t["index"].numpy(),
                and_mask=t["and_mask"].numpy(),
                xor_mask=t["xor_mask"].numpy(),
                n_sites=int(t["n_sites"]),
            )
            for t in payload["tensors"]
        ]
        seed = None if payload["seed"] < 0 else int(payload["seed"])
        n_targeted = int(payload.get("n_targeted", -1))  # absent in files of older versions
        return cls(tensors, payload["error"], payload["unit"], seed,
                   None if n_targeted < 0 else n_targeted)


def _words_faults(
    site: SiteInfo, error: ErrorModel, positions: np.ndarray, rng: np.random.Generator
) -> TensorFaults:
    """Turn sorted site positions of one tensor into per-word masks (``positions`` is reused)."""
    lay = layout_of(site.dtype)
    n_sites = int(positions.size)
    if n_sites == 0:  # the common case at low BER: no work, no allocation
        empty = np.empty(0, dtype=lay.np_int)
        return TensorFaults(site.name, site.dtype, site.shape, positions, empty, empty, 0)
    words, a, x = error._word_masks(lay, positions, rng)
    if error.sites_per_word(lay) > 1 and words.size > 1:
        dup = np.flatnonzero(words[1:] == words[:-1])
        if dup.size:  # several sites in one word: fold them into the word's first entry
            dup += 1
            words, a, x = _fold_duplicates(words, a, x, dup)
    return TensorFaults(site.name, site.dtype, site.shape, words, a, x, n_sites)


def _fold_duplicates(
    words: np.ndarray, a: np.ndarray, x: np.ndarray, dup: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge entries ``dup`` (each equal to the word before it) into their run's first entry.

    Sites of one word touch disjoint bits, so their masks compose by AND (keep) and OR (set).
    Work is O(duplicates) apart from the final compaction.
    """
    # first entry of each run: the entry before a run's first duplicate, carried along the run
    starts = np.where(np.diff(dup, prepend=-2) != 1, dup - 1, 0)
    into = np.maximum.accumulate(starts)
    at = into - np.searchsorted(dup, into)  # where each run's first entry lands after deletion
    keep = np.ones(words.size, dtype=bool)
    keep[dup] = False
    out = []
    for mask, ufunc in ((a, np.bitwise_and), (x, np.bitwise_or)):
        if mask.strides == (0,):  # a constant mask: c & c == c | c == c, nothing to fold
            out.append(mask[: mask.size - dup.size])
        else:
            merged = mask[keep]
            ufunc.at(merged, at, mask[dup])
            out.append(merged)
    return words[keep], out[0], out[1]


def sample_fault_map(sites: Sequence[SiteInfo], error: ErrorModel, seed: int) -> FaultMap:
    """Sample a :class:`FaultMap` for ``sites``: a pure function of its arguments.

    The sites of all tensors, ordered by tensor name, form one sequence; a single stream seeded
    by (seed, error) draws the hit positions over it (a Bernoulli process in rate mode, exactly
    ``n`` distinct positions in count mode), then the per-fault values tensor by tensor. So the
    result does not depend on the order of ``sites``, and costs O(faults + tensors).
    """
    ordered = sorted(sites, key=lambda s: s.name)
    sizes = np.empty(len(ordered), dtype=np.int64)
    for i, s in enumerate(ordered):
        lay = layout_of(s.dtype)
        error.check_dtype(lay)
        sizes[i] = s.numel * error.sites_per_word(lay)
    total = int(sizes.sum())
    key = error.key()
    rng = rng_for(seed, key)
    if error.rate is not None:
        pos = bernoulli_positions(total, error.rate, rng)
    else:
        assert error.n is not None
        if error.n > total:
            raise ValueError(
                f"Expected at most {total} faults (the targeted sites of {error!r}), "
                f"but `n` = {error.n}."
            )
        pos = distinct_positions(total, error.n, rng)
    bounds = np.zeros(len(ordered) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    cuts = np.searchsorted(pos, bounds)
    out = []
    for i, s in enumerate(ordered):
        seg = pos[cuts[i] : cuts[i + 1]]  # a view: `pos` is ours, so offsets are removed in place
        if seg.size:
            seg -= bounds[i]
        out.append(_words_faults(s, error, seg, rng))
    return FaultMap(out, key, error.unit, seed, n_targeted=total)
