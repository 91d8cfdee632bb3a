"""DRS model structure: interface, parameter groups (target sets), n_dense=0, determinism."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from torch import nn

from pytei_ray.studies.drs import MODELS, TARGET_SETS, build_model

FIELD_DIMS = [7, 3, 11, 5]


def _batch(n_dense: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(batch, n_dense, generator=gen) * 3
    sparse = torch.stack([torch.randint(0, d, (batch,), generator=gen) for d in FIELD_DIMS], 1)
    return dense, sparse


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n_dense", [0, 13])
def test_forward_shape_and_backward(name: str, n_dense: int) -> None:
    model = build_model(name, FIELD_DIMS, n_dense, seed=0)
    dense, sparse = _batch(n_dense)
    out = model(dense, sparse)
    assert out.shape == (8,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_top_level_groups_and_target_sets(name: str) -> None:
    model = build_model(name, FIELD_DIMS, 13, seed=0)
    assert [n for n, _ in model.named_children()] == ["embedding", "dense", "predictor"]
    names = [n for n, _ in model.named_parameters()]
    for group in ("embedding", "dense", "predictor"):
        hits = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in TARGET_SETS[group])]
        assert hits, f"{name}: no parameter in target set {group!r}"
    assert TARGET_SETS["all"] is None
    # The groups partition the parameters.
    groups = [g for key in ("embedding", "dense", "predictor") for g in TARGET_SETS[key]]
    assert all(sum(fnmatch.fnmatchcase(n, g) for g in groups) == 1 for n in names)
    assert "embedding.factors.weight" in names


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predictor_is_last_linear_and_mlps_use_linear(name: str) -> None:
    model = build_model(name, FIELD_DIMS, 13, seed=0)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears[-1] == "predictor"
    if name != "fm":  # FM has no MLP
        assert any(n.startswith("dense.") for n in linears)


def test_build_model_is_deterministic_and_leaves_global_rng() -> None:
    state = torch.get_rng_state()
    a = build_model("dcn", FIELD_DIMS, 13, seed=3).state_dict()
    b = build_model("dcn", FIELD_DIMS, 13, seed=3).state_dict()
    c = build_model("dcn", FIELD_DIMS, 13, seed=4).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_state_dict_holds_parameters_only() -> None:
    model = build_model("dlrm", FIELD_DIMS, 13, seed=0)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}


def test_shared_table_offsets_separate_fields() -> None:
    model = build_model("fm", FIELD_DIMS, 0, seed=0)
    emb = model.embedding
    sparse = torch.zeros(1, len(FIELD_DIMS), dtype=torch.long)
    rows = emb(torch.zeros(1, 0), sparse)[0]
    table = emb.factors.weight
    starts = [0, 7, 10, 21]
    assert all(torch.equal(rows[f], table[s]) for f, s in enumerate(starts))
    assert table.shape[0] == sum(FIELD_DIMS)


def test_unknown_model_and_bad_args() -> None:
    with pytest.raises(KeyError, match="Unknown DRS model"):
        build_model("nope", FIELD_DIMS, 0)
    with pytest.raises(ValueError, match="n_dense"):
        build_model("fm", FIELD_DIMS, -1)
    with pytest.raises(ValueError, match="field_dims"):
        build_model("fm", [], 0)
