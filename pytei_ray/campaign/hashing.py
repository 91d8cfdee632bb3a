"""The stable hash of a JSON-able value: sha256 of its JSON text with sorted keys.

Stored values depend on the exact text hashed (the spec hash in a manifest, trial ids and seeds
in every row, the artifact keys of trained checkpoints), so each caller keeps its separators:
the campaign's hashes use compact JSON; the studies' checkpoint keys were first written with
``json.dumps``'s default separators and keep them (``compact=False``), so cached checkpoints
stay valid.

Example:
    >>> stable_sha256({"b": 1, "a": [1, 2]}).hexdigest()[:12]
    '94a786c3662b'
    >>> stable_sha256({"a": [1, 2], "b": 1}).hexdigest()[:12]  # key order does not matter
    '94a786c3662b'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["stable_sha256"]


def stable_sha256(value: Any, *, compact: bool = True) -> Any:
    """``hashlib.sha256`` of ``value``'s JSON with sorted keys (``.digest()``/``.hexdigest()``).

    Args:
        value: JSON-able (dicts, lists, strings, numbers, booleans, None).
        compact: ``(",", ":")`` separators; False: ``json.dumps``'s defaults (``", "``, ``": "``).
    """
    separators = (",", ":") if compact else (", ", ": ")
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=separators).encode())
