"""The Ray executor's plain data: its options (``--executor-opt``) and its run statistics.

Nothing here imports ray, so the launcher can validate Ray options before anything starts and
read :class:`RunStats` without depending on the Ray executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytei_ray.errors import ExecutorOptionError

__all__ = ["OPTIONS", "parse_options", "RunStats"]

#: ``--executor-opt`` keys understood by the Ray executor, with their types
OPTIONS: dict[str, type] = {
    "num_cpus": float, "num_gpus": float, "max_restarts": int, "max_attempts": int,
    "resource_timeout": float, "spread": bool, "local_num_cpus": int, "local_num_gpus": float,
}


def parse_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check and convert Ray executor options (values may be strings from the command line).

    Raises:
        ExecutorOptionError: an unknown key, a value of the wrong type, or a negative number.

    Example:
        >>> parse_options({"num_gpus": "0.5", "spread": "false"})
        {'num_gpus': 0.5, 'spread': False}
    """
    out: dict[str, Any] = {}
    for key, value in dict(options or {}).items():
        if key not in OPTIONS:
            raise ExecutorOptionError(f"Expected `options=...` keys for the ray executor to be "
                                      f"among {sorted(OPTIONS)}, but got {key!r}.")
        kind = OPTIONS[key]
        try:
            if kind is bool:
                ok = isinstance(value, bool) or str(value).lower() in ("0", "1", "true", "false")
                if not ok:
                    raise ValueError
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            else:
                value = kind(value)
        except (TypeError, ValueError):
            raise ExecutorOptionError(f"Expected `options=...` {key} to be a {kind.__name__}, "
                                      f"but got {value!r}.") from None
        if kind is not bool and not value >= 0:  # also rejects NaN
            raise ExecutorOptionError(f"Expected `options=...` {key} to be >= 0, but got "
                                      f"{value!r}.")
        if key == "num_gpus" and value > 1 and value != int(value):
            raise ExecutorOptionError(f"Expected num_gpus per worker to be a fraction <= 1 or a "
                                      f"whole number, but got {value:g}.")
        out[key] = value
    return out


@dataclass
class RunStats:
    """What happened to the workers during a run (for the launcher's progress bar and summary).

    Attributes:
        workers: actors started (including replacements).
        worker_failures: times a worker process was found dead.
        restarts: times Ray restarted a dead actor.
        replaced: dead actors replaced by new ones.
        chunks_retried: chunks sent again after their worker died.
        trials_lost: trials given up (see :class:`~pytei_ray.errors.TrialsLostError`).
        duplicates_dropped: rows not reported because their trial was reported already.

    Example:
        >>> str(RunStats(workers=3, worker_failures=1, restarts=1, chunks_retried=2))
        '3 workers, 1 worker failures, 1 restarts, 2 chunks retried'
        >>> RunStats(workers=2).failures()
        ''
        >>> RunStats(workers=2, worker_failures=2, restarts=1, replaced=1).failures()
        '2 worker failures (1 restarted, 1 replaced)'
    """

    workers: int = 0
    worker_failures: int = 0
    restarts: int = 0
    replaced: int = 0
    chunks_retried: int = 0
    trials_lost: int = 0
    duplicates_dropped: int = 0

    def __str__(self) -> str:
        parts = [f"{self.workers} workers"]
        for name in ("worker_failures", "restarts", "replaced", "chunks_retried", "trials_lost"):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {name.replace('_', ' ')}")
        return ", ".join(parts)

    def failures(self) -> str:
        """``"2 worker failures (1 restarted, 1 replaced, 3 chunks retried)"``; ``""`` if none."""
        if not (self.worker_failures or self.restarts or self.replaced or self.trials_lost):
            return ""
        n = self.worker_failures
        details = [f"{v} {k}" for k, v in (("restarted", self.restarts),
                                           ("replaced", self.replaced),
                                           ("chunks retried", self.chunks_retried),
                                           ("trials lost", self.trials_lost)) if v]
        head = f"{n} worker failure{'s' if n != 1 else ''}"
        return head + (f" ({', '.join(details)})" if details else "")
