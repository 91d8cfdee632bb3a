"""A worker's replay state: per (model, mitigation), the golden calls of the replica's parts.

The worker records them in the second golden run of a (model, mitigation) (:meth:`record`),
keeps them if replaying every part reproduces the golden metrics bit for bit (:meth:`keep`),
and wraps each full evaluation in :meth:`context`, which replays the parts that hold none of the
trial's faults. Recordings of one model share the tensors its mitigations have in common; a
rebuilt replica takes them over (:meth:`rebuilt`). See :mod:`pytei_ray.injection.frozen`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pytei_ray.columns import same_metrics
from pytei_ray.injection.frozen import FrozenOutputs

__all__ = ["ReplicaReplay"]


class ReplicaReplay:
    """The frozen recordings of one worker's replicas."""

    def __init__(self) -> None:
        self.recordings: dict[tuple[str, str], FrozenOutputs] = {}  # kept ones only

    def record(self, model_name: str, model: torch.nn.Module,
               run: Callable[[], Any]) -> tuple[Any, FrozenOutputs]:
        """Run ``run()`` (a golden evaluation of ``model``) recording its parts' calls, sharing
        tensors with the model's kept recordings. Returns ``(what run returned, recording)``."""
        frozen = FrozenOutputs(model)
        share = [f for (m, _), f in self.recordings.items() if m == model_name]
        return frozen.record(run, share), frozen

    def keep(self, model_name: str, mit_name: str, frozen: FrozenOutputs,
             evaluate: Callable[[], Mapping[str, float]], golden: Mapping[str, float]) -> bool:
        """Keep ``frozen`` for (model, mitigation) if ``evaluate()`` with every recorded part
        replayed gives the ``golden`` metrics bit for bit; else (other metrics, or an error: an
        evaluation that relies on a part's side effects) its trials compute every part.
        Returns whether it was kept."""
        self.recordings.pop((model_name, mit_name), None)
        if not frozen.calls:
            return False
        try:
            with frozen.replay(list(frozen.calls)):
                replayed = evaluate()
        except Exception:  # noqa: BLE001 (the evaluation cannot take replayed outputs)
            return False
        if not same_metrics(dict(golden), dict(replayed)):
            return False
        self.recordings[(model_name, mit_name)] = frozen
        return True

    def context(self, model_name: str, mit_name: str, model: torch.nn.Module, faults: Any,
                sites: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
        """The context of a full evaluation of ``model`` under the applied ``faults`` (a
        FaultMap; ``sites``: its Sites by name): the parts holding none of them return their
        golden outputs while their inputs are golden (no recording: a null context)."""
        frozen = self.recordings.get((model_name, mit_name))
        if frozen is None or frozen.model is not model:
            return contextlib.nullcontext()
        hit = [tf.name for tf in faults.tensors if tf.n_words]
        tensors = [sites[n].tensor for n in hit if n in sites]
        return frozen.replay(frozen.frozen(hit, tensors))

    def rebuilt(self, model_name: str, model: torch.nn.Module, same_state: bool) -> None:
        """``model`` replaced the replica of ``model_name``: its recordings move to it when its
        state is the same (``same_state``: equal pristine checksums) and its parts are the
        recorded ones; otherwise they are dropped (its golden calls may differ)."""
        for key in [k for k in self.recordings if k[0] == model_name]:
            if not same_state or not self.recordings[key].rebind(model):
                del self.recordings[key]
