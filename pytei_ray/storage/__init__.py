"""Results storage: the one owner of a results directory (layout, manifest, parts, lock).

* :mod:`~pytei_ray.storage.layout`: every name in the directory, location resolving, defaults.
* :mod:`~pytei_ray.storage.manifest`: building, parsing and validating ``_manifest.json``.
* :mod:`~pytei_ray.storage.store`: :class:`ResultsStore`, atomic parts, resume, quarantine.
* :mod:`~pytei_ray.storage.lock`: one launcher per directory (kernel lock / object-store lease).
* :mod:`~pytei_ray.storage.writer`: :class:`ResultsWriter`, buffered part writing.
* :mod:`~pytei_ray.storage.schema`: the Arrow schemas of result and golden rows.

The layout names import without pyarrow (the campaign layer uses them); the rest loads on use.
"""

from __future__ import annotations

from typing import Any

from .layout import (
    ARTIFACTS_DIR,
    GOLDEN_DIR,
    GOLDEN_STEPS_DIR,
    JOB_COPY,
    LOCK,
    MANIFEST,
    QUARANTINE_DIR,
    REPORT_DIR,
    STEPS_DIR,
    default_out,
    default_report_dir,
    display_location,
    is_uri,
    resolve_location,
)

__all__ = [
    "ResultsStore",
    "ResultsWriter",
    "result_schema",
    "golden_schema",
    "rows_to_table",
    "RESERVED",
    "RESULT_COLUMNS",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "JOB_COPY",
    "LOCK",
    "GOLDEN_DIR",
    "STEPS_DIR",
    "GOLDEN_STEPS_DIR",
    "QUARANTINE_DIR",
    "ARTIFACTS_DIR",
    "REPORT_DIR",
    "default_out",
    "default_report_dir",
    "display_location",
    "is_uri",
    "resolve_location",
    "put_atomic",
    "parse_manifest",
    "validate_manifest",
    "new_manifest",
    "updated_manifest",
    "touch",
]

_LAZY = {
    "ResultsStore": "store", "put_atomic": "files", "ResultsWriter": "writer",
    "result_schema": "schema", "golden_schema": "schema", "rows_to_table": "schema",
    "RESERVED": "schema", "RESULT_COLUMNS": "schema",
    "MANIFEST_FORMAT": "manifest", "parse_manifest": "manifest", "validate_manifest": "manifest",
    "new_manifest": "manifest", "updated_manifest": "manifest", "touch": "manifest",
}


def __getattr__(name: str) -> Any:
    """Load the pyarrow-backed parts of the package on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytei_ray.storage' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
