"""The step tables of a results directory: per-step telemetry of training trials and of their
golden (fault-free) windows.

``_steps/<name>`` belongs to the result part ``<name>``, ``_golden_steps/<name>`` to the golden
part ``_golden/<name>``: each is written just before its part (so a row is never stored without
its steps), goes to quarantine with its part when torn, and is deleted when its part does not
exist (a kill between the two writes). :class:`StepTables` is a part of
:class:`~pytei_ray.storage.store.ResultsStore` (which supplies the file primitives it uses).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .files import parquet_bytes
from .layout import GOLDEN_STEPS_DIR, STEPS_DIR, is_part_name
from .schema import rows_to_table, steps_schema

__all__ = ["StepTables"]


class StepTables:
    """The step-table methods of :class:`~pytei_ray.storage.store.ResultsStore`."""

    # supplied by ResultsStore: fs, _join, _list, _put, _open_part, _quarantine, _info,
    # part_paths
    fs: Any

    def _steps_dir(self, golden: bool) -> str:
        return self._join(GOLDEN_STEPS_DIR if golden else STEPS_DIR)

    def step_paths(self, golden: bool = False) -> list[str]:
        """Paths of the stored step parts (``_steps/part-*.parquet``; ``golden``: those of
        the golden trajectories, ``_golden_steps/part-*.parquet``)."""
        return [i.path for i in self._list(self._steps_dir(golden))
                if is_part_name(os.path.basename(i.path))]

    def _put_steps(self, rows: Sequence[Mapping[str, Any]], name: str, golden: bool) -> str:
        if not is_part_name(name):
            raise ValueError(f"Expected a part name 'part-*.parquet', but got {name!r}.")
        directory = self._steps_dir(golden)
        self.fs.create_dir(directory, recursive=True)
        path = f"{directory}/{name}"
        self._put(path, parquet_bytes(rows_to_table(rows, steps_schema())))
        return path

    def write_steps(self, rows: Sequence[Mapping[str, Any]], name: str) -> str:
        """Atomically write the step rows of the result part ``name`` (before that part, so a
        result row is never stored without its steps); returns the path."""
        return self._put_steps(rows, name, golden=False)

    def write_golden_steps(self, rows: Sequence[Mapping[str, Any]], name: str) -> str:
        """Atomically write the step rows of the golden trajectories of the golden part
        ``name`` (before that part, so a golden row is never stored without its steps);
        returns the path."""
        return self._put_steps(rows, name, golden=True)

    def _check_steps(self) -> None:
        """A torn step part takes its result part (a torn golden step part its golden part)
        to quarantine too: their trials rerun, their golden rows are computed again."""
        for golden in (False, True):
            parts = {os.path.basename(p): p for p in self.part_paths(golden=golden)}
            for info in self._list(self._steps_dir(golden)):
                name = os.path.basename(info.path)
                if name.startswith(".") and ".tmp-" in name:
                    self.fs.delete_file(info.path)
                    continue
                got = self._open_part(info, ["trial_id"])
                if isinstance(got, str):
                    self._quarantine(info, got)
                    if name in parts:
                        self._quarantine(self._info(parts[name]),
                                         f"its step part is torn: {got}")

    def remove_orphan_steps(self) -> list[str]:
        """Delete step parts whose result part does not exist, and golden step parts whose
        golden part does not exist (a kill between the two writes, or a quarantined part):
        their trials (golden rows) are computed again and bring their steps again, so a step
        table never holds a trial twice from one part's loss. Returns the deleted paths."""
        gone = []
        for golden in (False, True):
            parts = {os.path.basename(p) for p in self.part_paths(golden=golden)}
            gone += [p for p in self.step_paths(golden) if os.path.basename(p) not in parts]
        for p in gone:
            self.fs.delete_file(p)
        return gone

    def read_steps(self) -> pa.Table:
        """The step table of every stored training trial (empty schema'd table if none)."""
        tables = [pq.read_table(p, filesystem=self.fs) for p in self.step_paths()]
        return pa.concat_tables(tables) if tables else steps_schema().empty_table()

    def read_golden_steps(self) -> pa.Table:
        """The step table of the golden training trajectories, one row per (trial_id, step)
        (``trial_id`` is ``golden/<model>/<mitigation>``; the first stored copy of a
        trajectory that several workers stored, bit-identical by the determinism checks);
        an empty schema'd table if none."""
        tables = [pq.read_table(p, filesystem=self.fs) for p in self.step_paths(golden=True)]
        if not tables:
            return steps_schema().empty_table()
        table = pa.concat_tables(tables)
        seen: set[tuple[str, int]] = set()
        keep = []
        keys = zip(table.column("trial_id").to_pylist(), table.column("step").to_pylist())
        for i, key in enumerate(keys):
            if key not in seen:
                seen.add(key)
                keep.append(i)
        return table.take(keep) if len(keep) < table.num_rows else table
