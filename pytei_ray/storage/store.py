"""The one owner of a results directory's contents (local disk, ``s3://``, ``gs://`` alike).

The names and layout are in :mod:`pytei_ray.storage.layout`, the manifest's schema in
:mod:`pytei_ray.storage.manifest`, the one-launcher lock in :mod:`pytei_ray.storage.lock`, the
checks of a location in :mod:`pytei_ray.storage.location`, atomic writes and torn-part
detection in :mod:`pytei_ray.storage.files`, the step tables of training trials in
:mod:`pytei_ray.storage.steps`.

``pandas.read_parquet(DIR)``, ``pyarrow.dataset.dataset(DIR)`` and DuckDB
(``read_parquet('DIR/*.parquet')``) read the parts as one table, because files and folders whose
name starts with ``_`` or ``.`` are skipped and every part has the same schema.

Atomicity: every file appears whole or not at all (:func:`~pytei_ray.storage.files.put_atomic`).

One launcher per directory (:meth:`ResultsStore.lock`): on local disk a kernel lock (released
when its holder dies, ``kill -9`` included); on object stores a heartbeat lease, which is best
effort because pyarrow's S3/GCS API has no atomic create-if-absent (see
:mod:`pytei_ray.storage.lock` for exactly what is and is not guaranteed).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pytei_ray.columns import golden_column, metric_of_golden
from pytei_ray.errors import ResultsDirError

from .files import open_part, parquet_bytes, put_atomic
from .layout import (
    ARTIFACTS_DIR,
    GOLDEN_DIR,
    JOB_COPY,
    LOCK,
    MANIFEST,
    QUARANTINE_DIR,
    display_location,
    is_part_name,
    resolve_location,
)
from .location import check_location
from .lock import LeaseLock, LocalLock
from .manifest import manifest_bytes, parse_manifest
from .schema import golden_schema, metrics_of_schema, result_schema, rows_to_table
from .steps import StepTables

__all__ = ["ResultsStore", "StoredScan", "put_atomic", "resolve_location"]

@dataclass
class StoredScan:
    """What one pass over a results directory's parts found (:meth:`ResultsStore.scan`).

    Attributes:
        rows: the requested columns of every stored result row (a column a part lacks: None).
        metrics: metric names in the parts' schemas (first-seen order).
        schemas: part path -> its Arrow schema (whether it conforms to the current row schema).
        golden: every stored golden row.
        golden_of_rows: (model, mitigation) -> the ``golden_<m>`` values its stored result rows
            carry (metric -> value; from its first row).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    golden: list[dict[str, Any]] = field(default_factory=list)
    golden_of_rows: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)


class ResultsStore(StepTables):
    """Reads and writes one results directory.

    Args:
        uri: a local path or a pyarrow filesystem URI (``s3://bucket/dir``, ``gs://...``).
        filesystem: use this pyarrow filesystem with ``uri`` as a path on it (tests, custom auth).

    Example:
        >>> import tempfile
        >>> store = ResultsStore(tempfile.mkdtemp())
        >>> store.read_manifest() is None
        True
    """

    def __init__(self, uri: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> None:
        self.uri = os.fspath(uri)
        if filesystem is not None:
            self.fs, self.path = filesystem, self.uri
        else:
            self.fs, self.path = resolve_location(self.uri)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._lease: LeaseLock | None = None  # the object-store lease while :meth:`lock` holds it

    @property
    def location(self) -> str:
        """Where the results are, for messages: the absolute path, or the URI as given."""
        return self.path if self._local else self.uri

    # ---- paths -----------------------------------------------------------------------------
    def _join(self, *names: str) -> str:
        return "/".join([self.path.rstrip("/"), *names])

    def _info(self, path: str) -> pafs.FileInfo:
        return self.fs.get_file_info(path)

    # ---- atomic writes ---------------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` so that readers see all of it or nothing."""
        if self._lease is not None:
            self._lease.check()  # another launcher took the directory over: write nothing more
        put_atomic(self.fs, path, data)

    # ---- location and manifest -------------------------------------------------------------
    def check_location(self) -> None:
        """Raise :class:`ResultsDirError` unless the location can become or is our directory.

        Refused, before anything is written: a file; a path under a regular file; a local
        location whose nearest existing folder cannot be written (read-only, ``/proc``); an
        object-store location in a bucket that does not exist (unless the URI has
        ``allow_bucket_creation=true``); a non-empty folder without a manifest; a manifest
        that is not valid (see :func:`~pytei_ray.storage.manifest.validate_manifest`).
        """
        check_location(self.fs, self.path, self.uri, self.display, local=self._local,
                       has_manifest=self.has_manifest)
        self.read_manifest()  # a present manifest must be valid

    @property
    def display(self) -> str:
        """The location for messages (a URI without its query options)."""
        return self.path if self._local else display_location(self.uri)

    def has_manifest(self) -> bool:
        """Whether a ``_manifest.json`` exists (valid or not)."""
        return self._info(self._join(MANIFEST)).type == pafs.FileType.File

    def read_manifest(self) -> dict[str, Any] | None:
        """The stored manifest, validated; None if there is none yet.

        Raises:
            ResultsDirError: it is not JSON, or lacks a field (the message names it and the fix).
        """
        path = self._join(MANIFEST)
        if self._info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            text = f.read()
        where = path if self._local else display_location(self.uri, MANIFEST)
        return parse_manifest(text, where)

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Atomically (re)write the manifest, creating the directory if needed."""
        data = manifest_bytes(dict(manifest))
        try:
            self.fs.create_dir(self.path, recursive=True)
            self._put(self._join(MANIFEST), data)
        except OSError as exc:
            raise ResultsDirError(f"Cannot write the results directory {self.display!r}: "
                                  f"{exc}") from exc

    def write_job_source(self, source: str) -> None:
        """Keep a copy of the job file that defines the stored campaign."""
        self._put(self._join(JOB_COPY), source.encode())

    def job_copy_path(self) -> str:
        """Where the copy of the job file is (for messages)."""
        return self._join(JOB_COPY) if self._local else display_location(self.uri, JOB_COPY)

    def artifacts_root(self) -> str:
        """The folder of cached artifacts (``ctx.artifact``) on :attr:`fs`."""
        return self._join(ARTIFACTS_DIR)

    def artifact_location(self, key: str) -> str:
        """Where artifact ``key`` is (or would be) stored, for messages."""
        return display_location(self.uri, ARTIFACTS_DIR, key)

    def read_artifact(self, key: str) -> bytes | None:
        """The bytes stored as artifact ``key``, or None when there are none."""
        path = f"{self.artifacts_root()}/{key}"
        if self._info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_artifact(self, key: str, data: bytes) -> None:
        """Store artifact ``key`` atomically. Workers write artifacts without holding the
        directory's lock (same key, same bytes: the race is harmless), so no lease check."""
        root = self.artifacts_root()
        self.fs.create_dir(root, recursive=True)
        put_atomic(self.fs, f"{root}/{key}", data)

    @contextmanager
    def lock(self, ttl: float | None = None) -> Iterator[None]:
        """Hold the directory's ``_lock`` while writing: one launcher per directory.

        Local disk: a kernel lock (``flock``), released by the kernel when the holder dies.
        Object stores: a heartbeat lease, best effort (see :mod:`pytei_ray.storage.lock`).

        Args:
            ttl: object stores: seconds after the last heartbeat that a lease is abandoned
                (default ``PYTEI_RAY_LEASE_SECONDS`` or 60).

        Raises:
            ResultsDirError: another launcher holds the directory (the message names it).
        """
        try:
            self.fs.create_dir(self.path, recursive=True)
        except OSError as exc:
            raise ResultsDirError(f"Cannot create the results directory {self.display!r}: "
                                  f"{exc}") from exc
        held: LocalLock | LeaseLock
        if self._local:
            held = LocalLock(os.path.join(self.path, LOCK), self.display)
        else:
            held = LeaseLock(self.fs, self._join(LOCK), self.display, ttl=ttl)
        held.acquire()
        self._lease = held if isinstance(held, LeaseLock) else None
        try:
            yield
        finally:
            self._lease = None
            held.release()

    # ---- parts -----------------------------------------------------------------------------
    def _list(self, directory: str) -> list[pafs.FileInfo]:
        if self._info(directory).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(directory))
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def part_paths(self, golden: bool = False) -> list[str]:
        """Paths of the stored part files (result parts, or golden parts)."""
        directory = self._join(GOLDEN_DIR) if golden else self.path
        return [i.path for i in self._list(directory) if is_part_name(os.path.basename(i.path))]

    def _open_part(self, info: pafs.FileInfo, columns: Sequence[str] | None,
                   extra: Callable[[pa.Schema], list[str]] | None = None
                   ) -> tuple[pa.Schema, pa.Table] | str:
        """The one read of a part (:func:`~pytei_ray.storage.files.open_part`)."""
        return open_part(self.fs, info, columns, extra)

    def _check_part(self, info: pafs.FileInfo, columns: list[str] | None) -> str | None:
        """Why the part is unreadable, or None if it is whole."""
        got = self._open_part(info, columns)
        return got if isinstance(got, str) else None

    def _quarantine(self, info: pafs.FileInfo, reason: str) -> None:
        name = os.path.basename(info.path)
        folder = os.path.basename(os.path.dirname(info.path))
        if os.path.dirname(info.path).rstrip("/") != self.path.rstrip("/"):
            name = f"{folder}.{name}"  # a step part and its part share a name: keep both
        self.fs.create_dir(self._join(QUARANTINE_DIR), recursive=True)
        dest, n = self._join(QUARANTINE_DIR, f"{name}.{int(time.time())}"), 0
        while self._info(dest).type != pafs.FileType.NotFound:  # never overwrite one
            n += 1
            dest = self._join(QUARANTINE_DIR, f"{name}.{int(time.time())}.{n}")
        self.fs.move(info.path, dest)
        warnings.warn(f"Moved torn part {info.path} to {dest}: {reason}. "
                      "Its rows will be computed again.", stacklevel=3)

    def _whole_parts(self, directory: str, columns: Sequence[str] | None,
                     extra: Callable[[pa.Schema], list[str]] | None = None,
                     ) -> Iterator[tuple[str, pa.Schema, pa.Table]]:
        """Every whole part of ``directory``, read once; torn ones are quarantined, leftover
        ``.tmp`` files of interrupted local writes removed."""
        for info in self._list(directory):
            name = os.path.basename(info.path)
            if name.startswith(".") and ".tmp-" in name:
                self.fs.delete_file(info.path)
                continue
            if not is_part_name(name):
                continue
            got = self._open_part(info, columns, extra)
            if isinstance(got, str):
                self._quarantine(info, got)
                continue
            yield info.path, got[0], got[1]

    def quarantine_bad_parts(self) -> list[str]:
        """Move torn/unreadable parts to ``_quarantine/`` (their trials will simply rerun).

        Also removes leftover ``.tmp`` files of interrupted local writes. Returns the moved paths.
        """
        before = set(self.part_paths()) | set(self.part_paths(golden=True))
        for directory, columns in ((self.path, ["trial_id", "status"]),
                                   (self._join(GOLDEN_DIR), ["model", "mitigation"])):
            for _ in self._whole_parts(directory, columns):
                pass
        after = set(self.part_paths()) | set(self.part_paths(golden=True))
        return sorted(before - after)

    def scan(self, columns: Sequence[str]) -> StoredScan:
        """Everything a resume needs, reading each stored part once (footer and ``columns``).

        Torn parts are quarantined on the way (as :meth:`quarantine_bad_parts`). Besides
        ``columns`` of every result row, it gathers the metric names of the parts' schemas,
        the schemas themselves (so the writer knows which parts to conform without reading
        them again), the stored golden rows, and the golden values that the result rows
        carry (``golden_<m>``, from the first row of each (model, mitigation)).
        """
        columns = list(dict.fromkeys([*columns, "model", "mitigation"]))
        self._check_steps()
        out = StoredScan()
        seen: dict[str, None] = {}

        def golden_columns(schema: pa.Schema) -> list[str]:
            return [golden_column(m) for m in metrics_of_schema(schema)]

        for path, schema, table in self._whole_parts(self.path, columns, golden_columns):
            out.schemas[path] = schema
            seen.update(dict.fromkeys(metrics_of_schema(schema)))
            names = set(table.column_names)
            missing = dict.fromkeys(c for c in columns if c not in names)
            gcols = [c for c in table.column_names if metric_of_golden(c) is not None]
            for r in table.to_pylist():
                out.rows.append({**missing, **{c: r.get(c) for c in columns if c in names}})
                key = (r["model"], r["mitigation"])
                if key not in out.golden_of_rows:
                    out.golden_of_rows[key] = {metric_of_golden(c): r[c] for c in gcols}
        out.metrics = list(seen)
        for _, _, table in self._whole_parts(self._join(GOLDEN_DIR), None):
            out.golden.extend(table.to_pylist())
        self.remove_orphan_steps()  # after the torn result and golden parts went to quarantine
        return out

    def stored_metrics(self) -> list[str]:
        """Metric names found in the schemas of the stored result parts (first-seen order)."""
        seen: dict[str, None] = {}
        for path in self.part_paths():
            seen.update(dict.fromkeys(metrics_of_schema(pq.read_schema(path, filesystem=self.fs))))
        return list(seen)

    def conform_parts(self, metrics: Sequence[str],
                      schemas: dict[str, pa.Schema] | None = None,
                      factors: Mapping[str, str] | None = None) -> int:
        """Rewrite any part whose schema is not ``result_schema(metrics, factors)`` (adds null
        columns).

        Needed when a later trial brings a metric the earlier parts lack. ``schemas`` (path ->
        schema, e.g. :attr:`StoredScan.schemas`) saves reading the footers again; it is kept
        up to date. Returns parts rewritten.
        """
        schema = result_schema(metrics, factors)
        n = 0
        for path in self.part_paths():
            known = schemas.get(path) if schemas is not None else None
            stored = known if known is not None else pq.read_schema(path, filesystem=self.fs)
            if stored.equals(schema):
                continue
            table = pq.read_table(path, filesystem=self.fs)
            self._put(path, parquet_bytes(rows_to_table(table.to_pylist(), schema)))
            if schemas is not None:
                schemas[path] = schema
            n += 1
        return n

    def write_part(self, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], name: str,
                   golden: bool = False, factors: Mapping[str, str] | None = None) -> str:
        """Atomically write ``rows`` as part ``name`` (``part-*.parquet``); returns its path.
        ``factors``: the extra factor columns of result rows (see ``result_schema``)."""
        if not is_part_name(name):
            raise ValueError(f"Expected a part name 'part-*.parquet', but got {name!r}.")
        schema = golden_schema(metrics) if golden else result_schema(metrics, factors)
        directory = self._join(GOLDEN_DIR) if golden else self.path
        self.fs.create_dir(directory, recursive=True)
        path = f"{directory}/{name}"
        self._put(path, parquet_bytes(rows_to_table(rows, schema)))
        return path

    # ---- reading ---------------------------------------------------------------------------
    def read_trial_status(self) -> dict[str, str]:
        """``trial_id -> status`` of every stored row (resume reads only these two columns)."""
        out: dict[str, str] = {}
        for path in self.part_paths():
            t = pq.read_table(path, columns=["trial_id", "status"], filesystem=self.fs)
            out.update(zip(t.column("trial_id").to_pylist(), t.column("status").to_pylist()))
        return out

    def read_golden(self) -> list[dict[str, Any]]:
        """Every stored golden row as a dict."""
        rows: list[dict[str, Any]] = []
        for path in self.part_paths(golden=True):
            rows.extend(pq.read_table(path, filesystem=self.fs).to_pylist())
        return rows

    def read_table(self) -> pa.Table:
        """All result rows as one Arrow table (empty table with no columns if none)."""
        tables = [pq.read_table(p, filesystem=self.fs) for p in self.part_paths()]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    def drop_trials(self, trial_ids: Iterable[str]) -> int:
        """Remove the rows of ``trial_ids`` (e.g. failed ones to retry); returns rows removed.

        Each affected part is rewritten atomically, so a crash leaves every part whole.
        """
        drop = set(trial_ids)
        removed = 0
        for path in self.step_paths():  # first: a crash leaves steps without rows, not both
            table = pq.read_table(path, filesystem=self.fs)
            ids = table.column("trial_id").to_pylist()
            keep = [i for i, t in enumerate(ids) if t not in drop]
            if len(keep) != len(ids):
                self._put(path, parquet_bytes(table.take(keep)))
        for path in self.part_paths():
            table = pq.read_table(path, filesystem=self.fs)
            ids = table.column("trial_id").to_pylist()
            keep = [i for i, t in enumerate(ids) if t not in drop]
            if len(keep) == len(ids):
                continue
            removed += len(ids) - len(keep)
            if keep:
                self._put(path, parquet_bytes(table.take(keep)))
            else:
                self.fs.delete_file(path)
        return removed
