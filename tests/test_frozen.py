"""Golden outputs of the fault-free top-level children, replayed in full evaluations: the same
metrics bit for bit as computing them, and a child is replayed only while it holds no fault and
its inputs are golden."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rescoring import SPLIT, assert_same, drs_model
from torch import nn

from pytei_ray import BitFlip, Campaign
from pytei_ray.campaign.trials import expand
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.faults.faultmap import sample_fault_map
from pytei_ray.injection import apply_faults, resolve_targets
from pytei_ray.injection.frozen import FrozenOutputs
from pytei_ray.mitigations import SBP, Clip, Ranger
from pytei_ray.studies.drs import CLAMP_LAYERS, MODELS, synthetic_criteo
from pytei_ray.studies.drs.data import split as split_log
from pytei_ray.studies.drs.layers import FieldEmbedding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def test_log():
    _, _, test = split_log(synthetic_criteo(2000, seed=3), seed=3)
    return test  # 200 samples


class _Counting:
    """Counts calls of FieldEmbedding.forward (the DRS models' ``embedding`` child)."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = FieldEmbedding.forward

        def counted(mod, *args, **kwargs):
            self.n += 1
            return real(mod, *args, **kwargs)
        monkeypatch.setattr(FieldEmbedding, "forward", counted)


def _faults(model, target, ber, seed):
    sites = resolve_targets(model, target)
    return sample_fault_map([s.info for s in sites], BitFlip(ber), seed), \
        {s.name: s for s in sites}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("mit", ["none", "clip", "ranger", "sbp"])
def test_replayed_children_give_the_full_evaluation_bit_for_bit(name, mit, test_log,
                                                                 monkeypatch):
    model = drs_model(name, test_log)
    mits = {"none": [], "clip": [Clip(layers=CLAMP_LAYERS)], "sbp": [SBP()],
            "ranger": [Ranger(layers=CLAMP_LAYERS)]}[mit]
    for m in mits:
        if isinstance(m, Ranger):
            m.profile(model, lambda mod: SPLIT(mod, test_log))
    handles = [m.attach(model) for m in mits]
    frozen = FrozenOutputs(model)
    with torch.no_grad():
        golden = frozen.record(lambda: SPLIT(model, test_log))
    for h in handles:
        h.remove()
    assert "embedding" in frozen.calls
    count = _Counting(monkeypatch)
    for target in (["dense.*"], ["predictor.*"], ["embedding.*"], None):
        for seed in range(3):
            fmap, by_name = _faults(model, target, 3e-3, seed)
            with apply_faults(fmap, model, mits, by_name) as applied, torch.no_grad():
                hit = [tf.name for tf in applied.map.tensors if tf.n_words]
                names = frozen.frozen(hit, [by_name[n].tensor for n in hit])
                assert ("embedding" in names) == (target in (["dense.*"], ["predictor.*"])), \
                    (target, names)
                before = count.n
                with frozen.replay(names):
                    replayed = SPLIT(model, test_log)
                assert (count.n == before) == ("embedding" in names)
                computed = SPLIT(model, test_log)
            assert_same(replayed, computed)
    with torch.no_grad():
        assert_same(SPLIT(model, test_log), golden)  # the model is back as it was
    assert "forward" not in model.embedding.__dict__


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # shared: a fault in a.weight changes b as well

    def forward(self, x):
        return self.b(x) + self.a(x)


def test_a_child_sharing_a_faulted_tensor_is_not_frozen():
    torch.manual_seed(0)
    model, x = _Tied().eval(), torch.randn(8, 4)
    frozen = FrozenOutputs(model)
    frozen.record(lambda: model(x))
    weight = dict(model.named_parameters())["a.weight"]
    assert frozen.frozen(["a.weight"], [weight]) == []
    assert frozen.frozen(["a.bias"], [model.a.bias]) == ["b"]


class _Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_a_clean_child_fed_by_a_faulty_one_is_computed():
    torch.manual_seed(0)
    model, x = _Chain().eval(), torch.randn(8, 4)
    frozen = FrozenOutputs(model)
    with torch.no_grad():
        frozen.record(lambda: model(x))
        model.first.weight[0, 0] = 1e3  # "first" is faulty; "second" holds no fault
        with frozen.replay(frozen.frozen(["first.weight"], [model.first.weight])):
            replayed = model(x)
        assert torch.equal(replayed, model(x))  # second saw other inputs: computed
        assert not torch.equal(replayed, frozen.calls["second"][0][2])


def test_forward_is_restored_when_the_evaluation_raises():
    model, x = _Chain().eval(), torch.randn(8, 4)
    frozen = FrozenOutputs(model)
    frozen.record(lambda: model(x))
    with pytest.raises(RuntimeError, match="boom"), frozen.replay(["first", "second"]):
        raise RuntimeError("boom")
    assert "forward" not in model.first.__dict__ and "forward" not in model.second.__dict__


def test_budget_and_non_tensor_outputs_are_not_recorded():
    class Dict(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return {"y": self.lin(x)}

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.d, self.e = Dict(), nn.Linear(4, 4)

        def forward(self, x):
            return self.e(self.d(x)["y"])

    model, x = Outer().eval(), torch.randn(8, 4)
    frozen = FrozenOutputs(model)
    frozen.record(lambda: model(x))
    assert list(frozen.calls) == ["e"]  # a dict output is computed every time
    small = FrozenOutputs(model, budget_bytes=100)
    small.record(lambda: model(x))
    assert small.calls == {}


def test_worker_rows_equal_those_of_a_worker_that_computes_every_child(test_log, monkeypatch):
    """The same trials through a worker (replay on) and one whose replay is a no-op: every row's
    metrics bit for bit; the first computed the embedding fewer times."""
    campaign = Campaign(
        name="frozen", models={m: (lambda m=m: drs_model(m, test_log)) for m in ("fm", "dcn")},
        data=lambda name: test_log, evaluate=SPLIT, bers=[1e-3, 1e-2], repetitions=2, seed=1,
        targets={"dense": ["dense.*"], "predictor": ["predictor.*"], "emb": ["embedding.*"]},
        mitigations={"none": None, "clip": Clip(layers=CLAMP_LAYERS), "sbp": SBP()})
    trials = expand(campaign)
    count = _Counting(monkeypatch)
    worker = TrialWorker(campaign, device="cpu")
    rows = worker.run_chunk(trials).rows
    with_replay = count.n
    # the mitigations of a model share what their golden passes have in common: the
    # embedding's calls, which no mitigation here acts on, are stored once per model
    for m in ("fm", "dcn"):
        rec = {mit: worker._replay.recordings[(m, mit)] for mit in ("none", "clip", "sbp")}
        assert all(r.calls["embedding"][0][2] is rec["none"].calls["embedding"][0][2]
                   for r in rec.values())
        replica = rec["clip"].model
        alone = FrozenOutputs(replica)
        with torch.no_grad():
            alone.record(lambda r=replica: SPLIT(r, test_log))
        assert rec["clip"].nbytes < alone.nbytes
    monkeypatch.setattr(FrozenOutputs, "frozen", lambda self, hit, tensors: [])
    count.n = 0
    plain = TrialWorker(campaign, device="cpu").run_chunk(trials).rows
    assert count.n > with_replay
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in plain]
    for a, b in zip(rows, plain):
        for k in ("auc", "logloss", "status", "evaluated"):
            assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), (a["trial_id"], k)


def test_a_tensor_passed_from_one_part_to_the_next_is_stored_once():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)).eval(), torch.randn(16, 4)
    frozen = FrozenOutputs(model)
    with torch.no_grad():
        frozen.record(lambda: model(x))
    assert list(frozen.calls) == ["0", "1"]
    assert frozen.nbytes == 4 * (16 * 4 + 16 * 8 + 16 * 2)  # x, the hidden output once, out
    # the stored input of "1" is the stored output of "0" (one copy, never handed out)
    assert frozen.calls["1"][0][0][0] is frozen.calls["0"][0][2]
    with torch.no_grad():
        expected = model(x)
        with frozen.replay(["0", "1"]):
            out = model(x)
        assert torch.equal(out, expected)
        out.add_(1)  # a caller changing the replayed output in place changes no record
        with frozen.replay(["0", "1"]):
            assert torch.equal(model(x), expected)


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.s


class _Reciprocal(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("one", torch.ones(()))

    def forward(self, x):
        return self.one / x


def test_inputs_that_differ_only_in_the_sign_of_zero_are_computed():
    """-0.0 == 0.0 as numbers but not as bits: a part fed -0.0 where the golden pass fed 0.0
    may return another result (1/x: -inf), so it is computed, not replayed."""
    model, x = nn.Sequential(_Scale(), _Reciprocal()).eval(), torch.zeros(4)
    frozen = FrozenOutputs(model)
    with torch.no_grad():
        frozen.record(lambda: model(x))
        assert torch.equal(frozen.calls["1"][0][2], torch.full((4,), float("inf")))
        model[0].s.fill_(-1.0)  # a sign-bit fault in part "0": its output is -0.0
        with frozen.replay(frozen.frozen(["0.s"], [model[0].s])):
            out = model(x)
    assert torch.equal(out, torch.full((4,), -float("inf")))


def test_recordings_of_other_mitigations_share_equal_tensors():
    """A part whose golden calls are the same under two mitigations is stored once: the second
    recording holds the first one's tensors where they are bit-equal, and counts only the rest;
    replaying it gives its own golden output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 2))).eval()
    x = torch.randn(16, 4)
    first = FrozenOutputs(model)
    with torch.no_grad():
        first.record(lambda: model(x))
        # a mitigation inside part "1" (a clamp on its layer): "1" returns another output
        handle = model[1][0].register_forward_hook(lambda m, a, out: out.clamp(-0.1, 0.1))
        second = FrozenOutputs(model)
        expected = second.record(lambda: model(x), share=[first])
        assert second.calls["0"][0][0][0] is first.calls["0"][0][0][0]  # x: shared
        assert second.calls["0"][0][2] is first.calls["0"][0][2]  # part 0's output: shared
        assert second.calls["1"][0][0][0] is first.calls["1"][0][0][0]
        assert second.calls["1"][0][2] is not first.calls["1"][0][2]  # differs: its own
        assert not torch.equal(second.calls["1"][0][2], first.calls["1"][0][2])
        assert second.nbytes == 4 * 16 * 2 and first.nbytes == 4 * 16 * (4 + 8 + 2)
        with second.replay(["0", "1"]):
            assert torch.equal(model(x), expected)
        handle.remove()
        with first.replay(["0", "1"]):  # the first recording is unchanged
            assert torch.equal(model(x), first.calls["1"][0][2])


def test_a_rebuilt_replica_replays_the_recordings_of_the_old_one(test_log, monkeypatch):
    """After a replica is rebuilt (a trial left it changed), the recordings serve the new
    replica (same state, so the same golden calls): its trials replay fault-free parts and
    their rows equal those of a fresh worker bit for bit."""
    campaign = Campaign(
        name="rebuilt", models={"fm": lambda: drs_model("fm", test_log)},
        data=lambda name: test_log, evaluate=SPLIT, bers=[1e-2], repetitions=2, seed=4,
        targets={"dense": ["dense.*"], "predictor": ["predictor.*"]},
        mitigations={"none": None, "clip": Clip(layers=CLAMP_LAYERS)})
    trials = expand(campaign)
    worker = TrialWorker(campaign, device="cpu")
    worker.run_chunk(trials)  # golden runs and recordings of both mitigations
    old = worker._models["fm"]
    with torch.no_grad():
        old.predictor.bias.add_(1.0)  # as if a trial had not restored it
    count = _Counting(monkeypatch)
    result = worker.run_chunk(trials)
    assert result.rebuilt == ["fm"] and worker._models["fm"] is not old
    assert all(f.model is worker._models["fm"] for f in worker._replay.recordings.values())
    assert set(worker._replay.recordings) == {("fm", "none"), ("fm", "clip")}
    assert count.n == 0  # every trial's faults are after the embedding: replayed
    fresh = TrialWorker(campaign, device="cpu").run_chunk(trials).rows
    for a, b in zip(result.rows, fresh):
        for k in ("auc", "logloss", "status", "evaluated"):
            assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), (a["trial_id"], k)


class _Counted(nn.Module):
    """A part with a side effect its evaluation relies on (it counts its calls)."""

    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(4, 4), 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def test_an_evaluation_that_fails_under_replay_computes_every_part():
    """Replaying skips a part's forward, so its side effects: an evaluate that relies on them
    and raises is not replayed (no setup error), and its trials compute every part."""
    def build():
        torch.manual_seed(0)
        return nn.Sequential(_Counted(), nn.Linear(4, 1))

    def evaluate(model, x):
        before = model[0].calls
        out = model(x)
        if model[0].calls == before:
            raise RuntimeError("part 0 was not called")
        return {"out": float(out.sum())}

    campaign = Campaign(name="side", models={"m": build}, data=lambda name: torch.ones(8, 4),
                        evaluate=evaluate, bers=[1e-2], repetitions=3, seed=2,
                        targets={"head": ["1.*"]})
    worker = TrialWorker(campaign, device="cpu")
    rows = worker.run_chunk(expand(campaign)).rows
    assert worker._replay.recordings == {}
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert any(r["evaluated"] for r in rows)
