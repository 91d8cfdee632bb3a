"""The outcome of a run (:class:`RunSummary`), shared by the driver and the round runner.

It lives on its own so that :mod:`~pytei_ray.driver.runner` can fill it without importing
:mod:`~pytei_ray.driver.run_job` (which imports the runner).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RunSummary"]


@dataclass
class RunSummary:
    """Outcome of :func:`run`.

    Attributes:
        campaign: campaign name.  out: results location.  total: trials in the grid.
        ran: trials run now.  evaluated: of those, trials whose ``evaluate`` ran (the others had
        no effective fault and got the golden metrics).  failed: of those, ``status="failed"``.
        skipped: already stored.
        complete: every trial of the grid has a row.  dry_run: nothing was run.
        worker_failures: worker processes found dead (Ray executor), ``worker_events`` says
            what followed (``"2 worker failures (1 restarted, 2 chunks retried)"``).
        rounds: rounds reached (an adaptive campaign adds repetitions in rounds; 1 otherwise).
        at_cap: cells of an adaptive campaign still open at ``max_reps``, one line each with
            why (more repetitions would not settle them cheaply).
        failed_stored: stored trials of the grid with ``status="failed"`` from earlier runs
            (``--retry-failed`` runs them again).
    """

    campaign: str
    out: str
    total: int
    ran: int = 0
    evaluated: int = 0
    failed: int = 0
    skipped: int = 0
    complete: bool = False
    dry_run: bool = False
    worker_failures: int = 0
    worker_events: str = ""
    rounds: int = 1
    at_cap: list[str] = field(default_factory=list)
    failed_stored: int = 0

    def line(self) -> str:
        """The summary printed at the end of a run (one line, plus the cells at the cap)."""
        rounds = f" in {self.rounds} rounds" if self.rounds > 1 else ""
        if self.ran == 0 and self.complete:
            text = (f"{self.campaign}: complete, all {self.total} trials{rounds} already stored "
                    f"in {self.out} (nothing to run).")
            if self.failed_stored:
                text = text[:-1] + (f"; {self.failed_stored} of them failed (status='failed'): "
                                    "rerun with `retry_failed=True` to run them again.")
        else:
            state = "complete" if self.complete else "INCOMPLETE (run the same command to resume)"
            workers = f"; {self.worker_events}" if self.worker_events else ""
            golden = self.ran - self.evaluated
            evals = (f"; {golden} of them without an effective fault (golden metrics, not "
                     "evaluated)") if golden else ""
            stored_failed = (f", {self.failed_stored} of them failed"
                             if self.failed_stored else "")
            text = (f"{self.campaign}: {self.ran} trials run{rounds} ({self.failed} failed), "
                    f"{self.skipped} skipped (already stored{stored_failed}){workers}{evals}; "
                    f"{state}; results in {self.out}")
            if self.complete and self.failed + self.failed_stored:
                text += ("\n(failed trials are stored with status='failed' and their error; "
                         "rerun with `retry_failed=True` to run them again)")
        if self.at_cap:
            shown = "\n  ".join(self.at_cap[:10])
            more = f"\n  ... and {len(self.at_cap) - 10} more" if len(self.at_cap) > 10 else ""
            text += (f"\n{len(self.at_cap)} cell(s) stopped at the maximum repetitions without "
                     f"reaching the precision target (more repetitions would not settle them "
                     f"cheaply):\n  {shown}{more}")
        return text
