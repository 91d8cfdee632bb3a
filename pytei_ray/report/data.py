"""Read a results dataset (local dir or cloud URI) into a DataFrame, tolerating a live campaign.

A campaign writes ``part-*.parquet`` files that appear atomically; files or folders whose name
starts with ``.`` or ``_`` are temporary or auxiliary (the layout, the report's default folder
included, is :mod:`pytei_ray.storage.layout`) and are never read. A part that cannot be read
(torn, truncated, not Parquet) is skipped with a :class:`SkippedPartWarning` instead of failing
the whole report.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pytei_ray.columns import RESULT_HEAD, RESULT_TAIL, golden_column, metric_of_golden
from pytei_ray.errors import ResultsDirError
from pytei_ray.storage.layout import JOB_COPY, MANIFEST, PART_SUFFIX, join, resolve_location
from pytei_ray.storage.manifest import parse_manifest

__all__ = [
    "SCHEMA_COLUMNS",
    "Dataset",
    "SkippedPartWarning",
    "extra_factors",
    "load_dataset",
    "load_results",
    "metric_columns",
]

#: Non-metric columns of the result-row schema (the storage schema's, not a copy).
SCHEMA_COLUMNS = frozenset(RESULT_HEAD + RESULT_TAIL)


class SkippedPartWarning(UserWarning):
    """A part file of the dataset could not be read and was left out of the report."""


@dataclass
class Dataset:
    """A loaded results dataset and what was learned while loading it.

    Attributes:
        path: The dataset location as given (local path or URI).
        frame: All result rows, one per trial (duplicates of a retried trial collapsed).
        parts: Part files read.
        skipped: ``(part, reason)`` for every part left out.
        manifest: The campaign's manifest, or ``{}`` (none, or not a JSON object: then a
            warning says why).
        job_copy: Path (as given, under ``path``) of the stored job source, if any.
    """

    path: str
    frame: pd.DataFrame
    parts: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    job_copy: str | None = None


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _read_manifest(fs: pafs.FileSystem, root: str) -> dict[str, Any]:
    """The manifest (whatever fields it has); ``{}`` with a warning when it is not a JSON object
    (the rows still count)."""
    path = join(root, MANIFEST)
    try:
        with fs.open_input_stream(path) as f:
            text = f.read()
    except (FileNotFoundError, OSError):
        return {}
    try:
        return parse_manifest(text, path, strict=False)
    except ResultsDirError as exc:
        warnings.warn(f"Ignoring the manifest: {exc}", stacklevel=3)
        return {}


def _hive_values(relative: str) -> dict[str, str]:
    values = {}
    for part in relative.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep and key:
            values[key] = value
    return values


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per trial id: an ok row over a failed one, then the latest."""
    if "trial_id" not in df or not df["trial_id"].duplicated().any():
        return df
    order = pd.DataFrame({"ok": df["status"].eq("ok") if "status" in df else True})
    if "started_at" in df:
        order["t"] = df["started_at"]
    order = order.sort_values(list(order.columns), kind="stable", na_position="first")
    df = df.loc[order.index]
    return df.drop_duplicates("trial_id", keep="last").sort_index()


def load_dataset(path: str | os.PathLike[str], dedupe: bool = True) -> Dataset:
    """Load a results dataset with its bookkeeping (parts read, parts skipped, manifest).

    Args:
        path: Local directory, ``file://`` URI, or cloud URI (``s3://``, ``gs://``, ...).
        dedupe: Collapse repeated rows of one ``trial_id`` (a retried trial): an ok row wins
            over a failed one, then the most recent ``started_at``.

    Returns:
        A :class:`Dataset`; its frame is empty (no columns) when no part exists yet.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ResultsDirError: ``path`` is not a location (e.g. an unknown URI scheme).
    """
    text = os.fspath(path)
    fs, root = resolve_location(text)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"No results dataset at {text!r}: the path does not exist.")
    if info.type == pafs.FileType.File:
        files, root = [root], root.rsplit("/", 1)[0]
    else:
        selector = pafs.FileSelector(root, recursive=True)
        files = sorted(
            i.path for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File and i.path.endswith(PART_SUFFIX)
            and not _hidden(i.path[len(root):])
        )
    def read(file: str) -> pa.Table | str:
        try:
            return pq.read_table(file, filesystem=fs)
        except (OSError, pa.ArrowException, ValueError) as exc:
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    # parts are independent files: read them concurrently (object stores are latency-bound)
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(files)))) as pool:
        results = list(pool.map(read, files))
    tables, parts, skipped = [], [], []
    for file, table in zip(files, results):
        if isinstance(table, str):
            skipped.append((file, table))
            warnings.warn(f"Skipping unreadable part {file}: {table}", SkippedPartWarning,
                          stacklevel=2)
            continue
        for key, value in _hive_values(file[len(root):].lstrip("/")).items():
            if key not in table.column_names:
                table = table.append_column(key, pa.array([value] * table.num_rows))
        tables.append(table)
        parts.append(file)
    frame = _concat(tables)
    if dedupe:
        frame = _dedupe(frame)
    job = None
    try:
        if fs.get_file_info(join(root, JOB_COPY)).type == pafs.FileType.File:
            job = join(text, JOB_COPY)
    except OSError:
        pass
    return Dataset(text, frame.reset_index(drop=True), parts, skipped,
                   _read_manifest(fs, root), job)


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame()
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowException, TypeError):
        frames = [t.to_pandas() for t in tables if t.num_rows]
        return pd.concat(frames, ignore_index=True) if frames else tables[0].to_pandas()


def load_results(path: str | os.PathLike[str], dedupe: bool = True) -> pd.DataFrame:
    """Read every readable part of a results dataset into one DataFrame (one row per trial).

    Args:
        path: Local directory, ``file://`` URI, or cloud URI (``s3://bucket/campaign``).
        dedupe: Collapse repeated rows of a retried trial (see :func:`load_dataset`).

    Returns:
        The result rows; empty when no part has been written yet.

    Example:
        >>> df = load_results("results/drs")                        # doctest: +SKIP
        >>> df.groupby(["model", "ber"])["auc"].mean()               # doctest: +SKIP
    """
    return load_dataset(path, dedupe=dedupe).frame


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Metric columns: every ``X`` for which a ``golden_X`` column exists, in column order."""
    return [c for c in df.columns if golden_column(c) in df.columns]


def extra_factors(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> list[str]:
    """Extra factor columns (beyond the base factors), e.g. ``bit`` for a per-bit campaign.

    Taken from the manifest's factor list when it has one, else every column that is neither in
    the row schema nor a metric / golden metric.
    """
    metrics = set(metric_columns(df))
    known = SCHEMA_COLUMNS | metrics | {golden_column(m) for m in metrics}
    listed = _manifest_factors(manifest or {})
    if listed is not None:
        return [c for c in listed if c in df.columns and c not in known]
    return [c for c in df.columns if c not in known and metric_of_golden(c) is None]


def _manifest_factors(manifest: dict[str, Any]) -> list[str] | None:
    for holder in (manifest, manifest.get("spec") or {}, manifest.get("campaign") or {}):
        if isinstance(holder, dict):
            factors = holder.get("factors")
            if isinstance(factors, dict):
                return list(factors)
            if isinstance(factors, list) and all(isinstance(f, str) for f in factors):
                return factors
    return None
