"""Names and locations of a results directory: the one place that spells them.

Layout::

    DIR/
      _manifest.json          campaign spec + hash, metric names, history   (readers skip "_")
      _job.py                 the job file's source, for reproduction
      part-<run>-<n>.parquet  result rows, one per trial; each file appears atomically
      _golden/part-*.parquet  fault-free evaluations, one per (model, mitigation)
      _steps/part-*.parquet   per-step telemetry of training trials (keyed by trial_id), each
                              part written just before the result part of the same name; a
                              step part without its result part (a kill in between) is removed
                              on resume, so the trial reruns once
      _golden_steps/part-*.parquet
                              per-step telemetry of the golden (fault-free) training windows,
                              trial_id ``golden/<model>/<mitigation>``, each part written just
                              before the golden part of the same name (same crash rules as
                              ``_steps``; several workers may store the same trajectory: dedup
                              by (trial_id, step))
      _artifacts/<key>        bytes cached by job hooks (``ctx.artifact``)
      _quarantine/            torn or unreadable parts moved aside (their trials rerun)
      _report/                the report's default output folder (local datasets)
      _lock                   the launcher writing here (a kernel lock on local disk, a lease
                              object on object stores; see :mod:`pytei_ray.storage.lock`)

Everything outside :mod:`pytei_ray.storage` takes these names (and :func:`resolve_location`)
from here; ``tests/test_storage_layout.py`` greps the package to keep it so. This module
imports no pyarrow until a location is resolved, so the campaign layer can use its names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pytei_ray.errors import ResultsDirError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = [
    "MANIFEST", "JOB_COPY", "LOCK", "GOLDEN_DIR", "STEPS_DIR", "GOLDEN_STEPS_DIR", "QUARANTINE_DIR",
    "ARTIFACTS_DIR", "REPORT_DIR",
    "PART_PREFIX", "PART_SUFFIX", "RESERVED_NAMES", "is_uri", "resolve_location", "join",
    "default_out", "default_report_dir", "part_name", "is_part_name",
    "display_location",
]

MANIFEST = "_manifest.json"
JOB_COPY = "_job.py"
LOCK = "_lock"
GOLDEN_DIR = "_golden"
STEPS_DIR = "_steps"
GOLDEN_STEPS_DIR = "_golden_steps"
QUARANTINE_DIR = "_quarantine"
ARTIFACTS_DIR = "_artifacts"
REPORT_DIR = "_report"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
#: Every name the layout reserves (all start with ``_``, so Parquet readers skip them).
RESERVED_NAMES = (MANIFEST, JOB_COPY, LOCK, GOLDEN_DIR, STEPS_DIR, GOLDEN_STEPS_DIR,
                  QUARANTINE_DIR, ARTIFACTS_DIR, REPORT_DIR)


def is_uri(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a remote URI (``s3://``, ``gs://``...), not a local path or
    ``file://``.

    Example:
        >>> is_uri("s3://b/d"), is_uri("results/x"), is_uri("file:///tmp/x")
        (True, False, False)
    """
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def resolve_location(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a results location.

    A URI goes through :meth:`pyarrow.fs.FileSystem.from_uri` (so its query options work, e.g.
    ``s3://bucket/dir?endpoint_override=127.0.0.1:9000&scheme=http``); anything else is a local
    path, ``~`` expanded and made absolute.

    Raises:
        ResultsDirError: pyarrow cannot open the URI (unknown scheme, bad options).
    """
    import pyarrow.fs as pafs  # lazy: names alone need no pyarrow

    text = os.fspath(uri)
    if "://" in text:
        try:
            return pafs.FileSystem.from_uri(text)
        except Exception as exc:  # pyarrow raises several types for bad URIs
            raise ResultsDirError(f"Cannot open results location {text!r}: {exc}\n"
                                  "Use a local path or a URI that pyarrow knows "
                                  "(s3://bucket/dir, gs://bucket/dir).") from exc
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))


def join(root: str, *names: str) -> str:
    """``root/name/...`` on a pyarrow filesystem path (always ``/``)."""
    return "/".join([root.rstrip("/"), *names])


def display_location(location: str | os.PathLike[str], *names: str) -> str:
    """A location (plus names inside it) as a user reads it: a URI (``file://`` too) without
    its query options (``?endpoint_override=...``), or the absolute local path.

    Example:
        >>> display_location("s3://b/d?scheme=http", "_artifacts", "k")
        's3://b/d/_artifacts/k'
    """
    text = os.fspath(location)
    if "://" in text:
        return join(text.split("?", 1)[0], *names)
    return join(os.path.abspath(os.path.expanduser(text)), *names)


def part_name(run_id: str, seq: int) -> str:
    """The name of part number ``seq`` of run ``run_id``: ``part-<run>-<seq>.parquet`` (the
    parts of one run sort together, in order).

    Example:
        >>> part_name("1a2b", 3)
        'part-1a2b-00003.parquet'
    """
    return f"{PART_PREFIX}{run_id}-{seq:05d}{PART_SUFFIX}"


def is_part_name(name: str) -> bool:
    """Whether a file name is a part file (``part-*.parquet``)."""
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def default_out(campaign_name: str) -> str:
    """Where results go without ``--out``: ``./results/<campaign name>``."""
    return str(Path("results") / campaign_name)


def default_report_dir(location: str | os.PathLike[str]) -> Path:
    """The report's default folder: ``<DIR>/_report`` for a local dataset (``<parent>/_report``
    for a single part file), ``./<name>_report`` for a remote URI.

    Example:
        >>> default_report_dir("s3://bucket/campaigns/drs v2/?region=x").name
        'drs_v2_report'
    """
    text = os.fspath(location)
    if is_uri(text):
        name = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return Path.cwd() / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_') or 'results'}" \
            f"{REPORT_DIR}"
    local = Path(text.removeprefix("file://")).expanduser()
    return (local.parent if local.is_file() else local) / REPORT_DIR
