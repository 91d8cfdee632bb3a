"""Files on any pyarrow filesystem: atomic writes and whole-or-torn Parquet parts.

On a local disk a file is written to ``.<name>.tmp-<uuid>``, fsynced and renamed over its
final name; on object stores (S3, GCS) a single put is already atomic. A part is read once
(footer and the wanted columns) after checking its magic bytes, so a torn write is told apart
from a whole file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["open_part", "parquet_bytes", "put_atomic"]

_MAGIC = b"PAR1"


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


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of a zstd-compressed Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def open_part(fs: pafs.FileSystem, info: pafs.FileInfo, columns: Sequence[str] | None,
              extra: Callable[[pa.Schema], list[str]] | None = None
              ) -> tuple[pa.Schema, pa.Table] | str:
    """Read a part once: its schema and the given columns (those it has, plus
    ``extra(schema)``); or why it is unreadable (a string)."""
    if info.size is None or info.size < 12:
        return f"{info.size} bytes, too short for Parquet"
    try:
        with fs.open_input_file(info.path) as f:
            head = f.read(4)
            f.seek(info.size - 4)
            tail = f.read(4)
            if head != _MAGIC or tail != _MAGIC:
                return "missing Parquet magic bytes (torn write?)"
            f.seek(0)
            part = pq.ParquetFile(f)
            schema = part.schema_arrow
            want = None if columns is None else [c for c in columns if c in schema.names]
            if want is not None and extra is not None:
                want += [c for c in extra(schema) if c not in want]
            return schema, part.read(columns=want)
    except Exception as exc:  # any decoding failure means the file is unusable
        return f"unreadable ({type(exc).__name__}: {exc})"
