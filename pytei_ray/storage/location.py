"""Whether a location can become (or is) a results directory, checked before anything is written.

Refused with :class:`~pytei_ray.errors.ResultsDirError`: a file; a path under a regular file; a
local location whose nearest existing folder cannot be written (read-only, ``/proc``); an
object-store location in a bucket that does not exist (unless the URI has
``allow_bucket_creation=true``, pyarrow's S3 option); a non-empty folder that is not a results
directory. :meth:`~pytei_ray.storage.ResultsStore.check_location` adds the manifest's validity.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
import uuid
from collections.abc import Callable

import pyarrow.fs as pafs

from pytei_ray.errors import ResultsDirError

from .layout import MANIFEST

__all__ = ["check_location", "writable"]


def check_location(fs: pafs.FileSystem, path: str, uri: str, display: str, *, local: bool,
                   has_manifest: Callable[[], bool]) -> None:
    """Raise :class:`ResultsDirError` unless ``path`` on ``fs`` can become or is a results
    directory (``uri`` as given, ``display`` for messages, ``has_manifest`` asks the store)."""
    try:
        info = fs.get_file_info(path)
    except OSError as exc:  # e.g. NotADirectoryError: a parent is a regular file
        if local:
            _check_local_parents(path, display)
        raise ResultsDirError(f"Cannot use the results location {display!r}: {exc}\n"
                              "Pass `out=...` with a new or existing results directory.") from exc
    if info.type == pafs.FileType.File:
        raise ResultsDirError(
            f"Expected the output location to be a directory, but {display!r} is a "
            "file.\nPass `out=...` with a new or existing results directory.")
    if local:
        _check_local_parents(path, display)
    elif info.type == pafs.FileType.NotFound:
        _check_bucket(fs, path, uri, display)
    if info.type == pafs.FileType.Directory and not has_manifest():
        entries = fs.get_file_info(pafs.FileSelector(path))
        if any(not os.path.basename(e.path).startswith((".", "_")) for e in entries):
            raise ResultsDirError(
                f"Refusing to write results into {display!r}: it is not empty and holds "
                f"no {MANIFEST}, so it is not a pytei_ray results directory.\n"
                "Pass `out=...` with a new or empty directory.")


def _check_bucket(fs: pafs.FileSystem, path: str, uri: str, display: str) -> None:
    """An object-store location that does not exist yet needs an existing bucket, unless
    the URI lets pyarrow create it (``?allow_bucket_creation=true``, pyarrow's S3 option):
    the first write would fail, and ``--dry-run`` must refuse what the run refuses."""
    bucket = path.lstrip("/").split("/", 1)[0]
    if not bucket or fs.type_name not in ("s3", "gcs"):
        return
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    if [v.lower() for v in query.get("allow_bucket_creation", [])] in (["true"], ["1"]):
        return
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError:  # e.g. no permission to look at the bucket itself: the first write tells
        return
    if missing:
        raise ResultsDirError(
            f"Cannot use the results location {display!r}: its bucket {bucket!r} "
            "does not exist.\nCreate the bucket first, or add allow_bucket_creation=true "
            "to the URI's options (e.g. s3://bucket/dir?allow_bucket_creation=true) to let "
            "pyarrow create it, or pass `out=...` with a location in an existing bucket.")

def _check_local_parents(location: str, display: str) -> None:
    """The nearest existing ancestor must be a folder we can create files in."""
    path = location
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise ResultsDirError(
            f"Cannot create the results directory {display!r}: {path} is a regular "
            "file, not a folder.\nPass `out=...` with a path whose parents are folders.")
    if not writable(path):
        raise ResultsDirError(
            f"Cannot write the results directory {display!r}: {path} does not accept "
            "new files (read-only, or a virtual filesystem like /proc).\nPass `out=...` with a "
            "writable location.")

def writable(folder: str) -> bool:
    """Whether a file can be created in the local ``folder``.

    ``os.access`` first (cheap; it says yes to root everywhere), then a probe: a hidden
    file created with ``O_EXCL`` and removed at once, which root cannot fake past a
    read-only mount or ``/proc``. The folder is left as it was (its mtime aside).
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    probe = os.path.join(folder, f".pytei-probe-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EEXIST,):
            return True
        return False
    os.close(fd)
    os.unlink(probe)
    return True
