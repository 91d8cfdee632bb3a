"""Click-log data: synthetic generator, seeded split with train-only vocabularies, loaders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pytei_ray.studies.drs import (
    ClickLog,
    load_criteo,
    load_movielens,
    preprocess_dense,
    split,
    synthetic_criteo,
)


def test_synthetic_is_deterministic_and_seed_dependent() -> None:
    a, b, c = (synthetic_criteo(3000, seed=s) for s in (5, 5, 6))
    for name in ("dense", "sparse", "labels"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
    assert a.field_dims == b.field_dims


def test_synthetic_looks_like_criteo() -> None:
    log = synthetic_criteo(20_000, seed=0)
    assert (log.dense.shape, log.sparse.shape, log.labels.shape) == (
        (20_000, 13),
        (20_000, 26),
        (20_000,),
    )
    assert log.dense.dtype == torch.float32 and log.sparse.dtype == torch.int64
    assert 0.22 < log.ctr < 0.28
    assert (log.dense >= 0).all() and torch.isfinite(log.dense).all()
    assert (log.dense == 0).float().mean() > 0.1  # zeros and missing values
    # Power-law categories: in a large field the top category is far more frequent than
    # the median one, and many categories never occur.
    col = log.sparse[:, 2]
    counts = torch.bincount(col[col > 0], minlength=log.field_dims[2])[1:]
    assert counts[0] > 50 * max(1, int(counts.median()))
    assert (counts == 0).sum() > counts.numel() // 2
    assert set(torch.unique(log.labels).tolist()) == {0.0, 1.0}


def test_split_is_seeded_disjoint_and_refits_vocab_on_train() -> None:
    log = synthetic_criteo(5000, seed=1)
    tr, va, te = split(log, seed=3)
    tr2, _, te2 = split(log, seed=3)
    assert (len(tr), len(va), len(te)) == (4000, 500, 500)
    assert torch.equal(tr.sparse, tr2.sparse) and torch.equal(te.labels, te2.labels)
    assert tr.field_dims == va.field_dims == te.field_dims
    assert tr.name.endswith("/train") and te.name.endswith("/test")
    for f, dim in enumerate(tr.field_dims):
        # Every known index occurs in train; ids are ordered by descending train count.
        counts = torch.bincount(tr.sparse[:, f], minlength=dim)[1:]
        assert (counts > 0).all()
        assert (counts[:-1] >= counts[1:]).all()
    # Categories only seen in val/test become OOV: some test rows are OOV where the raw row
    # was a real category.
    assert (te.sparse == 0).float().mean() > (log.sparse == 0).float().mean()
    assert not torch.equal(split(log, seed=4)[0].dense, tr.dense)


def test_split_min_count_and_validation() -> None:
    log = synthetic_criteo(3000, seed=0)
    tr1, _, _ = split(log, seed=0)
    tr5, _, _ = split(log, seed=0, min_count=5)
    assert all(a >= b for a, b in zip(tr1.field_dims, tr5.field_dims))
    assert sum(tr5.field_dims) < sum(tr1.field_dims)
    with pytest.raises(ValueError, match="fractions"):
        split(log, seed=0, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="min_count"):
        split(log, seed=0, min_count=0)


def test_split_oov_mapping_exact() -> None:
    # 10 rows; category 3 of field 0 only occurs in the rows that land outside train.
    sparse = torch.tensor([[1], [1], [2], [1], [2], [1], [1], [2], [3], [3]])
    log = ClickLog(torch.zeros(10, 0), sparse, torch.zeros(10), [4], "toy")
    perm = np.random.default_rng(0).permutation(10)
    tr, va, te = split(log, seed=0, fractions=(0.6, 0.2, 0.2))
    train_raw = set(sparse[perm[:6], 0].tolist())
    assert tr.field_dims == [len(train_raw) + 1]
    held_out_raw = sparse[perm[6:], 0]
    held_out_new = torch.cat([va.sparse[:, 0], te.sparse[:, 0]])
    for raw, new in zip(held_out_raw.tolist(), held_out_new.tolist()):
        assert (new == 0) == (raw not in train_raw)


def test_clicklog_validates() -> None:
    with pytest.raises(ValueError, match=r"Field 0: indices must lie in \[0, 2\)"):
        ClickLog(torch.zeros(2, 0), torch.tensor([[0], [2]]), torch.zeros(2), [2])
    with pytest.raises(ValueError, match="float32 labels"):
        ClickLog(
            torch.zeros(2, 0), torch.tensor([[0], [1]]), torch.zeros(2, dtype=torch.int64), [2]
        )


def test_preprocess_dense() -> None:
    out = preprocess_dense(np.array([[np.nan, -3.0, 0.0, math.e - 1]]))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))


def _criteo_line(label: int, ints: list[str], cats: list[str]) -> str:
    assert len(ints) == 13 and len(cats) == 26
    return "\t".join([str(label), *ints, *cats]) + "\n"


def test_load_criteo(tmp_path: Path) -> None:
    ints = [str(i) for i in range(13)]
    cats = [f"{i:08x}" for i in range(26)]
    lines = [
        _criteo_line(1, ints, cats),
        _criteo_line(0, [""] * 13, [""] * 26),  # every feature missing
        _criteo_line(0, ["-1", *ints[1:]], ["68fd1e64", *cats[1:]]),
        _criteo_line(1, ints, ["68fd1e64", *cats[1:]]),
    ]
    path = tmp_path / "train.txt"
    path.write_text("".join(lines))
    log = load_criteo(path, min_count=2)
    assert len(log) == 4 and log.n_dense == 13 and log.n_fields == 26
    assert log.labels.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert torch.allclose(log.dense[0], torch.log1p(torch.arange(13.0)))
    assert (log.dense[1] == 0).all() and (log.sparse[1] == 0).all()
    assert log.dense[2, 0] == 0  # negative count clipped to 0
    assert log.sparse[:, 0].tolist() == [1, 0, 2, 2]
    assert log.field_dims[0] == 3 and log.field_dims[1] == 2
    assert log.min_count == 2
    assert len(load_criteo(path, max_rows=2)) == 2
    (tmp_path / "bad.txt").write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: a Criteo line has 40"):
        load_criteo(tmp_path / "bad.txt")


def test_criteo_unseen_categories_map_to_oov(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(200):
        ints = [str(i)] + [str(int(v)) if v >= 0 else "" for v in rng.integers(-1, 50, 12)]
        # Rows < 160 draw from 3 common tokens per field; later rows carry unique tokens.
        cats = [f"{int(v):08x}" if i < 160 else f"new{i:05d}" for v in rng.integers(0, 3, 26)]
        lines.append(_criteo_line(int(rng.integers(0, 2)), ints, cats))
    path = tmp_path / "train.txt"
    path.write_text("".join(lines))
    tr, va, te = split(load_criteo(path), seed=0)
    row_id = lambda part: torch.expm1(part.dense[:, 0]).round().long()  # noqa: E731
    n_new_train = int((row_id(tr) >= 160).sum())
    assert tr.field_dims == [3 + n_new_train + 1] * 26
    for part in (va, te):
        new = row_id(part) >= 160
        assert new.any() and (~new).any()
        assert (part.sparse[new] == 0).all()  # unseen in train -> OOV
        assert (part.sparse[~new] > 0).all()  # common tokens keep their index
        assert (part.sparse[~new] <= 3).all()  # ... and are the most frequent ones


def test_load_movielens(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
        "3::3408::1::978297039\n"
    )
    log = load_movielens(path)
    assert log.n_dense == 0 and log.dense.shape == (4, 0)
    assert log.labels.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert log.sparse.tolist() == [[1, 1], [1, 2], [2, 1], [3, 3]]
    assert log.field_dims == [4, 4]
    (tmp_path / "bad.dat").write_text("1::2::x::4\n")
    with pytest.raises(ValueError, match="UserID::MovieID::Rating::Timestamp"):
        load_movielens(tmp_path / "bad.dat")


def test_movielens_split_oov(tmp_path: Path) -> None:
    rows = [f"{u}::{m}::{(u + m) % 5 + 1}::0\n" for u in range(1, 30) for m in range(1, 8)]
    rows.append("999::7777::5::0\n")  # a user and a movie seen once
    path = tmp_path / "ratings.dat"
    path.write_text("".join(rows))
    log = load_movielens(path)
    tr, va, te = split(log, seed=1, min_count=2)
    assert tr.field_dims == [30, 8]  # the singletons never enter the vocabulary
    everything = torch.cat([tr.sparse, va.sparse, te.sparse])
    assert (everything == 0).sum() >= 2
