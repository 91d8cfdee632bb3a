"""Affected-sample re-scoring: patched metrics equal a full evaluation bit for bit, or it is off.

Every DRS model (tiny, seeded, weights spread away from their init), with faults in embedding
rows (random, OOV rows, the hottest rows, several tables at once), mitigations, faults outside
the tables, batch-dependent models, and bad inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytei_ray import BitFlip
from pytei_ray.faults.faultmap import FaultMap, TensorFaults, sample_fault_map
from pytei_ray.injection import (
    SplitEvaluation,
    TableLookupError,
    apply_faults,
    build_index_map,
    prepare_rescoring,
    resolve_targets,
    sample_batches,
)
from pytei_ray.injection.rescoring import same_bits
from pytei_ray.mitigations import SBP, Clip
from pytei_ray.studies.drs import CLAMP_LAYERS, MODELS, build_model, synthetic_criteo
from pytei_ray.studies.drs.data import split as split_log
from pytei_ray.studies.drs.train import binary_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TABLES = ["embedding.factors.weight", "embedding.linear.weight"]


@pytest.fixture(scope="module")
def test_log():
    _, _, test = split_log(synthetic_criteo(2000, seed=3), seed=3)
    return test  # 200 samples


def drs_outputs(model, log, indices=None):
    param = next(model.parameters())
    outs = [model(log.dense[ids].to(param.device), log.sparse[ids].to(param.device))[:n]
            for ids, n in sample_batches(len(log), indices, batch_size=64)]
    return torch.cat(outs)


def drs_score(outputs, log):
    return binary_metrics(outputs, log.labels)


SPLIT = SplitEvaluation(drs_outputs, drs_score)


def drs_model(name, log, seed=0):
    model = build_model(name, log.field_dims, log.n_dense, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the init (zero first-order weights, tiny embeddings)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def tables_of(model):
    names = dict(model.named_parameters())
    return [t for t in TABLES if t in names]


def row_faults(model, picks, bit=30):
    """A map flipping ``bit`` of word 0 (and the last word) of each (table, row) in picks."""
    tensors = []
    for name, site in sorted((s.name, s) for s in resolve_targets(model, tables_of(model))):
        rows = sorted({r for t, r in picks if t == name})
        dim = site.tensor.shape[1]
        index = np.unique(np.array([r * dim + k for r in rows for k in (0, dim - 1)],
                                   np.int64))
        n = len(index)
        tensors.append(TensorFaults(name, torch.float32, tuple(site.tensor.shape), index,
                                    np.full(n, -1, np.int32), np.full(n, 1 << bit, np.int32), n))
    return FaultMap(tensors, "rows", "bit")


def full_and_rescored(model, log, fmap, mitigations=()):
    """(full metrics, re-scored metrics, affected ids) of ``fmap`` on ``model``."""
    r = prepare_rescoring(model, log, SPLIT, mitigations=mitigations)
    assert r.enabled, r.reason
    with apply_faults(fmap, model, mitigations) as applied:
        ids = r.plan(applied.map, max_share=1.0)
        assert ids is not None
        with torch.no_grad():
            full_out = drs_outputs(model, log)
            full = drs_score(full_out, log)
            rescored = r.metrics(model, ids) if len(ids) else dict(r.golden_metrics)
            if len(ids):
                assert same_bits(r._patched(model, torch.from_numpy(ids)), full_out)
    return full, rescored, ids


def assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert np.float64(a[k]).tobytes() == np.float64(b[k]).tobytes(), (k, a[k], b[k])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_random_embedding_faults_rescored_bit_for_bit(name, test_log):
    model = drs_model(name, test_log)
    sites = resolve_targets(model, tables_of(model))
    changed = 0
    for seed in range(4):
        fmap = sample_fault_map([s.info for s in sites], BitFlip(ber=2e-4), seed)
        full, rescored, ids = full_and_rescored(model, test_log, fmap)
        assert_same(full, rescored)
        changed += len(ids) > 0
    assert changed  # the faults reached samples


@pytest.mark.parametrize("name", sorted(MODELS))
def test_oov_hot_and_several_tables(name, test_log):
    model = drs_model(name, test_log)
    index_map, _ = build_index_map(model, test_log, SPLIT)
    table = index_map.tables["embedding.factors.weight"]
    offsets = model.embedding.offsets.tolist()
    counts = np.diff(table.indptr)
    hot = int(table.rows[np.argmax(counts)])
    oov = [("embedding.factors.weight", offsets[f]) for f in (0, 5)]
    for picks in (oov, [("embedding.factors.weight", hot)],
                  [("embedding.factors.weight", hot), ("embedding.linear.weight", offsets[2]),
                   ("embedding.linear.weight", int(table.rows[len(table.rows) // 2]))]):
        if name in ("dcn", "dlrm"):  # no first-order table
            picks = [p for p in picks if p[0] == "embedding.factors.weight"]
        for bit in (30, 22):  # exponent top bit (inf/huge) and a mantissa bit
            full, rescored, ids = full_and_rescored(model, test_log, row_faults(model, picks,
                                                                                 bit))
            assert_same(full, rescored)
            assert 0 < len(ids) < len(test_log) or picks == oov
    r = prepare_rescoring(model, test_log, SPLIT, index_map)
    with apply_faults(row_faults(model, oov), model) as applied:  # OOV rows: many samples
        n = len(r.plan(applied.map, max_share=1.0))
        assert n > len(test_log) // 4
        assert r.plan(applied.map, max_share=(n - 1) / len(test_log)) is None  # full is cheaper


def test_unread_rows_are_ineffective(test_log):
    model = drs_model("deepfm", test_log)
    index_map, golden = build_index_map(model, test_log, SPLIT)
    table = index_map.tables["embedding.factors.weight"]
    unread = np.setdiff1d(np.arange(table.num_rows), table.rows)[:3]
    fmap = row_faults(model, [("embedding.factors.weight", int(r)) for r in unread])
    r = prepare_rescoring(model, test_log, SPLIT, index_map)
    with apply_faults(fmap, model) as applied:
        assert applied.n_words_changed > 0
        assert len(r.plan(applied.map)) == 0
        with torch.no_grad():
            assert same_bits(drs_outputs(model, test_log), golden)


def test_fault_outside_tables_is_scored_in_full(test_log):
    model = drs_model("wide_deep", test_log)
    r = prepare_rescoring(model, test_log, SPLIT)
    sites = resolve_targets(model, tables_of(model) + ["predictor.weight"])
    fmap = sample_fault_map([s.info for s in sites], BitFlip(n=40), 0)
    fmap.tensors = [t if t.name != "predictor.weight" else TensorFaults(
        t.name, t.dtype, t.shape, np.array([3]), np.full(1, -1, np.int32),
        np.full(1, 1 << 22, np.int32), 1) for t in fmap.tensors]
    assert any(t.name == "predictor.weight" and t.n_words for t in fmap.tensors)
    assert r.plan(fmap) is None
    # numeric embeddings are parameters of FieldEmbedding, not lookups
    site = {s.name: s for s in resolve_targets(model, ["embedding.*"])}
    numeric = TensorFaults("embedding.numeric_factors", torch.float32,
                           tuple(site["embedding.numeric_factors"].tensor.shape), np.array([5]),
                           np.full(1, -1, np.int32), np.full(1, 1 << 22, np.int32), 1)
    assert r.plan(FaultMap([numeric], "x", "bit")) is None


@pytest.mark.parametrize("mitigation", ["clip", "sbp"])
def test_mitigations_same_metrics_with_and_without_rescoring(mitigation, test_log):
    mits = [Clip(layers=CLAMP_LAYERS)] if mitigation == "clip" else [SBP()]
    for name in ("deepfm", "dcn"):
        model = drs_model(name, test_log)
        sites = resolve_targets(model, tables_of(model))
        for seed in range(3):  # dense enough to hit exponent bits: NaN/inf that Clip bounds
            fmap = sample_fault_map([s.info for s in sites], BitFlip(ber=1e-3), seed)
            full, rescored, _ = full_and_rescored(model, test_log, fmap, mits)
            assert_same(full, rescored)


class _BatchNormNet(nn.Module):
    def __init__(self, train_bn: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4)
        self.norm = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1)
        self.norm.train(train_bn)

    def forward(self, x):
        return self.out(self.norm(self.emb(x).flatten(1))).squeeze(1)


class _MeanMix(nn.Module):  # eval mode, yet every output depends on the whole batch
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4)

    def forward(self, x):
        h = self.emb(x).sum(1)
        return (h - h.mean(0)).sum(1)


def _toy_split():
    def outputs(model, x, indices=None):
        return torch.cat([model(x[ids])[:n] for ids, n in sample_batches(len(x), indices, 32)])
    return SplitEvaluation(outputs, lambda out, x: {"s": float(out.double().sum())})


def _toy_x():
    return torch.randint(0, 30, (100, 2), generator=torch.Generator().manual_seed(0))


def test_batch_dependent_models_turn_rescoring_off():
    torch.manual_seed(0)
    r = prepare_rescoring(_BatchNormNet(True), _toy_x(), _toy_split())
    assert not r.enabled and "BatchNorm1d 'norm' is in train mode" in r.reason
    assert r.plan(FaultMap([], "x", "bit")) is None
    r = prepare_rescoring(_MeanMix().eval(), _toy_x(), _toy_split())
    assert not r.enabled and "depends on the batch" in r.reason
    r = prepare_rescoring(_BatchNormNet(False).eval(), _toy_x(), _toy_split())
    assert r.enabled, r.reason

    def eval_mode_outputs(model, x, indices=None):  # as DRS predict(): eval while it runs
        was = model.training
        model.eval()
        try:
            return _toy_split().outputs(model, x, indices)
        finally:
            model.train(was)

    r = prepare_rescoring(_BatchNormNet(True), _toy_x(),
                          SplitEvaluation(eval_mode_outputs, _toy_split().score))
    assert r.enabled, r.reason  # what counts is the mode while the evaluation runs


class _Tied(nn.Module):  # the table's weight is also the output projection
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4)
        self.head = nn.Linear(4, 30, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.emb(x).sum(1)).logsumexp(1)


class _Bag(nn.Module):  # EmbeddingBag with offsets and per-sample weights
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(40, 4, mode="sum")
        self.out = nn.Linear(4, 1)

    def forward(self, x):  # x: [B, 3]; the bag of sample b is its non-zero ids
        flat = x.reshape(-1)
        keep = flat > 0
        counts = keep.reshape(x.shape).sum(1)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
        weights = 0.5 + flat[keep].float() / 40  # a function of the sample alone
        return self.out(self.bag(flat[keep], offsets, per_sample_weights=weights)).squeeze(1)


def test_tied_weights_are_no_table_and_bags_are():
    torch.manual_seed(0)
    x = _toy_x()
    assert build_index_map(_Tied(), x, _toy_split())[0].tables == {}
    r = prepare_rescoring(_Tied(), x, _toy_split())
    assert not r.enabled and "no embedding table" in r.reason
    with pytest.raises(TableLookupError, match="also used by"):
        prepare_rescoring(_Tied(), x, SplitEvaluation(_toy_split().outputs,
                                                      _toy_split().score, tables=["emb.weight"]))
    model = _Bag()
    x = torch.randint(0, 40, (100, 3), generator=torch.Generator().manual_seed(1))
    r = prepare_rescoring(model, x, _toy_split())
    assert r.enabled, r.reason
    table = r.index_map.tables["bag.weight"]
    assert set(table.samples_of(np.array([int(x[7, 0])]))) >= {7} or int(x[7, 0]) == 0
    for row in (int(x[5, 1]), int(table.rows[-1])):
        fmap = FaultMap([TensorFaults("bag.weight", torch.float32, (40, 4),
                                      np.array([row * 4 + 1]), np.full(1, -1, np.int32),
                                      np.full(1, 1 << 29, np.int32), 1)], "x", "bit")
        with apply_faults(fmap, model) as applied:
            ids = r.plan(applied.map, max_share=1.0)
            with torch.no_grad():
                full = _toy_split()(model, x)
            assert len(ids) and np.float64(r.metrics(model, ids)["s"]) == np.float64(full["s"])


def test_counted_forwards_give_the_same_map(test_log):
    model = drs_model("fm", test_log)

    def plain(model, log, indices=None):  # no sample_batches: forwards counted in order
        ids = torch.arange(len(log)) if indices is None else torch.as_tensor(indices)
        return torch.cat([model(log.dense[ids[i:i + 50]], log.sparse[ids[i:i + 50]])
                          for i in range(0, len(ids), 50)])

    a, _ = build_index_map(model, test_log, SPLIT)
    b, _ = build_index_map(model, test_log, SplitEvaluation(plain, drs_score))
    for name in tables_of(model):
        ta, tb = a.tables[name], b.tables[name]
        assert np.array_equal(ta.rows, tb.rows) and np.array_equal(ta.samples, tb.samples)
        assert np.array_equal(ta.indptr, tb.indptr)
    per_sample = test_log.sparse + model.embedding.offsets  # the truth, from the data
    for s in (0, 17, 199):
        for row in per_sample[s].tolist():
            assert s in a.tables[TABLES[0]].samples_of(np.array([row]))


def test_bad_inputs(test_log):
    model = drs_model("dcn", test_log)
    with pytest.raises(TableLookupError, match="'predictor.weight' is not: it is the 'weight' "
                                               "of a Linear"):
        build_index_map(model, test_log, SplitEvaluation(drs_outputs, drs_score,
                                                         tables=["predictor.weight"]))
    with pytest.raises(TableLookupError, match="not a parameter"):
        build_index_map(model, test_log, SplitEvaluation(drs_outputs, drs_score,
                                                         tables=["embedding.factor.weight"]))
    short = SplitEvaluation(lambda m, d, indices=None: drs_outputs(m, d, indices)[:-1],
                            drs_score)
    with pytest.raises(ValueError, match="one row per evaluation sample"):
        build_index_map(model, test_log, short)
    with pytest.raises(TypeError, match="callable"):
        SplitEvaluation(drs_outputs, None)
    index_map, _ = build_index_map(model, test_log, SPLIT)
    other = test_log.subset(torch.arange(len(test_log)).flip(0))
    with pytest.raises(ValueError, match="index map was built on other data"):
        prepare_rescoring(model, other, SPLIT, index_map)
    with pytest.raises(ValueError, match="sample ids in"):
        prepare_rescoring(model, test_log, SPLIT, index_map).metrics(model, [len(test_log)])
    r = prepare_rescoring(model, test_log, SPLIT, index_map, golden_metrics={"auc": 0.5})
    assert not r.enabled and "differs from the golden metrics" in r.reason
