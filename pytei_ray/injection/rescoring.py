"""Exact affected-sample re-scoring of embedding faults.

A trial whose faults all lie in embedding rows can change only the outputs of the samples that
look those rows up. With an evaluation split into per-sample ``outputs`` and a ``score`` over
them (:class:`SplitEvaluation`), the trial computes the outputs of those samples only, patches
them into the golden outputs (computed once per replica) and scores the patched vector.

"Equal" means bit for bit: :func:`prepare_rescoring` checks, per (model, mitigation), that
outputs computed for subsets of the samples (in the batch shapes re-scoring uses) equal the full
pass bit for bit, and that a model with a few table rows changed gives, re-scored, the outputs
of a full pass of the same model. Where either fails (BatchNorm in train mode, attention across
samples, kernels that round differently in other batch shapes, a table whose weight is used
outside its lookup) re-scoring is off for that (model, mitigation), with the reason.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from pytei_ray.injection import sample_batches
    >>> model = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(8, 1)).eval()
    >>> x = torch.randint(0, 50, (40, 2), generator=torch.Generator().manual_seed(0))
    >>> def outputs(model, x, indices=None):
    ...     return torch.cat([model(x[ids])[:n, 0] for ids, n in
    ...                       sample_batches(len(x), indices, batch_size=16)])
    >>> split = SplitEvaluation(outputs, lambda out, x: {"mean": float(out.double().mean())})
    >>> r = prepare_rescoring(model, x, split)
    >>> r.enabled, r.reason
    (True, None)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..faults.faultmap import FaultMap
from .lookups import IndexMap, check_indices, find_tables, record_lookups, sorted_unique

__all__ = ["Rescorer", "SplitEvaluation", "build_index_map", "prepare_rescoring", "same_bits",
           "subsample_ids"]

#: Sizes of the subsets the golden self-check re-scores (capped by the number of samples).
CHECK_SIZES = (1, 3, 17, 300)


@dataclass(frozen=True)
class SplitEvaluation:
    """An evaluation the tool can split: per-sample outputs, and metrics computed from them.

    Calling it is the full evaluation, ``score(outputs(model, data), data)``, so it serves as a
    campaign's ``evaluate`` wherever a black-box one does.

    Args:
        outputs: ``(model, data, indices=None) -> Tensor [N, ...]``: the outputs of the samples
            ``indices`` (int64 ids, in that order; None: all N). Chunk with
            :func:`~pytei_ray.injection.sample_batches` so that each sample's output is the
            same in any batch and the lookups are tied to samples.
        score: ``(outputs [N, ...], data) -> {metric: float}``, from the outputs alone.
        tables: parameter names of the embedding tables to re-score (None: every
            ``nn.Embedding``/``nn.EmbeddingBag`` that is a plain lookup).
        score_subset: ``(outputs [n, ...], data, indices [n]) -> {metric: float}``: the
            metrics of the samples ``indices`` alone (their outputs given, in that order),
            for a campaign's ``subsample`` (docs/campaign.md). Only for metrics that a random
            subset estimates without bias (means of per-sample values; two-sample rank
            statistics such as AUC-ROC); with every index it must give ``score``'s metrics.

    Example:
        >>> split = SplitEvaluation(lambda m, d, indices=None: d, lambda o, d: {"n": len(o)})
        >>> split(None, [1, 2])
        {'n': 2}
    """

    outputs: Callable[..., torch.Tensor]
    score: Callable[[torch.Tensor, Any], Mapping[str, float]]
    tables: Sequence[str] | None = None
    score_subset: Callable[[torch.Tensor, Any, torch.Tensor], Mapping[str, float]] | None = None

    def __post_init__(self) -> None:
        for arg in ("outputs", "score"):
            if not callable(getattr(self, arg)):
                raise TypeError(f"Expected argument `{arg}` to be callable, but got "
                                f"{getattr(self, arg)!r}.")
        if self.score_subset is not None and not callable(self.score_subset):
            raise TypeError(f"Expected argument `score_subset` to be None or callable, but got "
                            f"{self.score_subset!r}.")
        if self.tables is not None:
            if isinstance(self.tables, str) or not all(isinstance(t, str) for t in self.tables):
                raise TypeError(f"Expected argument `tables` to be None or a list of parameter "
                                f"names, but got {self.tables!r}.")
            object.__setattr__(self, "tables", tuple(self.tables))

    def __call__(self, model: nn.Module, data: Any) -> dict[str, float]:
        return dict(self.score(self.outputs(model, data, None), data))


#: Second word of the seed of a trial's subsample (its first is the trial seed): a stream of
#: its own, so the samples drawn do not move with the fault sampler's use of the seed.
SUBSAMPLE_STREAM = 0x5AB5A


def subsample_ids(seed: int, n: int, m: int) -> np.ndarray:
    """``min(m, n)`` distinct sample ids out of ``range(n)``, uniform without replacement, in
    increasing order: a pure function of ``(seed, n, m)`` (a trial's subsample; its
    mitigations share the seed, hence the samples).

    Example:
        >>> ids = subsample_ids(7, 10, 4)
        >>> len(ids), bool((np.diff(ids) > 0).all()), bool((subsample_ids(7, 10, 4) == ids).all())
        (4, True, True)
    """
    if n < 0 or m < 1:
        raise ValueError(f"Expected n >= 0 and m >= 1, but got n={n}, m={m}.")
    rng = np.random.default_rng([int(seed) & (2**64 - 1), SUBSAMPLE_STREAM])
    return np.sort(rng.choice(n, size=min(m, n), replace=False)).astype(np.int64)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (NaN payloads included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return a.detach().cpu().contiguous().numpy().tobytes() == \
        b.detach().cpu().contiguous().numpy().tobytes()


def _same_metrics(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return list(a) == list(b) and all(
        struct.pack("<d", float(x)) == struct.pack("<d", float(y))
        or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(), b.values()))


def _checked_outputs(out: object, n: int, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() < 1:
        shape = f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else ""
        raise TypeError(f"Expected outputs() to return a tensor [N, ...] of per-sample outputs, "
                        f"but {what} returned {type(out).__name__}{shape}.")
    if out.shape[0] != n:
        raise ValueError(f"Expected outputs() to return one row per evaluation sample, but "
                         f"{what}:\n  expected: {n} rows\n  got: {out.shape[0]} rows")
    return out


def _outputs_of(split: SplitEvaluation, model: nn.Module, data: Any,
                ids: torch.Tensor) -> torch.Tensor:
    """``split.outputs`` of the samples ``ids`` (no grad), checked to give one row per id."""
    with torch.no_grad():
        return _checked_outputs(split.outputs(model, data, ids), len(ids),
                                f"outputs(model, data, indices) for {len(ids)} ids")


def build_index_map(model: nn.Module, data: Any, split: SplitEvaluation
                    ) -> tuple[IndexMap, torch.Tensor]:
    """The index map of ``model``'s tables on ``data`` and the golden outputs of that pass.

    Raises:
        TableLookupError: a declared table that is not an embedding lookup, or lookups that
            cannot be tied to samples.
    """
    tables = find_tables(model, split.tables)
    index_map, out = record_lookups(model, lambda m: split.outputs(m, data, None), None, tables)
    return index_map, _checked_outputs(out, index_map.n_samples, "outputs(model, data)")


@dataclass
class Rescorer:
    """Re-scoring of one (model, mitigation) on one replica.

    Attributes:
        enabled: the self-check passed; use :meth:`plan` and :meth:`metrics`.
        reason: why re-scoring is off (None when enabled).
        index_map, golden_outputs, golden_metrics: of this (model, mitigation).
    """

    split: SplitEvaluation
    data: Any
    index_map: IndexMap | None
    golden_outputs: torch.Tensor | None
    golden_metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    #: why scoring a random subset of the samples is off (None: on); see :meth:`subset_metrics`
    subset_reason: str | None = "not checked"

    @property
    def enabled(self) -> bool:
        return self.reason is None

    @property
    def subsets(self) -> bool:
        """Whether :meth:`subset_metrics` may score a subsample: the outputs of a subset of
        the samples are theirs in the full pass (checked), and ``score_subset`` of all of
        them gives the golden metrics."""
        return self.subset_reason is None

    @property
    def n_samples(self) -> int:
        """Number of evaluation samples (rows of the golden outputs)."""
        assert self.golden_outputs is not None
        return len(self.golden_outputs)

    def subset_metrics(self, model: nn.Module, ids: np.ndarray | torch.Tensor
                       ) -> dict[str, float]:
        """Metrics of ``model`` (faults applied, mitigation hooks attached) on the samples
        ``ids`` alone (``split.score_subset``): a random subset's estimate of the full metrics."""
        assert self.subsets and self.split.score_subset is not None
        ids_t = check_indices(ids, self.n_samples)
        out = _outputs_of(self.split, model, self.data, ids_t)
        return dict(self.split.score_subset(out, self.data, ids_t))

    def plan(self, faults: FaultMap, max_share: float = 0.5) -> np.ndarray | None:
        """Samples whose outputs ``faults`` (as applied: after SBP filtered them) can change
        (empty: none, the trial is ineffective), or None: score in full (a fault outside the
        tables, or more than ``max_share`` of the samples affected: a full pass is cheaper)."""
        if not self.enabled or self.index_map is None:
            return None
        ids = self.index_map.affected(faults)
        if ids is None or len(ids) > max_share * self.index_map.n_samples:
            return None
        return ids

    def metrics(self, model: nn.Module, ids: np.ndarray | torch.Tensor) -> dict[str, float]:
        """Metrics of ``model`` (faults applied, mitigation hooks attached) with the outputs of
        ``ids`` computed now and every other sample's golden output."""
        assert self.golden_outputs is not None and self.index_map is not None
        ids_t = check_indices(ids, self.index_map.n_samples)
        return dict(self.split.score(self._patched(model, ids_t), self.data))

    def _patched(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        assert self.golden_outputs is not None
        fresh = _outputs_of(self.split, model, self.data, ids)
        if fresh.shape[1:] != self.golden_outputs.shape[1:] or \
                fresh.dtype != self.golden_outputs.dtype:
            raise ValueError(f"Expected outputs for some samples to have the shape and dtype of "
                             f"the full outputs:\n  expected: {self.golden_outputs.dtype} "
                             f"[n, {list(self.golden_outputs.shape[1:])}]\n  got: {fresh.dtype} "
                             f"{list(fresh.shape)}")
        out = self.golden_outputs.clone()
        out[ids.to(out.device)] = fresh.to(out.device)
        return out


class _BatchNormWatch:
    """Forward pre-hooks noting the BatchNorm layers that run in train mode (batch statistics:
    a sample's output then depends on the others), as the evaluation calls them."""

    def __init__(self, model: nn.Module) -> None:
        self.training: list[str] = []
        self._handles = [mod.register_forward_pre_hook(self._hook(name))
                         for name, mod in model.named_modules()
                         if isinstance(mod, nn.modules.batchnorm._BatchNorm)]

    def _hook(self, name: str) -> Callable:
        def hook(mod: nn.Module, args: Any) -> None:
            what = f"{type(mod).__name__} {name!r}"
            if mod.training and what not in self.training:
                self.training.append(what)
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def reason(self) -> str | None:
        if not self.training:
            return None
        return (f"{self.training[0]} is in train mode: it normalizes with the statistics of "
                "the batch, so a sample's output depends on the others")


def _check_subsets(r: Rescorer, model: nn.Module, full: torch.Tensor) -> str | None:
    """Outputs of sample subsets (as re-scoring computes them) equal the full pass."""
    n = len(full)
    rng = np.random.default_rng(int(r.index_map.fingerprint[:8], 16) if r.index_map else 0)
    for size in CHECK_SIZES:
        ids = np.sort(rng.choice(n, min(size, n), replace=False))
        if size == CHECK_SIZES[-1]:
            ids = sorted_unique(np.concatenate([ids, [0, n - 1]]))
        sub = _outputs_of(r.split, model, r.data, torch.from_numpy(ids))
        if not same_bits(sub, full[torch.from_numpy(ids).to(full.device)]):
            return (f"outputs of {len(ids)} sample(s) computed without the others differ "
                    "from the full pass: the per-sample output depends on the batch (a layer "
                    "mixing samples, or kernels that round differently in other batch shapes; "
                    "for the latter, chunk `outputs` with pytei_ray.sample_batches, which pads "
                    "every batch so that no sample falls into a kernel's scalar tail)")
    return None


def _check_score_subset(r: Rescorer) -> str | None:
    """``score_subset`` of every golden output (in order) reproduces the golden metrics bit for
    bit (else it does not line up with the samples); None when it does.

    Raises:
        ValueError: it gives other metrics: a ``score_subset`` that disagrees with ``score``
            would store wrong estimates, so the model cannot run.
    """
    score_subset = r.split.score_subset
    if score_subset is None:
        return "the split evaluation has no score_subset"
    assert r.golden_outputs is not None
    ids = torch.arange(r.n_samples)
    got = dict(score_subset(r.golden_outputs, r.data, ids))
    if not _same_metrics(got, r.golden_metrics):
        raise ValueError(
            "score_subset(outputs, data, indices) of all the golden outputs does not give the "
            f"metrics of score(outputs, data):\n  score: {r.golden_metrics}\n  score_subset: "
            f"{got}\nIt must score the samples `indices` (their labels, in that order) with "
            "the same metric code; fix it, or drop `subsample` from the campaign.")
    return None


def _probe(r: Rescorer, model: nn.Module) -> str | None:
    """Change a few rows of every table, then: samples that read none of them keep their
    golden outputs, and the re-scored metrics equal a full pass of the changed model."""
    assert r.index_map is not None and r.golden_outputs is not None
    index_map, golden = r.index_map, r.golden_outputs
    rng = np.random.default_rng(int(index_map.fingerprint[8:16], 16))
    weights = dict(model.named_parameters())
    saved, touched = [], []
    try:
        with torch.no_grad():
            for name, table in index_map.tables.items():
                rows = list(rng.choice(table.rows, min(2, len(table.rows)), replace=False)) \
                    if len(table.rows) else []
                unread = np.setdiff1d(rng.choice(table.num_rows, min(8, table.num_rows),
                                                 replace=False), table.rows)
                rows += list(unread[:1])
                w = weights[name]
                for row in rows:
                    saved.append((w, int(row), w[int(row)].clone()))
                    w[int(row)] = w[int(row)] * 2.0 + 0.25
                touched.append(table.samples_of(sorted_unique(np.asarray(rows, np.int64))))
            full = _checked_outputs(r.split.outputs(model, r.data, None), len(golden),
                                    "outputs(model, data) with changed rows")
            ids = sorted_unique(np.concatenate(touched)) if touched else np.empty(0, np.int64)
            keep = np.ones(len(golden), bool)
            keep[ids] = False
            keep_t = torch.from_numpy(keep).to(full.device)
            if not same_bits(full[keep_t], golden[keep_t]):
                return ("samples that look up none of the changed table rows changed: a "
                        "table's weight is used outside its lookup, or samples are mixed")
            patched = r._patched(model, torch.from_numpy(ids))
            if not same_bits(patched, full):
                return ("re-scored outputs of a model with changed table rows differ from its "
                        "full pass")
            if not _same_metrics(dict(r.split.score(patched, r.data)),
                                 dict(r.split.score(full, r.data))):
                return "score() gave different metrics for bit-identical outputs"
    finally:
        with torch.no_grad():
            for w, row, old in reversed(saved):
                w[row] = old
    return None


def prepare_rescoring(model: nn.Module, data: Any, split: SplitEvaluation,
                      index_map: IndexMap | None = None, mitigations: Sequence[Any] = (),
                      golden_metrics: Mapping[str, float] | None = None, *,
                      subsets: bool = False) -> Rescorer:
    """Golden outputs and the self-check of one (model, mitigation); see the module docs.

    Args:
        model: the pristine replica (restored exactly after the checks).
        data: the evaluation data (as the worker holds it).
        split: the campaign's split evaluation.
        index_map: the replica's map (:func:`build_index_map`); None: build it now.
        mitigations: attached (hooks) while the golden outputs and the checks run.
        golden_metrics: the golden metrics of the full evaluation; re-scoring is off unless
            ``score`` of the golden outputs reproduces them bit for bit.
        subsets: also check what scoring a random subset needs (``subset_reason``; a
            campaign's ``subsample``); False leaves it "not asked".

    Returns:
        A :class:`Rescorer`; ``reason`` says why it is off, if it is.

    Raises:
        TableLookupError: see :func:`build_index_map`.
        ValueError: outputs that do not line up with the samples; golden outputs of other data
            than ``index_map`` (their lookups differ).
    """
    if index_map is None:
        index_map, _ = build_index_map(model, data, split)
    handles = [m.attach(model) for m in mitigations]
    try:
        tables = find_tables(model, split.tables)
        watch = _BatchNormWatch(model)
        try:
            check, golden = record_lookups(
                model, lambda m: split.outputs(m, data, None), index_map.n_samples, tables)
        finally:
            watch.remove()
        golden = _checked_outputs(golden, index_map.n_samples, "outputs(model, data)")
        if check.fingerprint != index_map.fingerprint:
            raise ValueError(
                "The index map was built on other data than the golden outputs: the tables "
                f"were looked up differently.\n  index map: {index_map.fingerprint[:16]}\n  "
                f"golden outputs: {check.fingerprint[:16]}\nBuild the index map on this "
                "replica's evaluation data.")
        r = Rescorer(split, data, index_map, golden, dict(split.score(golden, data)))
        if golden_metrics is not None and not _same_metrics(r.golden_metrics,
                                                            dict(golden_metrics)):
            r.reason = r.subset_reason = (
                f"score(outputs) {r.golden_metrics} differs from the golden metrics "
                f"{dict(golden_metrics)}")
            return r
        batch = (watch.reason() or _check_subsets(r, model, golden)) \
            if subsets or index_map.tables else None  # checked only when something needs it
        r.subset_reason = (batch or _check_score_subset(r)) if subsets else "not asked"
        r.reason = (batch or _probe(r, model)) if index_map.tables else \
            "the model has no embedding table that is a plain lookup"
        return r
    finally:
        for h in reversed(handles):
            h.remove()
