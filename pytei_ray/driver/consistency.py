"""Checks that keep a results directory one experiment across workers and runs.

The driver holds one :class:`Consistency` per run, seeded from what is stored, and passes it
everything the workers report before any of it is stored:

* **model checksums**: every worker reports the ``state_checksum`` of each replica it built
  (``ChunkResult.checksums``, and after ``prepare``). All must equal the first one seen, or the
  one recorded in the manifest (``"model_checksums"``) by an earlier run; otherwise the factory
  is not deterministic (it does not seed its RNG) and :class:`ModelChecksumError` is raised.
* **golden drift**: every golden row a worker computes, and the ``golden_<m>`` values of every
  new result row, must equal bit for bit (NaN equals NaN) the golden metrics of the same
  (model, mitigation) already stored (golden rows, else the ``golden_<m>`` of stored result
  rows) or first seen in this run; otherwise :class:`GoldenDriftError` is raised. Models whose
  ``evaluate`` is known not to be deterministic (``nondeterministic_evaluate``) are exempt:
  their golden values differ from run to run by nature.
* **non-finite golden metrics** are not refused (they are a property of the model or of
  ``evaluate`` that every rerun reproduces, and the other metrics stay valid); they are
  reported once each (:meth:`Consistency.nonfinite`) and the driver records them in the
  manifest (``"nonfinite_golden"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytei_ray.columns import GOLDEN_HEAD, GOLDEN_TAIL, STEPS_KEY, metric_of_golden, same_value
from pytei_ray.errors import GoldenDriftError, ModelChecksumError

# the non-metric keys of a golden row (a training golden row carries its steps under STEPS_KEY)
_GOLDEN_FIXED = frozenset(GOLDEN_HEAD + GOLDEN_TAIL) | {STEPS_KEY}

__all__ = ["Consistency"]

Pair = tuple[str, str]  # (model, mitigation)


def _values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that have a value (a null column of a conformed part is no value)."""
    return {k: float(v) for k, v in metrics.items() if v is not None}


@dataclass
class Consistency:
    """Reference checksums and golden metrics of a run, and the checks against them.

    Args:
        location: the results location (for messages).
        job_copy: where the stored job source is (for messages).
        golden: (model, mitigation) -> stored golden metrics.
        golden_from: (model, mitigation) -> where ``golden`` came from (for messages).
        checksums: model -> checksum recorded by an earlier run.
        nondeterministic: models whose ``evaluate`` is known not to be deterministic.
        nonfinite_known: (model, mitigation, metric) already recorded as non-finite.
    """

    location: str
    job_copy: str = ""
    golden: dict[Pair, dict[str, float]] = field(default_factory=dict)
    golden_from: dict[Pair, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    checksum_from: dict[str, str] = field(default_factory=dict)
    nondeterministic: set[str] = field(default_factory=set)
    nonfinite_known: set[tuple[str, str, str]] = field(default_factory=set)

    @classmethod
    def from_stored(cls, location: str, job_copy: str, manifest: Mapping[str, Any] | None,
                    golden_rows: Iterable[Mapping[str, Any]],
                    golden_of_rows: Mapping[Pair, Mapping[str, Any]],
                    metrics: Iterable[str]) -> Consistency:
        """The references of a directory: its golden rows (else its result rows' golden
        values), the manifest's checksums and lists."""
        manifest = manifest or {}
        names = list(metrics)
        out = cls(location, job_copy)
        for g in golden_rows:
            key = (g["model"], g["mitigation"])
            if key not in out.golden:
                out.golden[key] = _values({m: g.get(m) for m in names if m in g})
                out.golden_from[key] = "stored golden row"
        for key, values in golden_of_rows.items():
            if key not in out.golden:
                out.golden[key] = _values(values)
                out.golden_from[key] = "stored result rows"
        recorded = manifest.get("model_checksums") or {}
        out.checksums = {str(k): str(v) for k, v in recorded.items()}
        out.checksum_from = dict.fromkeys(out.checksums, "recorded in the manifest by an "
                                                         "earlier run")
        out.nondeterministic = set(manifest.get("nondeterministic_evaluate") or [])
        out.nonfinite_known = {(d["model"], d["mitigation"], d["metric"])
                               for d in manifest.get("nonfinite_golden") or []
                               if isinstance(d, Mapping)}
        return out

    # ---- model checksums -------------------------------------------------------------------
    def check_checksums(self, checksums: Mapping[str, str], worker: str) -> dict[str, str]:
        """Compare a worker's pristine checksums with the references.

        Returns:
            the checksums seen for the first time (to record in the manifest).

        Raises:
            ModelChecksumError: a model's checksum differs from its reference.
        """
        new = {}
        for model, checksum in checksums.items():
            known = self.checksums.get(model)
            if known is None:
                self.checksums[model] = checksum
                self.checksum_from[model] = f"worker {worker} in this run"
                new[model] = checksum
            elif known != checksum:
                raise ModelChecksumError(
                    f"The factory of model {model!r} builds different weights on different "
                    f"workers or runs (state_checksum of the freshly built model):\n"
                    f"  {known[:16]}  ({self.checksum_from[model]})\n"
                    f"  {checksum[:16]}  (worker {worker})\n"
                    "Trials on such replicas are not comparable (each worker injects into "
                    "another model), so nothing of it was stored. Seed the factory, e.g. "
                    "torch.manual_seed(0) inside it (torch.random.fork_rng() keeps the global "
                    "RNG), or load fixed weights; then run the same command again. If the "
                    f"model was changed on purpose, write to a new `out=DIR` ({self.location} "
                    "holds results of the old one).")
        return new

    # ---- golden metrics --------------------------------------------------------------------
    def check_golden(self, model: str, mitigation: str, metrics: Mapping[str, Any],
                     origin: str) -> None:
        """Compare golden metrics computed now with the reference of their pair (the first
        ones seen become the reference).

        Raises:
            GoldenDriftError: a metric differs, or is present on one side only.
        """
        key = (model, mitigation)
        now = _values(metrics)
        ref = self.golden.get(key)
        if ref is None:
            self.golden[key] = now
            self.golden_from[key] = origin
            return
        if model in self.nondeterministic:
            return
        diffs = [f"metric {m!r}: stored {ref[m]!r} ({self.golden_from[key]}), now {now[m]!r} "
                 f"({origin})" for m in ref if m in now and not same_value(ref[m], now[m])]
        diffs += [f"metric {m!r}: stored {ref[m]!r} ({self.golden_from[key]}), now absent "
                  f"({origin})" for m in ref if m not in now]
        diffs += [f"metric {m!r}: stored absent, now {now[m]!r} ({origin})"
                  for m in now if m not in ref]
        if diffs:
            copy = f" (its stored source is {self.job_copy})" if self.job_copy else ""
            raise GoldenDriftError(
                f"The golden (fault-free) metrics of model {model!r} with mitigation "
                f"{mitigation!r} differ from those stored in {self.location}:\n  "
                + "\n  ".join(diffs)
                + "\nNew rows would carry another golden value than the stored ones: the "
                "dataset would mix two experiments (evaluate(), the data or the model changed "
                "since they were computed, or evaluate() is not deterministic). Nothing of "
                "this chunk was stored.\nRestore the job "
                f"file or its evaluate() as it was{copy} and run the same command again, or "
                "write the changed campaign to a new `out=DIR`.")

    def check_chunk(self, result: Any) -> dict[str, str]:
        """Check one :class:`~pytei_ray.execution.worker.ChunkResult` before any of it is stored.

        Returns:
            checksums seen for the first time (see :meth:`check_checksums`).
        """
        new = self.check_checksums(getattr(result, "checksums", None) or {}, result.worker)
        self.nondeterministic.update(result.nondeterministic)
        for g in result.golden:
            metrics = {k: v for k, v in g.items() if k not in _GOLDEN_FIXED}
            self.check_golden(g["model"], g["mitigation"], metrics,
                              f"golden run on worker {result.worker}")
        seen: set[Pair] = set()
        for r in result.rows:
            key = (r["model"], r["mitigation"])
            if key in seen:
                continue
            seen.add(key)
            metrics = {m: v for k, v in r.items() if (m := metric_of_golden(k)) is not None}
            self.check_golden(*key, metrics, f"rows of worker {result.worker}")
        return new

    def nonfinite(self, golden_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
        """Non-finite golden metrics among ``golden_rows`` not reported yet (each once)."""
        out = []
        for g in golden_rows:
            for k, v in g.items():
                if k in _GOLDEN_FIXED or v is None or math.isfinite(float(v)):
                    continue
                key = (g["model"], g["mitigation"], k)
                if key not in self.nonfinite_known:
                    self.nonfinite_known.add(key)
                    out.append({"model": key[0], "mitigation": key[1], "metric": k,
                                "value": repr(float(v))})
        return out

