"""Loaders of real click logs into :class:`~pytei_ray.studies.drs.data.ClickLog`.

Both loaders emit *provisional* per-field indices (order of first appearance in the file,
``0`` = missing); :func:`~pytei_ray.studies.drs.data.split` refits the vocabularies on the
train rows, mapping categories unseen in train (or rarer than ``min_count`` there) to the OOV
index 0.
Nothing is downloaded: pass the path of a local file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .data import ClickLog, preprocess_dense

__all__ = ["load_criteo", "load_movielens"]

_CRITEO_DENSE, _CRITEO_SPARSE = 13, 26


def _check_min_count(min_count: int) -> int:
    if int(min_count) < 1:
        raise ValueError(f"Expected `min_count` to be >= 1, but got {min_count}.")
    return int(min_count)


def load_criteo(
    path: str | os.PathLike[str],
    max_rows: int | None = None,
    min_count: int = 1,
    name: str = "criteo",
) -> ClickLog:
    """Read a Criteo display-advertising ``train.txt`` file.

    Each line is ``label \\t I1..I13 \\t C1..C26``: a 0/1 label, 13 integer counts and 26 hashed
    categorical values (hex strings); any feature may be empty (missing). Integers get the
    shared preprocessing (:func:`~pytei_ray.studies.drs.data.preprocess_dense`: missing/negative
    -> 0, ``log(1 + x)``); an empty categorical is index 0.

    Args:
        path: The tab-separated file.
        max_rows: Read at most this many lines (the file's head).
        min_count: Train-count threshold recorded for :func:`~pytei_ray.studies.drs.data.split`.
        name: ``ClickLog.name``.

    Returns:
        A :class:`ClickLog` with provisional indices.

    Raises:
        ValueError: On a line without 40 fields or with a non-numeric label or integer.
    """
    min_count = _check_min_count(min_count)
    n_cols = 1 + _CRITEO_DENSE + _CRITEO_SPARSE
    vocabs: list[dict[str, int]] = [{} for _ in range(_CRITEO_SPARSE)]
    labels: list[float] = []
    dense: list[list[float]] = []
    sparse: list[list[int]] = []
    with open(Path(path), encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if max_rows is not None and len(labels) >= max_rows:
                break
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != n_cols:
                raise ValueError(
                    f"{path}:{lineno}: a Criteo line has {n_cols} tab-separated "
                    f"fields (label, 13 integers, 26 categoricals)\n"
                    f"  observed: {len(cols)} fields"
                )
            try:
                labels.append(float(int(cols[0])))
                dense.append([float(v) if v else np.nan for v in cols[1 : 1 + _CRITEO_DENSE]])
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: label and integer features must be "
                    f"integers or empty\n  observed: {err}"
                ) from None
            row = []
            for vocab, token in zip(vocabs, cols[1 + _CRITEO_DENSE :]):
                row.append(vocab.setdefault(token, len(vocab) + 1) if token else 0)
            sparse.append(row)
    n = len(labels)
    return ClickLog(
        dense=preprocess_dense(np.asarray(dense, dtype=np.float64).reshape(n, _CRITEO_DENSE)),
        sparse=torch.tensor(sparse, dtype=torch.int64).reshape(n, _CRITEO_SPARSE),
        labels=torch.tensor(labels, dtype=torch.float32),
        field_dims=[len(v) + 1 for v in vocabs],
        name=name,
        min_count=min_count,
    )


def load_movielens(
    path: str | os.PathLike[str],
    max_rows: int | None = None,
    min_count: int = 1,
    threshold: float = 3.0,
    name: str = "movielens",
) -> ClickLog:
    """Read MovieLens-1M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``).

    A rating above ``threshold`` (default: 4 and 5 stars) is a click. The log has two
    categorical fields, user and movie, and no numeric features (``n_dense == 0``).

    Args:
        path: The ``::``-separated ratings file.
        max_rows: Read at most this many lines.
        min_count: Train-count threshold recorded for :func:`~pytei_ray.studies.drs.data.split`.
        threshold: Ratings strictly above it are clicks.
        name: ``ClickLog.name``.

    Returns:
        A :class:`ClickLog` with provisional indices.

    Raises:
        ValueError: On a malformed line.
    """
    min_count = _check_min_count(min_count)
    users: dict[str, int] = {}
    movies: dict[str, int] = {}
    sparse: list[tuple[int, int]] = []
    labels: list[float] = []
    with open(Path(path), encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, start=1):
            if max_rows is not None and len(labels) >= max_rows:
                break
            line = line.strip()
            if not line:
                continue
            cols = line.split("::")
            try:
                if len(cols) != 4:
                    raise ValueError(f"{len(cols)} fields")
                rating = float(cols[2])
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: expected UserID::MovieID::Rating::Timestamp"
                    f"\n  observed: {line!r} ({err})"
                ) from None
            sparse.append(
                (
                    users.setdefault(cols[0], len(users) + 1),
                    movies.setdefault(cols[1], len(movies) + 1),
                )
            )
            labels.append(1.0 if rating > threshold else 0.0)
    n = len(labels)
    return ClickLog(
        dense=torch.zeros(n, 0),
        sparse=torch.tensor(sparse, dtype=torch.int64).reshape(n, 2),
        labels=torch.tensor(labels, dtype=torch.float32),
        field_dims=[len(users) + 1, len(movies) + 1],
        name=name,
        min_count=min_count,
    )
