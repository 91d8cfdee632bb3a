"""The manifest (``_manifest.json``): building, parsing and validating it, with a format version.

A manifest records what a results directory holds: the campaign spec and its hash (a changed
campaign is refused), the metric names, the job that made it and the history of extensions.
Its ``format`` (:data:`MANIFEST_FORMAT`) is the schema version; a reader refuses any other.

Example:
    >>> m = new_manifest({"name": "c", "params": {}}, spec_hash="h", n_trials=4, metrics=["acc"],
    ...                  job_path="job.py", source_sha256="s")
    >>> validate_manifest(m, "DIR/_manifest.json")["campaign"]
    'c'
    >>> validate_manifest({"format": MANIFEST_FORMAT}, "DIR/_manifest.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pytei_ray.errors.ResultsDirError: DIR/_manifest.json lacks the field 'spec' ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pytei_ray.errors import ResultsDirError

from .layout import MANIFEST

__all__ = ["MANIFEST_FORMAT", "new_manifest", "updated_manifest", "parse_manifest",
           "validate_manifest", "manifest_bytes", "touch"]

#: Schema version of the manifest; bump it (and teach :func:`validate_manifest`) on any change.
MANIFEST_FORMAT = "pytei_ray.results/1"

# field -> (expected types, what it holds), checked in this order
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "spec": ((dict,), "the campaign spec, a JSON object"),
    "format": ((str,), f"the manifest format, {MANIFEST_FORMAT!r}"),
    "campaign": ((str,), "the campaign name"),
    "spec_hash": ((str,), "the hash of the spec"),
    "n_trials": ((int,), "the number of trials in the grid"),
    "metrics": ((list,), "the metric names, a list"),
    "job": ((dict,), "the job that wrote the results, a JSON object"),
}
_JOB_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "source_sha256": ((str,), "the hash of the job file's source"),
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def touch(manifest: dict[str, Any]) -> dict[str, Any]:
    """Set ``updated_at`` to now (after a change the caller is about to store); returns it."""
    manifest["updated_at"] = _now()
    return manifest


def new_manifest(spec: dict[str, Any], *, spec_hash: str, n_trials: int, metrics: Sequence[str],
                 job_path: str | None, source_sha256: str,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a new results directory.

    Args:
        spec: the campaign spec (a JSON-able dict with ``name`` and ``params``).
        spec_hash: its hash (``pytei_ray.campaign.spec_hash``).
        n_trials: trials in the grid.  metrics: metric names known so far.
        job_path, source_sha256: the job file and the hash of its source.
        overrides: launcher flags that replaced parts of the campaign, recorded so that a
            plain rerun keeps them (``repetitions_override``, ``precision_override``).
    """
    from pytei_ray import __version__

    now = _now()
    return {"format": MANIFEST_FORMAT, "campaign": spec["name"], "spec": spec,
            "spec_hash": spec_hash, "n_trials": n_trials, "metrics": list(metrics),
            "job": {"path": job_path, "source_sha256": source_sha256,
                    "params": spec.get("params", {}), **(overrides or {})},
            "version": __version__, "created_at": now, "updated_at": now,
            "history": [{"at": now, "event": "created", "spec_hash": spec_hash}]}


def updated_manifest(old: dict[str, Any], spec: dict[str, Any], *, spec_hash: str,
                     n_trials: int, metrics: Sequence[str], source_sha256: str,
                     overrides: Mapping[str, Any] | None = None,
                     changes: Sequence[str] | None = None) -> dict[str, Any]:
    """``old`` with the current metrics; with ``changes`` (an accepted extension) also the new
    spec, its hash, the trial count and a history entry."""
    now = _now()
    new = dict(old, metrics=list(metrics), updated_at=now)
    if changes:
        new.update(spec=spec, spec_hash=spec_hash, n_trials=n_trials)
        new["job"] = dict(old["job"], source_sha256=source_sha256, **(overrides or {}))
        new["history"] = list(old.get("history") or []) + [
            {"at": now, "event": "extended", "spec_hash": spec_hash, "changes": list(changes)}]
    return new


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The stored form of a manifest (indented, sorted keys)."""
    return json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()


def _fix(where: str) -> str:
    return (f"\n{where} is not one pytei_ray wrote (or it was edited). Restore it from a backup "
            "or version control; or, to start over, move the directory aside and run with a new "
            "`out=DIR` (its part files stay readable with any Parquet reader).")


def validate_manifest(data: Any, where: str = MANIFEST) -> dict[str, Any]:
    """Check a parsed manifest and return it.

    Args:
        data: the parsed JSON.
        where: the manifest's location, for messages.

    Raises:
        ResultsDirError: not an object, another format version, or a field missing or of the
            wrong type (the message names the field and what it should hold).
    """
    if not isinstance(data, dict):
        raise ResultsDirError(f"Expected {where} to hold a JSON object, but it holds "
                              f"{type(data).__name__ if data is not None else 'null'}."
                              + _fix(where))
    fmt = data.get("format")
    if isinstance(fmt, str) and fmt != MANIFEST_FORMAT:
        raise ResultsDirError(
            f"Expected {where} in format {MANIFEST_FORMAT!r}, but it is {fmt!r} (written by "
            "another version of pytei_ray). Use that version, or a new `out=DIR`.")
    for holder, fields, prefix in ((data, _FIELDS, ""), (data.get("job"), _JOB_FIELDS, "job.")):
        for name, (types, meaning) in fields.items():
            if name not in holder or holder[name] is None:
                raise ResultsDirError(f"{where} lacks the field '{prefix}{name}' ({meaning})."
                                      + _fix(where))
            value = holder[name]
            if not isinstance(value, types) or isinstance(value, bool):
                raise ResultsDirError(
                    f"Expected the field '{prefix}{name}' of {where} to be {meaning}, but got "
                    f"{type(value).__name__} {value!r:.60}." + _fix(where))
    if not all(isinstance(m, str) for m in data["metrics"]):
        raise ResultsDirError(f"Expected the field 'metrics' of {where} to be a list of names, "
                              f"but got {data['metrics']!r:.80}." + _fix(where))
    return data


def parse_manifest(text: bytes | str, where: str = MANIFEST, *,
                   strict: bool = True) -> dict[str, Any]:
    """Parse and validate the bytes of a manifest (see :func:`validate_manifest`).

    Args:
        text: the stored bytes.  where: its location, for messages.
        strict: check every field (what a writer needs before it resumes); False: only that it
            is a JSON object (what a reader such as the report needs: it uses what it finds).

    Raises:
        ResultsDirError: not JSON, not an object, or (strict) not a valid manifest.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsDirError(f"{where} is not valid JSON ({exc})." + _fix(where)) from exc
    if not strict and isinstance(data, dict):
        return data
    return validate_manifest(data, where)
