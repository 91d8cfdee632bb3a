"""The one owner of a results directory's layout (local disk, ``s3://``, ``gs://`` alike).

Layout::

    DIR/
      _manifest.json          campaign spec + hash, metric names, history   (readers skip "_")
      _job.py                 the job file's source, for reproduction
      part-<run>-<n>.parquet  result rows, one per trial; each file appears atomically
      _golden/part-*.parquet  fault-free evaluations, one per (model, mitigation)
      _quarantine/            torn or unreadable parts moved aside (their trials rerun)
      _lock                   host and pid of the launcher writing here (local disk only)

``pandas.read_parquet(DIR)``, ``pyarrow.dataset.dataset(DIR)`` and DuckDB
(``read_parquet('DIR/*.parquet')``) read the parts as one table, because files and folders whose
name starts with ``_`` or ``.`` are skipped and every part has the same schema.

Atomicity: on a local disk a file is written to ``.<name>.tmp-<uuid>``, fsynced and renamed over
its final name; on object stores (S3, GCS) a single put is already atomic, so it is written in
place. Either way a reader sees a whole file or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pytei_ray.errors import ResultsDirError

from .schema import golden_schema, metrics_of_schema, result_schema, rows_to_table

__all__ = ["ResultsStore"]


MANIFEST = "_manifest.json"
JOB_COPY = "_job.py"
LOCK = "_lock"
GOLDEN_DIR = "_golden"
QUARANTINE_DIR = "_quarantine"
_MAGIC = b"PAR1"


def resolve_location(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a results location: a URI through pyarrow, else a local path
    (``~`` expanded, made absolute)."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as exc:  # pyarrow raises several types for bad URIs
            raise ResultsDirError(f"Cannot open results location {uri!r}: {exc}") from exc
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def put_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` on ``fs`` so that readers see all of it or nothing.

    Local disk: a hidden temporary file in the same folder, fsynced, then renamed over ``path``.
    Object stores: one put, which they make visible atomically.
    """
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ResultsStore:
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
        put_atomic(self.fs, path, data)

    @staticmethod
    def _parquet_bytes(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue().to_pybytes()

    # ---- location and manifest -------------------------------------------------------------
    def check_location(self) -> None:
        """Raise :class:`ResultsDirError` unless the location is a missing/empty dir or ours."""
        info = self._info(self.path)
        if info.type == pafs.FileType.File:
            raise ResultsDirError(
                f"Expected the output location to be a directory, but {self.uri!r} is a file.\n"
                "Pass --out with a new or existing results directory."
            )
        if info.type == pafs.FileType.Directory and self.read_manifest() is None:
            entries = self.fs.get_file_info(pafs.FileSelector(self.path))
            if any(not os.path.basename(e.path).startswith((".", "_")) for e in entries):
                raise ResultsDirError(
                    f"Refusing to write results into {self.uri!r}: it is not empty and holds no "
                    f"{MANIFEST}, so it is not a pytei_ray results directory.\n"
                    "Pass --out with a new or empty directory."
                )

    def read_manifest(self) -> dict[str, Any] | None:
        """The stored manifest, or None if there is none yet."""
        path = self._join(MANIFEST)
        if self._info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            text = f.read().decode()
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsDirError(f"{path} is not valid JSON ({exc}); was it edited?") from exc

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Atomically (re)write the manifest, creating the directory if needed."""
        data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        try:
            self.fs.create_dir(self.path, recursive=True)
            self._put(self._join(MANIFEST), data)
        except OSError as exc:
            raise ResultsDirError(f"Cannot write the results directory {self.location!r}: "
                                  f"{exc}") from exc

    def write_job_source(self, source: str) -> None:
        """Keep a copy of the job file that defines the stored campaign."""
        self._put(self._join(JOB_COPY), source.encode())

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``_lock`` while writing, so two launchers never write one directory at once.

        A lock left by a dead process on this host (e.g. after ``kill -9``) is taken over. On
        object stores there is no atomic create-if-absent, so no lock is taken there.

        Raises:
            ResultsDirError: another live launcher holds the lock (or one on another host).
        """
        if not self._local:
            yield
            return
        os.makedirs(self.path, exist_ok=True)
        path = os.path.join(self.path, LOCK)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive(path):
                    raise ResultsDirError(self._locked_message(path)) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        else:
            raise ResultsDirError(self._locked_message(path))
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @staticmethod
    def _holder_alive(path: str) -> bool:
        try:
            with open(path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            return False  # unreadable: a lock whose writer died while writing it
        if holder.get("host") != socket.gethostname():
            return True  # cannot tell: be safe
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True
        return True

    def _locked_message(self, path: str) -> str:
        try:
            with open(path) as f:
                holder = f.read().strip()
        except OSError:
            holder = "?"
        return (f"Another launcher is writing to {self.location} ({holder}). Wait for it to "
                f"finish; if none is running (it ran on another host and died), delete {path}.")

    # ---- parts -----------------------------------------------------------------------------
    def _list(self, directory: str) -> list[pafs.FileInfo]:
        if self._info(directory).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(directory))
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def part_paths(self, golden: bool = False) -> list[str]:
        """Paths of the stored part files (result parts, or golden parts)."""
        directory = self._join(GOLDEN_DIR) if golden else self.path
        return [i.path for i in self._list(directory)
                if os.path.basename(i.path).startswith("part-") and i.path.endswith(".parquet")]

    def _check_part(self, info: pafs.FileInfo, columns: list[str] | None) -> str | None:
        """Why the part is unreadable, or None if it is whole."""
        if info.size is None or info.size < 12:
            return f"{info.size} bytes, too short for Parquet"
        try:
            with self.fs.open_input_file(info.path) as f:
                head = f.read(4)
                f.seek(info.size - 4)
                tail = f.read(4)
                if head != _MAGIC or tail != _MAGIC:
                    return "missing Parquet magic bytes (torn write?)"
                f.seek(0)
                pq.read_table(f, columns=columns)
        except Exception as exc:  # any decoding failure means the file is unusable
            return f"unreadable ({type(exc).__name__}: {exc})"
        return None

    def quarantine_bad_parts(self) -> list[str]:
        """Move torn/unreadable parts to ``_quarantine/`` (their trials will simply rerun).

        Also removes leftover ``.tmp`` files of interrupted local writes. Returns the moved paths.
        """
        moved = []
        for directory, columns in ((self.path, ["trial_id", "status"]),
                                   (self._join(GOLDEN_DIR), ["model", "mitigation"])):
            for info in self._list(directory):
                name = os.path.basename(info.path)
                if name.startswith(".") and ".tmp-" in name:
                    self.fs.delete_file(info.path)
                    continue
                if not (name.startswith("part-") and name.endswith(".parquet")):
                    continue
                reason = self._check_part(info, columns)
                if reason is None:
                    continue
                self.fs.create_dir(self._join(QUARANTINE_DIR), recursive=True)
                dest = self._join(QUARANTINE_DIR, f"{name}.{int(time.time())}")
                self.fs.move(info.path, dest)
                warnings.warn(f"Moved torn part {info.path} to {dest}: {reason}. "
                              "Its trials will be run again.", stacklevel=2)
                moved.append(info.path)
        return moved

    def stored_metrics(self) -> list[str]:
        """Metric names found in the schemas of the stored result parts (first-seen order)."""
        seen: dict[str, None] = {}
        for path in self.part_paths():
            seen.update(dict.fromkeys(metrics_of_schema(pq.read_schema(path, filesystem=self.fs))))
        return list(seen)

    def conform_parts(self, metrics: Sequence[str]) -> int:
        """Rewrite any part whose schema is not ``result_schema(metrics)`` (adds null columns).

        Needed when a later trial brings a metric the earlier parts lack. Returns parts rewritten.
        """
        schema = result_schema(metrics)
        n = 0
        for path in self.part_paths():
            if pq.read_schema(path, filesystem=self.fs).equals(schema):
                continue
            table = pq.read_table(path, filesystem=self.fs)
            self._put(path, self._parquet_bytes(rows_to_table(table.to_pylist(), schema)))
            n += 1
        return n

    def write_part(self, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], name: str,
                   golden: bool = False) -> str:
        """Atomically write ``rows`` as part ``name`` (``part-*.parquet``); returns its path."""
        if not (name.startswith("part-") and name.endswith(".parquet")):
            raise ValueError(f"Expected a part name 'part-*.parquet', but got {name!r}.")
        schema = golden_schema(metrics) if golden else result_schema(metrics)
        directory = self._join(GOLDEN_DIR) if golden else self.path
        self.fs.create_dir(directory, recursive=True)
        path = f"{directory}/{name}"
        self._put(path, self._parquet_bytes(rows_to_table(rows, schema)))
        return path

    # ---- reading ---------------------------------------------------------------------------
    def read_trial_status(self) -> dict[str, str]:
        """``trial_id -> status`` of every stored row (resume reads only these two columns)."""
        out: dict[str, str] = {}
        for path in self.part_paths():
            t = pq.read_table(path, columns=["trial_id", "status"], filesystem=self.fs)
            out.update(zip(t.column("trial_id").to_pylist(), t.column("status").to_pylist()))
        return out

    def read_rows(self, columns: Sequence[str]) -> list[dict[str, Any]]:
        """The given columns of every stored result row, as dicts (one scan of the parts).

        A column a part lacks (e.g. written by an older version) reads as None.
        """
        rows: list[dict[str, Any]] = []
        for path in self.part_paths():
            names = set(pq.read_schema(path, filesystem=self.fs).names)
            present = [c for c in columns if c in names]
            table = pq.read_table(path, columns=present, filesystem=self.fs)
            missing = dict.fromkeys(c for c in columns if c not in names)
            rows.extend({**missing, **r} for r in table.to_pylist())
        return rows

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
        for path in self.part_paths():
            table = pq.read_table(path, filesystem=self.fs)
            ids = table.column("trial_id").to_pylist()
            keep = [i for i, t in enumerate(ids) if t not in drop]
            if len(keep) == len(ids):
                continue
            removed += len(ids) - len(keep)
            if keep:
                self._put(path, self._parquet_bytes(table.take(keep)))
            else:
                self.fs.delete_file(path)
        return removed
