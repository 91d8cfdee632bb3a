"""Buffered writing of result rows into atomic part files.

Rows arrive from executors chunk by chunk; writing a file per chunk would leave a million-trial
campaign with tens of thousands of tiny files. :class:`ResultsWriter` buffers rows and writes a part
when ``rows_per_part`` rows are waiting or ``flush_seconds`` have passed, and always on
:meth:`~ResultsWriter.close`. A part never holds more than ``rows_per_part`` rows, however many
rows one chunk brings. A crash loses at most the buffered rows; those trials rerun on resume.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pytei_ray.columns import STEPS_KEY

from .layout import part_name
from .schema import metric_names
from .store import ResultsStore

__all__ = ["ResultsWriter"]


def _split_steps(rows: Sequence[Mapping[str, Any]]
                 ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(step rows, rows without their STEPS_KEY)``: training rows carry their telemetry
    under :data:`~pytei_ray.columns.STEPS_KEY`, which is no column of the part."""
    steps = [s for r in rows for s in (r.get(STEPS_KEY) or ())]
    return steps, [{k: v for k, v in r.items() if k != STEPS_KEY} if STEPS_KEY in r else r
                   for r in rows]


class ResultsWriter:
    """Buffers result and golden rows and writes them as part files of a :class:`ResultsStore`.

    Args:
        store: the results directory.
        metrics: metric names already in the stored schema (from the manifest).
        rows_per_part: rows per part file at most; a part is written as soon as this many rows
            are buffered (an integer >= 1).
        flush_seconds: write a part once the oldest buffered row is this old (0 = every add).
        known_golden: (model, mitigation) pairs whose golden row is stored already.
        on_new_metrics: called with the full metric list before a part with new metrics is
            written (the launcher records it in the manifest).
        factors: extra factor columns of the result rows (``Level`` attributes: name ->
            ``"int"``/``"float"``/``"str"``), typed columns of every part.
        stored_schemas: path -> schema of the stored result parts, when the caller has them
            (:attr:`~pytei_ray.storage.store.StoredScan.schemas`): checking that the parts
            conform to the row schema then reads no footer again.

    Example:
        >>> import tempfile
        >>> w = ResultsWriter(ResultsStore(tempfile.mkdtemp()), metrics=[])
        >>> w.add([{"trial_id": "a", "status": "ok", "acc": 1.0}]); w.close()
        >>> w.rows_written, w.metrics
        (1, ['acc'])
    """

    def __init__(
        self,
        store: ResultsStore,
        metrics: Sequence[str],
        *,
        rows_per_part: int = 10_000,
        flush_seconds: float = 10.0,
        known_golden: Iterable[tuple[str, str]] = (),
        on_new_metrics: Callable[[list[str]], None] | None = None,
        stored_schemas: dict[str, Any] | None = None,
        factors: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.metrics = list(metrics)
        self.factors = dict(factors or {})
        if isinstance(rows_per_part, bool) or not isinstance(rows_per_part, int) \
                or rows_per_part < 1:
            raise ValueError(f"Expected rows_per_part to be an integer >= 1, but got "
                             f"{rows_per_part!r}.")
        self.rows_per_part = rows_per_part
        self.flush_seconds = float(flush_seconds)
        self.on_new_metrics = on_new_metrics
        self._schemas = stored_schemas  # path -> schema of stored parts (None: read footers)
        # run id: part names of one run sort together and never collide with another run's
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        self._rows: list[Mapping[str, Any]] = []  # result rows waiting for the next part
        self._golden: list[Mapping[str, Any]] = []  # golden rows waiting for the next part
        self._golden_keys = set(known_golden)  # (model, mitigation) stored or buffered
        self._oldest: float | None = None  # monotonic time of the oldest buffered row
        self._seq = 0  # parts written by this writer
        self._conformed = False  # stored parts checked against the current row schema
        self.rows_written = 0
        self.parts_written = 0

    def add(self, rows: Sequence[Mapping[str, Any]],
            golden: Sequence[Mapping[str, Any]] = ()) -> None:
        """Buffer rows (and golden rows); writes a part if the buffer is full or old enough."""
        for g in golden:
            key = (g["model"], g["mitigation"])
            if key not in self._golden_keys:
                self._golden_keys.add(key)
                self._golden.append(g)
        if not rows and not golden:
            return
        self._rows.extend(rows)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if time.monotonic() - self._oldest >= self.flush_seconds:
            self.flush()
        elif len(self._rows) >= self.rows_per_part:
            self._write_golden()
            while len(self._rows) >= self.rows_per_part:  # full parts now, the rest waits
                self._write_rows(self._rows[:self.rows_per_part])
                self._rows = self._rows[self.rows_per_part:]
            if not self._rows:
                self._oldest = None

    def _extend_metrics(self, rows: Sequence[Mapping[str, Any]], kind: str) -> None:
        new = [m for m in metric_names(rows, kind, self.factors) if m not in self.metrics]
        if not new:
            return
        self.metrics += new
        if self.on_new_metrics is not None:
            self.on_new_metrics(list(self.metrics))
        self.store.conform_parts(self.metrics, self._schemas, self.factors)

    def _name(self) -> str:
        self._seq += 1
        return part_name(self.run_id, self._seq)

    def _write_golden(self) -> None:
        if self._golden:
            steps, rows = _split_steps(self._golden)
            self._extend_metrics(rows, "golden")
            name = self._name()
            if steps:  # golden training trajectories: first, under the golden part's name
                self.store.write_golden_steps(steps, name)
            self.store.write_part(rows, self.metrics, name, golden=True)
            self._golden = []

    def _write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        steps, rows = _split_steps(rows)
        self._extend_metrics(rows, "result")
        if not self._conformed:
            # parts written by an older version may lack columns added since (e.g.
            # `evaluated`); readers take one part's schema and would drop them silently
            self.store.conform_parts(self.metrics, self._schemas, self.factors)
            self._conformed = True
        name = self._name()
        if steps:  # training telemetry: written first, under the same name (docs/gpt.md)
            self.store.write_steps(steps, name)
        self.store.write_part(rows, self.metrics, name, factors=self.factors)
        self.rows_written += len(rows)
        self.parts_written += 1

    def flush(self) -> None:
        """Write everything buffered (golden rows first, then result rows in parts of at most
        ``rows_per_part``)."""
        self._write_golden()
        while self._rows:
            self._write_rows(self._rows[:self.rows_per_part])
            self._rows = self._rows[self.rows_per_part:]
        self._oldest = None

    def close(self) -> None:
        """Flush; call it in ``finally`` so an interrupted run keeps what it computed."""
        self.flush()
