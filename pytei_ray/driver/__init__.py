"""The driver: runs a job's campaign into a results directory (what the launcher CLI calls).

* :mod:`.run_job`: :func:`run`: directory checks, resume, the rounds of an adaptive campaign.
* :mod:`.runner`: :class:`RoundRunner`: one executor for all rounds, prepare, writes.
* :mod:`.ledger`: :class:`RunLedger`: the run's manifest (every write of it), chunk checks.
* :mod:`.summary`: :class:`RunSummary`, the outcome of a run.
* :mod:`.overrides`: ``--repetitions`` / ``--precision`` recorded in the manifest.
* :mod:`.consistency`: one experiment per directory (model checksums, golden drift).
"""

from .run_job import default_out, run
from .summary import RunSummary

__all__ = ["RunSummary", "default_out", "run"]
