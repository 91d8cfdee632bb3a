"""A worker's re-scoring state: per model an index map, per (model, mitigation) a re-scorer.

The worker asks :meth:`ReplicaRescoring.prepare` after the golden run of a (model, mitigation)
(when its ``evaluate`` proved deterministic), and :meth:`ReplicaRescoring.plan` for each trial
whose faults changed a weight: ``None`` means score in full, otherwise the trial re-scores the
returned samples (none: the golden metrics, no evaluation). A trial scored in full asks
:meth:`ReplicaRescoring.sampler` when the campaign sets ``subsample``: a re-scorer whose subset
checks passed scores the trial's random subset instead (``Rescorer.subset_metrics``). See
:mod:`pytei_ray.injection.rescoring` for what is checked and what "equal" means.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pytei_ray.faults.faultmap import FaultMap
from pytei_ray.injection.lookups import IndexMap
from pytei_ray.injection.rescoring import Rescorer, build_index_map, prepare_rescoring

__all__ = ["SUBSAMPLING_OFF", "ReplicaRescoring"]

#: How a ``rescoring_off`` reason says that subsampling (not re-scoring) is off for the pair.
SUBSAMPLING_OFF = "subsampling off"


class ReplicaRescoring:
    """Index maps and re-scorers of one worker's replicas.

    Args:
        split: the campaign's split evaluation (``Campaign.evaluate``).
        worker_id: named in the warning when re-scoring is off.
        rescore: re-score table-only trials (``Campaign.rescores``); False: only subsets.
        subsample: samples a full evaluation scores (``Campaign.subsample``); None: all.
    """

    def __init__(self, split: Any, worker_id: str, *, rescore: bool = True,
                 subsample: int | None = None) -> None:
        self.split = split
        self.worker_id = worker_id
        self.rescore = rescore
        self.subsample = subsample
        self._maps: dict[str, IndexMap] = {}  # model -> index map of its evaluation data
        self._prepared: dict[tuple[str, str], Rescorer] = {}  # (model, mitigation) -> checks
        self._off: dict[tuple[str, str], str] = {}  # (model, mitigation) -> why off
        self._warned: set[tuple[str, str]] = set()  # (model, what) warned about

    def prepare(self, model_name: str, mit_name: str, model: torch.nn.Module, data: Any,
                mitigations: Sequence[Any], golden_metrics: Mapping[str, float]) -> None:
        """Golden outputs and the self-check of (model, mitigation), on the pristine replica.

        Raises:
            TableLookupError, ValueError, TypeError: a declared table that is no lookup,
                outputs that do not line up with the samples (the model cannot run).
        """
        if model_name not in self._maps:
            self._maps[model_name], _ = build_index_map(model, data, self.split)
        r = prepare_rescoring(model, data, self.split, self._maps[model_name], mitigations,
                              golden_metrics, subsets=self.subsample is not None)
        key = (model_name, mit_name)
        self._prepared[key] = r
        if self.subsample is not None and not r.subsets:
            self._warn_off(key, "subsampling", str(r.subset_reason),
                           f"are scored on all {r.n_samples} samples (exact, slower)")
        if self.rescore and not r.enabled:
            self._warn_off(key, "re-scoring", str(r.reason),
                           "are scored in full (the same metrics, slower)")

    def _warn_off(self, key: tuple[str, str], what: str, reason: str, consequence: str) -> None:
        """Note why (model, mitigation) loses re-scoring or subsampling; warn once a model."""
        note = reason if what == "re-scoring" else f"{SUBSAMPLING_OFF}: {reason}"
        self._off[key] = note if key not in self._off else f"{self._off[key]}; {note}"
        if (key[0], what) not in self._warned:
            self._warned.add((key[0], what))
            warnings.warn(
                f"{what} is off for model {key[0]!r} (mitigation {key[1]!r}) on "
                f"{self.worker_id}: {reason}.\nIts trials {consequence}; the results manifest "
                "lists it under 'rescoring_off'.", stacklevel=4)

    def plan(self, model_name: str, mit_name: str,
             faults: FaultMap) -> tuple[Rescorer, np.ndarray] | None:
        """``(re-scorer, samples to re-score)`` for the applied ``faults``, or None: score the
        trial in full (no re-scorer, a fault outside the tables, most samples affected)."""
        r = self._prepared.get((model_name, mit_name)) if self.rescore else None
        if r is None or not r.enabled:
            return None
        ids = r.plan(faults)
        return None if ids is None else (r, ids)

    def sampler(self, model_name: str, mit_name: str) -> Rescorer | None:
        """The re-scorer that may score a subsample of (model, mitigation)'s samples (its
        check passed and the campaign asks for ``subsample`` samples, fewer than there are),
        or None: score in full."""
        r = self._prepared.get((model_name, mit_name))
        return r if r is not None and r.subsets and self.subsample is not None and \
            self.subsample < r.n_samples else None

    def reads(self, model_name: str, mit_name: str) -> IndexMap | None:
        """The index map of ``model_name`` when re-scoring of (model, mitigation) passed its
        self-check (so a fault in a row no sample looks up provably changes no output), else
        None: which faults the evaluation reads is not known."""
        r = self._prepared.get((model_name, mit_name))
        if r is None or not r.enabled:
            return None
        return self._maps.get(model_name)

    @property
    def off(self) -> list[dict[str, str]]:
        """``{"model", "mitigation", "reason"}`` of every (model, mitigation) with re-scoring
        off on this worker so far (sorted; cumulative, like ``nondeterministic``)."""
        return [{"model": m, "mitigation": g, "reason": why}
                for (m, g), why in sorted(self._off.items())]
