"""DRS training (golden AUC of every model), determinism, NaN-robust metrics, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from pytei_ray.studies.drs import (
    MODELS,
    SETTINGS,
    ClickLog,
    binary_metrics,
    build_model,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    split,
    synthetic_criteo,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small() -> tuple[ClickLog, ClickLog, ClickLog]:
    return split(synthetic_criteo(SETTINGS["small"].n_rows, seed=0), seed=0)


@pytest.fixture(scope="module")
def golden(small: tuple[ClickLog, ClickLog, ClickLog]) -> dict[str, dict[str, float]]:
    tr, va, te = small
    out = {}
    for name in MODELS:
        model = build_model(name, tr.field_dims, tr.n_dense, seed=0)
        result = train(model, tr, va, seed=0, **SETTINGS["small"].train_kwargs())
        assert result.best_epoch >= 1
        assert result.best_val_auc == max(h["val_auc"] for h in result.history)
        out[name] = evaluate(model, te)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_golden_auc_of_every_model(golden: dict[str, dict[str, float]], name: str) -> None:
    assert golden[name]["auc"] > 0.65, golden
    assert 0.3 < golden[name]["logloss"] < 0.6, golden


def test_models_differ(golden: dict[str, dict[str, float]]) -> None:
    aucs = [round(m["auc"], 4) for m in golden.values()]
    assert len(set(aucs)) >= 4, aucs


def test_train_is_deterministic_and_restores_best(
    small: tuple[ClickLog, ClickLog, ClickLog],
) -> None:
    tr, va, _ = small
    tr, va = tr.subset(torch.arange(4000)), va.subset(torch.arange(1000))
    rng_state = torch.get_rng_state()
    results, models = [], []
    for _ in range(2):
        model = build_model("deepfm", tr.field_dims, tr.n_dense, seed=1)
        results.append(train(model, tr, va, epochs=2, batch_size=512, seed=7, patience=5))
        models.append(model)
    assert torch.equal(torch.get_rng_state(), rng_state)
    a, b = results
    assert [h["val_auc"] for h in a.history] == [h["val_auc"] for h in b.history]
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert len(a.history) == 2 and set(a.history[0]) >= {"epoch", "train_loss", "val_auc"}
    current = models[0].state_dict()
    assert all(torch.equal(current[k], a.state_dict[k]) for k in current)
    assert evaluate(models[0], va)["auc"] == pytest.approx(a.best_val_auc)


def test_early_stopping_patience(small: tuple[ClickLog, ClickLog, ClickLog]) -> None:
    tr, va, _ = small
    tr, va = tr.subset(torch.arange(2000)), va.subset(torch.arange(500))
    model = build_model("fm", tr.field_dims, tr.n_dense, seed=0)
    # A huge learning rate makes validation AUC erratic; patience 1 stops at the first miss.
    result = train(model, tr, va, epochs=8, batch_size=256, lr=0.5, seed=0, patience=1)
    aucs = [h["val_auc"] for h in result.history]
    assert result.best_epoch == aucs.index(max(aucs)) + 1
    assert len(aucs) == 8 or aucs[-1] <= max(aucs[:-1])
    with pytest.raises(ValueError, match="Expected `epochs` to be >= 1, but got 0"):
        train(model, tr, va, epochs=0)


def test_binary_metrics_matches_torchmetrics_on_finite_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(1000, generator=gen) < 0.3).float()
    logits = torch.randn(1000, generator=gen) + labels
    m = binary_metrics(logits, labels)
    ref = binary_auroc(torch.sigmoid(logits), labels.long())
    assert m["auc"] == pytest.approx(float(ref), abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), labels.double())
    assert m["logloss"] == pytest.approx(float(bce), rel=1e-9)


def test_binary_metrics_nonfinite_policy() -> None:
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # NaN counts as logit 0: ranks [2, nan->0, -1, -3] -> one misordered pair of four.
    m = binary_metrics(torch.tensor([2.0, math.nan, -1.0, -3.0]), labels)
    assert m["auc"] == pytest.approx(0.75)
    assert math.isfinite(m["logloss"])
    all_nan = binary_metrics(torch.full((4,), math.nan), labels)
    assert all_nan == {"auc": 0.5, "logloss": pytest.approx(math.log(2))}
    # Infinite logits rank at the ends; right ones cost 0, wrong ones inf.
    right = binary_metrics(torch.tensor([math.inf, -math.inf, math.inf, -math.inf]), labels)
    assert right == {"auc": 1.0, "logloss": 0.0}
    wrong = binary_metrics(torch.tensor([-math.inf, 0.0, 1.0, 0.0]), labels)
    assert wrong["auc"] == pytest.approx(0.5) and wrong["logloss"] == math.inf
    # Large logits keep their order (a float32 sigmoid would tie them at 1.0).
    assert binary_metrics(torch.tensor([40.0, 30.0]), torch.tensor([1.0, 0.0]))["auc"] == 1.0
    single = binary_metrics(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]))
    assert math.isnan(single["auc"])


def test_evaluate_with_nan_weights(small: tuple[ClickLog, ClickLog, ClickLog]) -> None:
    _, _, te = small
    model = build_model("wide_deep", te.field_dims, te.n_dense, seed=0)
    with torch.no_grad():
        model.predictor.weight.fill_(math.nan)
    m = evaluate(model, te)
    assert m["auc"] == 0.5 and m["logloss"] == pytest.approx(math.log(2))
    model.train()
    evaluate(model, te)
    assert model.training  # mode restored


def test_checkpoint_roundtrip(tmp_path: Path, small: tuple[ClickLog, ClickLog, ClickLog]) -> None:
    tr, va, _ = small
    model = build_model("afn", tr.field_dims, tr.n_dense, seed=0)
    result = train(model, tr.subset(torch.arange(1000)), va, epochs=1, seed=0)
    meta = {"model": "afn", "field_dims": tr.field_dims, "history": result.history}
    path = save_checkpoint(tmp_path / "ck" / "afn.pt", result.state_dict, meta)
    assert [p.name for p in path.parent.iterdir()] == ["afn.pt"]  # no temp file left
    state, meta2 = load_checkpoint(path)
    assert meta2 == meta
    fresh = build_model("afn", meta2["field_dims"], tr.n_dense, seed=5)
    fresh.load_state_dict(state)
    assert evaluate(fresh, va) == evaluate(model, va)
