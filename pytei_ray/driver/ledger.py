"""The run's ledger: the manifest of the run in progress, and the one place that writes it.

A run records what it learns while trials arrive: metric names, each model's pristine
checksum, models whose ``evaluate`` is not deterministic, non-finite golden metrics, the trials
of an adaptive round. :class:`RunLedger` holds the manifest, checks each chunk against the
stored experiment (:class:`~pytei_ray.driver.consistency.Consistency`) before any of it is
stored, and writes the manifest (stamped, atomically, through the store) whenever it changes.
The manifest's format is :mod:`pytei_ray.storage.manifest`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytei_ray.campaign.jobfile import JobRef
from pytei_ray.execution.rescoring import SUBSAMPLING_OFF
from pytei_ray.storage import ResultsStore, new_manifest, touch, updated_manifest

from .consistency import Consistency

__all__ = ["RunLedger"]


class RunLedger:
    """The manifest of one run and the checks of the experiment it records.

    Args:
        store: the results directory.
        manifest: the manifest as written at the start of the run (:meth:`open`).
        checks: the stored experiment's checksums and golden metrics.
        echo: where warnings go.
    """

    def __init__(self, store: ResultsStore, manifest: dict[str, Any], checks: Consistency,
                 echo: Callable[[str], None]) -> None:
        self.store, self.manifest, self.checks, self.echo = store, manifest, checks, echo

    @classmethod
    def open(cls, store: ResultsStore, stored: dict[str, Any] | None, spec: dict[str, Any], *,
             spec_hash: str, n_trials: int, metrics: list[str], job: JobRef,
             overrides: Mapping[str, Any], changes: list[str] | None,
             scan_golden: list[dict[str, Any]],
             golden_of_rows: Mapping[tuple[str, str], Mapping[str, Any]],
             echo: Callable[[str], None]) -> RunLedger:
        """Write the run's manifest (new, or the stored one updated to ``spec``) and load the
        checks from the stored golden rows (:meth:`record_nonfinite` reports their non-finite
        metrics)."""
        if stored is None:
            manifest = new_manifest(spec, spec_hash=spec_hash, n_trials=n_trials,
                                    metrics=metrics, job_path=job.path,
                                    source_sha256=job.source_sha256, overrides=overrides)
        else:
            manifest = updated_manifest(stored, spec, spec_hash=spec_hash, n_trials=n_trials,
                                        metrics=metrics, source_sha256=job.source_sha256,
                                        overrides=overrides, changes=changes)
        store.write_manifest(manifest)
        checks = Consistency.from_stored(store.display, store.job_copy_path(), manifest,
                                         scan_golden, golden_of_rows, metrics)
        return cls(store, manifest, checks, echo)

    def save(self, **fields: Any) -> None:
        """Set ``fields`` in the manifest and write it (stamped)."""
        self.manifest.update(fields)
        self.store.write_manifest(touch(self.manifest))

    def record_metrics(self, names: list[str]) -> None:
        """The metric names of the stored parts (the writer calls this before a part with a
        new metric is written)."""
        self.save(metrics=names)

    def set_n_trials(self, n: int) -> None:
        """The trials of the campaign so far (an adaptive round adds some)."""
        if self.manifest.get("n_trials") != n:
            self.save(n_trials=n)

    def check(self, result: Any) -> None:
        """Refuse a chunk (or prepared replicas) that would mix experiments; record what is
        new. Raises before anything of the chunk is stored."""
        if self.checks.check_chunk(result):
            self.save(model_checksums=dict(self.checks.checksums))
        self.record_nonfinite(result.golden)

    def record_nondeterministic(self, models: Sequence[str]) -> None:
        """Models whose ``evaluate`` varied between two golden runs: none of their trials is
        skipped, and the manifest lists them (merged over runs)."""
        known = self.manifest.get("nondeterministic_evaluate", [])
        new = [m for m in models if m not in known]
        if new:
            self.echo(f"warning: evaluate() of {new} is not deterministic; every trial of it "
                      "is evaluated (recorded as 'nondeterministic_evaluate' in the manifest).")
            self.save(nondeterministic_evaluate=sorted([*known, *new]))

    def record_rescoring_off(self, off: Sequence[Mapping[str, str]]) -> None:
        """(model, mitigation) pairs whose re-scoring self-check failed on a worker: their
        trials are scored in full; the manifest lists them with the reason (merged over runs
        and workers, one entry per pair)."""
        known = list(self.manifest.get("rescoring_off") or [])
        seen = {(d["model"], d["mitigation"]) for d in known}
        new = [dict(d) for d in off if (d["model"], d["mitigation"]) not in seen]
        if new:
            for d in new:
                what = "subsampling" if d["reason"].startswith(SUBSAMPLING_OFF) \
                    else "re-scoring"
                self.echo(f"warning: {what} is off for model {d['model']!r} with mitigation "
                          f"{d['mitigation']!r} ({d['reason']}); its trials are scored in full "
                          "(recorded as 'rescoring_off' in the manifest).")
            self.save(rescoring_off=[*known, *new])

    def record_nonfinite(self, golden: list[dict[str, Any]]) -> None:
        """Warn about (once each) and record non-finite golden metrics: not refused, since
        every run reproduces them and the other metrics stay valid, but no trial can be
        compared with them."""
        found = self.checks.nonfinite(golden)
        if not found:
            return
        for d in found:
            self.echo(f"warning: the golden (fault-free) value of metric {d['metric']!r} of "
                      f"model {d['model']!r} with mitigation {d['mitigation']!r} is "
                      f"{d['value']}: every trial's comparison with it (loss, SDC) is "
                      "meaningless. Check evaluate() on fault-free data (recorded as "
                      "'nonfinite_golden' in the manifest).")
        self.save(nonfinite_golden=[*(self.manifest.get("nonfinite_golden") or []), *found])
