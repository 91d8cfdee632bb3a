"""Which evaluation samples look up which rows of a model's embedding tables.

A fault in row ``r`` of an embedding table changes the output only of the samples that look up
``r`` (for a plain lookup and a per-sample computation). :func:`record_lookups` runs the
evaluation once with forward pre-hooks on the tables (``nn.Embedding``, ``nn.EmbeddingBag``
with or without ``offsets``) and returns an :class:`IndexMap`: per table, row -> sample ids in
compressed (CSR) form over the rows that are looked up at all, so memory is O(lookups), not
O(rows). :meth:`IndexMap.affected` turns a fault map into the samples it can change, or None
when a fault lies outside the tables (the trial is then scored in full).

Batch positions become sample ids in one of two ways: an evaluation that chunks with
:func:`sample_batches` says which samples each batch holds (padding included); otherwise the
root module's forward calls are counted in order (every table call of one forward has the same
batch size, and the batches cover the samples once, in order).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..faults.faultmap import FaultMap
from .targets import candidate_sites

__all__ = ["IndexMap", "TableLookupError", "TableRows", "find_tables", "record_lookups",
           "sample_batches"]

_TABLE_TYPES = (nn.Embedding, nn.EmbeddingBag)
_batch = threading.local()  # .ids: sample ids of the batch being evaluated (sample_batches)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (numpy 2's hash-based ``np.unique`` is ~20x
    slower on the lookup arrays here)."""
    a = np.sort(np.asarray(a, np.int64))
    if len(a) < 2:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


class TableLookupError(ValueError):
    """The evaluation's lookups cannot be mapped to samples, or a declared table is no table."""


def sample_batches(n_samples: int, indices: torch.Tensor | Sequence[int] | None = None,
                   batch_size: int = 1024, multiple: int = 16
                   ) -> Iterator[tuple[torch.Tensor, int]]:
    """Chunk sample ids into batches of one shape family, for a split evaluation's ``outputs``.

    Each batch holds up to ``batch_size`` ids, padded to a multiple of ``multiple`` by repeating
    its last id, so no sample falls into a kernel's scalar tail (on CPUs the vectorized body and
    the tail round differently): a sample's output is then the same whichever batch it is in,
    which is what exact re-scoring needs. Drop the padding rows: ``out[:n_real]``. While the
    caller evaluates a batch, :func:`record_lookups` knows which samples it holds.

    Args:
        n_samples: samples of the evaluation data.
        indices: the samples to evaluate (None: all, in order).
        batch_size: ids per batch before padding (>= 1).
        multiple: pad every batch to a multiple of this (>= 1; 1 = no padding).

    Yields:
        ``(ids, n_real)``: int64 CPU ids (padded) and how many of them are real.

    Example:
        >>> [(ids.tolist(), n) for ids, n in sample_batches(5, batch_size=3, multiple=2)]
        [([0, 1, 2, 2], 3), ([3, 4], 2)]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an integer >= 1, but got {batch_size!r}.")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"Expected `multiple` to be an integer >= 1, but got {multiple!r}.")
    ids_all = check_indices(indices, n_samples)
    for start in range(0, len(ids_all), batch_size):
        ids = ids_all[start:start + batch_size]
        n_real = len(ids)
        pad = -n_real % multiple
        if pad:
            ids = torch.cat([ids, ids[-1:].expand(pad)])
        old = getattr(_batch, "ids", None)
        _batch.ids = ids
        try:
            yield ids, n_real
        finally:
            _batch.ids = old


def check_indices(indices: torch.Tensor | Sequence[int] | np.ndarray | None,
                  n_samples: int) -> torch.Tensor:
    """``indices`` as a 1-D int64 CPU tensor of sample ids in ``[0, n_samples)`` (all if None)."""
    if indices is None:
        return torch.arange(n_samples)
    ids = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor)
                          else indices).to("cpu")
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"Expected `indices` to be a 1-D integer tensor of sample ids, but got "
                         f"{ids.dtype} {tuple(ids.shape)}.")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_samples):
        raise ValueError(f"Expected sample ids in [0, {n_samples}), but got ids in "
                         f"[{int(ids.min())}, {int(ids.max())}].")
    return ids


def find_tables(model: nn.Module, tables: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The embedding tables of ``model``: parameter name (as fault maps name it) -> module.

    Args:
        model: the model.
        tables: None: every ``nn.Embedding``/``nn.EmbeddingBag`` whose weight is used by no
            other module and that does not renormalize rows (``max_norm``); else exactly these
            parameter names, each of which must be such a table's weight.

    Raises:
        TableLookupError: a declared name that is not the weight of a plain embedding lookup.
    """
    names = {id(site.tensor): name for name, site in candidate_sites(model).items()}
    users: dict[int, list[nn.Module]] = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            users.setdefault(id(p), []).append(mod)
    found: dict[str, nn.Module] = {}
    plain: dict[str, str] = {}  # parameter name -> why it is not a plain table ("" if it is)
    for mod in model.modules():
        if isinstance(mod, _TABLE_TYPES):
            name = names[id(mod.weight)]
            shared = [type(m).__name__ for m in users[id(mod.weight)]
                      if not isinstance(m, _TABLE_TYPES)]
            why = (f"its weight is also used by {shared}" if shared else
                   "it renormalizes rows in place (max_norm)" if mod.max_norm is not None else
                   "")
            found.setdefault(name, mod)
            plain[name] = plain.get(name) or why
    if tables is None:
        return {n: m for n, m in found.items() if not plain[n]}
    out: dict[str, nn.Module] = {}
    params = dict(model.named_parameters())
    for name in tables:
        if name in found and not plain[name]:
            out[name] = found[name]
            continue
        if name in found:
            why = plain[name]
        elif name in params or name in names.values():
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            why = f"it is the {name.rpartition('.')[2]!r} of a {type(owner).__name__}"
        else:
            close = difflib.get_close_matches(name, list(params), n=3, cutoff=0.5)
            raise TableLookupError(f"Declared table {name!r} is not a parameter of "
                               f"{type(model).__name__}.\n  closest names: {close}")
        raise TableLookupError(
            f"Expected every declared table to be the weight of an nn.Embedding or "
            f"nn.EmbeddingBag that only looks rows up (re-scoring sees which rows each sample "
            f"reads only there), but {name!r} is not: {why}.\nRemove it from `tables`; its "
            "faults are then scored in full.")
    return out


def _rows_per_position(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor,
                                                                            torch.Tensor, int]:
    """``(batch positions, rows, batch size)`` of one table call: every row each sample reads."""
    x = args[0] if args else kwargs["input"]
    offsets = args[1] if len(args) > 1 else kwargs.get("offsets")
    x = x.detach().to("cpu", torch.long)
    if isinstance(mod, nn.EmbeddingBag) and offsets is not None and x.dim() == 1:
        offsets = offsets.detach().to("cpu", torch.long)
        n_bags = len(offsets) - (1 if mod.include_last_offset else 0)
        pos = torch.searchsorted(offsets[:n_bags], torch.arange(len(x)), right=True) - 1
        end = int(offsets[-1]) if mod.include_last_offset else len(x)
        return pos[:end], x[:end], n_bags
    if x.dim() == 0:
        raise TableLookupError(f"A {type(mod).__name__} was called with a 0-d index; re-scoring "
                           "needs a batch dimension first.")
    rows = x.reshape(x.shape[0], -1)
    pos = torch.arange(rows.shape[0]).repeat_interleave(rows.shape[1])
    return pos, rows.reshape(-1), rows.shape[0]


@dataclass(frozen=True)
class TableRows:
    """Row -> samples of one table, over the rows some sample looks up (CSR).

    Attributes:
        name: the table's parameter name. num_rows, dim: its shape (flat index // dim = row).
        rows: sorted distinct rows looked up. indptr: ``samples[indptr[i]:indptr[i+1]]`` are
            the (sorted, distinct) samples that look up ``rows[i]``.
    """

    name: str
    num_rows: int
    dim: int
    rows: np.ndarray
    indptr: np.ndarray
    samples: np.ndarray

    @functools.cached_property
    def read_mask(self) -> np.ndarray:
        """``[num_rows]`` bool: whether some sample looks the row up (built on first use)."""
        mask = np.zeros(self.num_rows, bool)
        mask[self.rows] = True
        return mask

    def _read_positions(self, rows: np.ndarray) -> np.ndarray:
        """Indices into ``self.rows`` of those of ``rows`` some sample looks up."""
        pos = np.searchsorted(self.rows, rows)
        hit = pos < len(self.rows)
        hit[hit] = self.rows[pos[hit]] == rows[hit]
        return pos[hit]

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """The samples of every row in ``rows`` (distinct rows), with repeats across rows."""
        pos = self._read_positions(rows)
        if not len(pos):
            return np.empty(0, np.int64)
        starts, ends = self.indptr[pos], self.indptr[pos + 1]
        lengths = ends - starts
        at = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return self.samples[at + np.arange(int(lengths.sum()))]

    def samples_of(self, rows: np.ndarray) -> np.ndarray:
        """Samples (sorted, distinct) that look up any of ``rows``."""
        return sorted_unique(self._gather(sorted_unique(rows)))

    def lookups(self, row: int) -> int:
        """How many samples look up ``row``."""
        i = int(np.searchsorted(self.rows, row))
        return int(self.indptr[i + 1] - self.indptr[i]) if i < len(self.rows) and \
            self.rows[i] == row else 0


@dataclass(frozen=True)
class IndexMap:
    """Per table, which evaluation samples look up each row; built by :func:`record_lookups`.

    Attributes:
        tables: parameter name -> :class:`TableRows`.
        n_samples: evaluation samples.
        fingerprint: sha256 of every lookup the evaluation made (which sample read which row,
            in order): golden outputs carry the fingerprint of their pass, so outputs and map
            computed on different data are told apart.
    """

    tables: dict[str, TableRows]
    n_samples: int
    fingerprint: str

    def affected(self, faults: FaultMap) -> np.ndarray | None:
        """The samples whose output ``faults`` can change (sorted int64; empty: none), or None
        when a fault lies outside the tables (score in full)."""
        hit = np.zeros(self.n_samples, bool)  # O(lookups gathered + samples), no sort
        for tf in faults.tensors:
            if not tf.n_words:
                continue
            table = self._table_of(tf.name, tf.shape)
            if table is None:
                return None
            hit[table._gather(sorted_unique(tf.index // table.dim))] = True
        return np.flatnonzero(hit).astype(np.int64)

    def _table_of(self, name: str, shape: Sequence[int]) -> TableRows | None:
        table = self.tables.get(name)
        if table is not None and tuple(shape) != (table.num_rows, table.dim):
            raise ValueError(f"Fault map does not fit table {name!r}.\n  expected: "
                             f"{(table.num_rows, table.dim)}\n  got: {tuple(shape)}")
        return table

    def unread_words(self, name: str, shape: Sequence[int]) -> int:
        """Words of tensor ``name`` that the evaluation never reads: those of the table rows no
        sample looks up (0 for a tensor that is not one of the tables: read, as far as known)."""
        table = self._table_of(name, shape)
        return 0 if table is None else (table.num_rows - len(table.rows)) * table.dim

    def words_read(self, faults: FaultMap) -> int:
        """Faulted words of ``faults`` that the evaluation reads: every one outside the tables,
        and those in a table row some sample looks up. 0: no output can change."""
        n = 0
        for tf in faults.tensors:
            table = self._table_of(tf.name, tf.shape) if tf.n_words else None
            if table is None:
                n += tf.n_words
                continue
            n += int(np.count_nonzero(table.read_mask[tf.index // table.dim]))  # O(faults)
        return n

    @property
    def n_lookups(self) -> int:
        """(row, sample) pairs stored over all tables."""
        return sum(len(t.samples) for t in self.tables.values())


class _Recorder:
    """Forward pre-hooks that log, per table call, which sample read which row."""

    def __init__(self, model: nn.Module, tables: dict[str, nn.Module]) -> None:
        self.pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in tables}
        self.digest = hashlib.sha256()
        self.seen = 0  # samples covered by counted forwards (no sample_batches)
        self.used_batches = False
        self._forward: tuple[int, int] | None = None  # (first id, batch size) of this forward
        self._handles = [model.register_forward_pre_hook(self._root)]
        for name, mod in tables.items():
            self._handles.append(mod.register_forward_pre_hook(
                self._table(name), with_kwargs=True))

    def _root(self, module: nn.Module, args: Any) -> None:
        self._forward = None

    def _table(self, name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            pos, rows, size = _rows_per_position(mod, args, kwargs)
            ids = getattr(_batch, "ids", None)
            if ids is not None:
                self.used_batches = True
                if size != len(ids):
                    raise TableLookupError(
                        f"Table {name!r} was called with a batch of {size} samples inside a "
                        f"sample_batches batch of {len(ids)}; evaluate exactly the batch's ids.")
                sample = ids[pos]
            else:
                if self._forward is None:
                    self._forward = (self.seen, size)
                    self.seen += size
                first, batch = self._forward
                if size != batch:
                    raise TableLookupError(
                        f"Table {name!r} was called with batch size {size}, another table in "
                        f"the same forward with {batch}: the samples of a lookup are unknown. "
                        "Chunk the evaluation with pytei_ray.injection.sample_batches.")
                sample = pos + first
            self.pairs[name].append((sample, rows))
            self.digest.update(name.encode())
            self.digest.update(sample.numpy().tobytes())
            self.digest.update(rows.numpy().tobytes())
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def record_lookups(model: nn.Module, run: Callable[[nn.Module], Any], n_samples: int | None,
                   tables: dict[str, nn.Module]) -> tuple[IndexMap, Any]:
    """Run ``run(model)`` (the evaluation) with hooks on ``tables`` and return what it looked up.

    Args:
        model: the model (its weights are not touched).
        run: evaluates every sample once, e.g. ``lambda m: split.outputs(m, data)``.
        n_samples: samples of the evaluation; None: the length of what ``run`` returns.
        tables: parameter name -> table module (:func:`find_tables`).

    Returns:
        ``(IndexMap, run's result)``.

    Raises:
        TableLookupError: lookups that cannot be mapped to samples, or counted forwards that do not
            cover ``n_samples``.
    """
    rec = _Recorder(model, tables)
    try:
        with torch.no_grad():
            result = run(model)
    finally:
        rec.remove()
    if n_samples is None:
        n_samples = len(result)
    if not rec.used_batches and rec.seen not in (0, n_samples):
        raise TableLookupError(
            f"The evaluation's forward passes looked up rows for {rec.seen} samples, but it has "
            f"{n_samples}; chunk it with pytei_ray.injection.sample_batches so that every "
            "lookup is tied to its sample.")
    built = {}
    for name, mod in tables.items():
        weight = mod.weight
        pairs = rec.pairs[name]
        samples = torch.cat([p[0] for p in pairs]).numpy() if pairs else np.empty(0, np.int64)
        rows = torch.cat([p[1] for p in pairs]).numpy() if pairs else np.empty(0, np.int64)
        if len(samples) and (samples.max() >= n_samples):
            raise TableLookupError(
                f"Expected outputs() to return one row per evaluation sample, but table {name!r} "
                f"was looked up for sample {samples.max()} and there are {n_samples} rows.")
        key = sorted_unique(rows * np.int64(n_samples) + samples)  # by row, then sample
        r, s = key // n_samples, key % n_samples
        starts = np.flatnonzero(np.diff(r, prepend=-1)) if len(r) else np.empty(0, np.int64)
        uniq = r[starts]
        indptr = np.append(starts, len(r)).astype(np.int64)
        built[name] = TableRows(name, int(weight.shape[0]), int(weight.shape[1]), uniq, indptr, s)
    rec.digest.update(str(n_samples).encode())
    return IndexMap(built, int(n_samples), rec.digest.hexdigest()), result
