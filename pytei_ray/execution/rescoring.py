"""A worker's re-scoring state: per model an index map, per (model, mitigation) a re-scorer.

The worker asks :meth:`ReplicaRescoring.prepare` after the golden run of a (model, mitigation)
(when its ``evaluate`` proved deterministic), and :meth:`ReplicaRescoring.plan` for each trial
whose faults changed a weight: ``None`` means score in full, otherwise the trial re-scores the
returned samples (none: the golden metrics, no evaluation). See
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

__all__ = ["ReplicaRescoring"]


class ReplicaRescoring:
    """Index maps and re-scorers of one worker's replicas.

    Args:
        split: the campaign's split evaluation (``Campaign.evaluate``).
        worker_id: named in the warning when re-scoring is off.
    """

    def __init__(self, split: Any, worker_id: str) -> None:
        self.split = split
        self.worker_id = worker_id
        self._maps: dict[str, IndexMap] = {}  # model -> index map of its evaluation data
        self._rescorers: dict[tuple[str, str], Rescorer] = {}  # (model, mitigation) -> on
        self._off: dict[tuple[str, str], str] = {}  # (model, mitigation) -> why off
        self._warned: set[str] = set()  # models whose "off" warning was given

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
                              golden_metrics)
        if r.enabled:
            self._rescorers[(model_name, mit_name)] = r
            return
        self._off[(model_name, mit_name)] = str(r.reason)
        if model_name not in self._warned:
            self._warned.add(model_name)
            warnings.warn(
                f"re-scoring is off for model {model_name!r} (mitigation {mit_name!r}) on "
                f"{self.worker_id}: {r.reason}.\nIts trials are scored in full (the same "
                "metrics, slower); the results manifest lists it under 'rescoring_off'.",
                stacklevel=3)

    def plan(self, model_name: str, mit_name: str,
             faults: FaultMap) -> tuple[Rescorer, np.ndarray] | None:
        """``(re-scorer, samples to re-score)`` for the applied ``faults``, or None: score the
        trial in full (no re-scorer, a fault outside the tables, most samples affected)."""
        r = self._rescorers.get((model_name, mit_name))
        if r is None:
            return None
        ids = r.plan(faults)
        return None if ids is None else (r, ids)

    def reads(self, model_name: str, mit_name: str) -> IndexMap | None:
        """The index map of ``model_name`` when re-scoring of (model, mitigation) passed its
        self-check (so a fault in a row no sample looks up provably changes no output), else
        None: which faults the evaluation reads is not known."""
        if (model_name, mit_name) not in self._rescorers:
            return None
        return self._maps.get(model_name)

    @property
    def off(self) -> list[dict[str, str]]:
        """``{"model", "mitigation", "reason"}`` of every (model, mitigation) with re-scoring
        off on this worker so far (sorted; cumulative, like ``nondeterministic``)."""
        return [{"model": m, "mitigation": g, "reason": why}
                for (m, g), why in sorted(self._off.items())]
