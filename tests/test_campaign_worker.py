"""TrialWorker: paired faults across mitigations, golden runs, failures, NaN, pristine replicas."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from pytei_ray import state_checksum
from pytei_ray.campaign import Campaign, expand, make_chunks
from pytei_ray.errors import TrialSetupError
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.mitigations import SBP, Clip, Mitigation, Ranger

VOLATILE = ("worker", "started_at", "duration_s")


def _build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 2))


def _data(name):
    return torch.randn(32, 8, generator=torch.Generator().manual_seed(1))


def _weights_digest(model: nn.Module) -> float:
    """An exact fingerprint of the (faulty) weights, as a float metric."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().view(torch.int32).numpy().tobytes())
    return float(int(h.hexdigest()[:12], 16))


def _eval(model, x):
    return {"w": _weights_digest(model), "mean": float(model(x).mean())}


def _campaign(**over):
    kw = dict(name="w", models={"a": _build, "b": _build}, data=_data, evaluate=_eval,
              bers=[0.0, 1e-3, 1e-2], repetitions=3,
              mitigations={"none": None, "clip": Clip(), "sbp": SBP(), "both": [SBP(), Clip()]},
              seed=11)
    kw.update(over)
    return Campaign(**kw)


def _strip(rows):
    """Rows without timing/worker columns, NaN made comparable, sorted by trial id."""
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return sorted(({k: norm(v) for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: r["trial_id"])


def test_faults_paired_across_mitigations():
    c = _campaign()
    rows = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows
    assert all(r["status"] == "ok" for r in rows)
    points: dict = {}
    for r in rows:
        points.setdefault((r["model"], r["ber"], r["repetition"]), {})[r["mitigation"]] = r
    for (_, ber, _), by_mit in points.items():
        # Clip only adds hooks: the weights see exactly the faults of "none"
        assert by_mit["clip"]["w"] == by_mit["none"]["w"]
        assert by_mit["clip"]["n_faults"] == by_mit["none"]["n_faults"]
        # SBP masks some of the same faults; with clip on top, the weights are SBP's
        assert by_mit["both"]["w"] == by_mit["sbp"]["w"]
        assert by_mit["sbp"]["n_faults"] <= by_mit["none"]["n_faults"]
        if ber == 0.0:
            assert by_mit["none"]["n_faults"] == 0
            assert by_mit["none"]["w"] == by_mit["none"]["golden_w"]
    # different repetitions of a point get different faults
    reps = {r["w"] for r in rows if r["model"] == "a" and r["ber"] == 1e-2
            and r["mitigation"] == "none"}
    assert len(reps) == 3


def test_rows_independent_of_worker_order_and_chunking():
    c = _campaign()
    trials = expand(c)
    one = TrialWorker(c, device="cpu").run_chunk(trials).rows
    w2 = TrialWorker(c, device="cpu")
    two = [r for ch in make_chunks(list(reversed(trials)), 5) for r in w2.run_chunk(ch).rows]
    assert _strip(one) == _strip(two)


def test_golden_once_per_model_and_mitigation():
    calls = []

    def evaluate(model, x):
        calls.append(1)
        return {"mean": float(model(x).mean())}

    c = _campaign(evaluate=evaluate, bers=[1e-3], repetitions=2)
    w = TrialWorker(c, device="cpu")
    first = w.run_chunk(expand(c)[:8])
    second = w.run_chunk(expand(c)[8:])
    keys = [(g["model"], g["mitigation"]) for g in first.golden + second.golden]
    assert sorted(keys) == sorted({(t.model, t.mitigation) for t in expand(c)})
    # three golden runs per (model, mitigation): the determinism check, then the check that
    # replaying the recorded outputs of the layers gives the golden metrics; one per evaluated
    # trial
    n_evaluated = sum(r["evaluated"] for r in first.rows + second.rows)
    assert len(calls) == 3 * len(keys) + n_evaluated
    clean = _build()(_data("a")).mean().item()
    for r in first.rows + second.rows:
        if r["mitigation"] == "none":
            assert r["golden_mean"] == pytest.approx(clean)
    assert set(first.golden[0]) >= {"campaign", "model", "mitigation", "mean", "worker", "device"}


def test_failed_trial_recorded_and_campaign_goes_on():
    def evaluate(model, x):
        out = model(x)
        if not torch.isfinite(out).all() or any(
                torch.isinf(p).any() or p.abs().max() > 1e3 for p in model.parameters()):
            raise RuntimeError("diverged")
        return {"mean": float(out.mean())}

    c = _campaign(evaluate=evaluate, bers=[0.0, 0.05], repetitions=2,
                  mitigations={"none": None})
    rows = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert failed and ok and len(rows) == c.n_trials
    for r in failed:
        assert "RuntimeError: diverged" in r["error"] and r["mean"] is None
        assert r["golden_mean"] is not None and r["n_faults"] > 0
    assert all(r["error"] is None for r in ok)


def test_nan_metric_is_an_outcome_not_a_failure():
    def evaluate(model, x):
        w = model[0].weight
        return {"m": float("nan") if torch.isnan(w).any() or w.abs().max() > 1e30 else 1.0}

    c = _campaign(evaluate=evaluate, bers=[0.3], repetitions=1, mitigations={"none": None},
                  models={"a": _build})
    row = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows[0]
    assert row["status"] == "ok" and math.isnan(row["m"]) and row["golden_m"] == 1.0
    assert row["n_nonfinite"] > 0


def test_bad_metrics_fail_the_trial():
    outputs = iter([{"a": 1.0}, {"b": 1.0}, "oops", {"a": "x"}, {"status": 1.0}])
    # skip_ineffective=False: BER 0 trials must run evaluate (and the golden run only once)
    c = _campaign(evaluate=lambda m, x: next(outputs), bers=[0.0], repetitions=4,
                  models={"a": _build}, mitigations={"none": None}, skip_ineffective=False)
    rows = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows
    assert [r["status"] for r in rows] == ["failed"] * 4
    assert "golden run ['a'], but got ['b']" in rows[0]["error"]
    assert "dict of metrics" in rows[1]["error"]
    assert "to be a number" in rows[2]["error"]
    assert "not result columns" in rows[3]["error"]


@pytest.mark.parametrize("over, match", [
    (dict(models={"a": lambda: 1 / 0}), "factory of model 'a' raised ZeroDivisionError"),
    (dict(models={"a": lambda: "nope"}), "to return an nn.Module, but got str"),
    (dict(data=lambda n: [][1]), "Loading the data of model 'a' raised IndexError"),
    (dict(evaluate=lambda m, x: 1 / 0), "golden .* evaluation of 'a' with mitigation 'none'"),
])
def test_setup_failures_stop_with_a_clear_error(over, match):
    c = _campaign(**{"models": {"a": _build}, "mitigations": {"none": None}, **over})
    with pytest.raises(TrialSetupError, match=match):
        TrialWorker(c, device="cpu").run_chunk(expand(c))


def test_modified_replica_is_rebuilt_before_the_next_chunk():
    def evaluate(model, x):  # a buggy evaluate that modifies the model
        seen = float(model[0].weight.sum())
        with torch.no_grad():
            model[0].weight.add_(1.0)
        return {"m": seen}

    c = _campaign(evaluate=evaluate, bers=[0.0], repetitions=2, models={"a": _build},
                  mitigations={"none": None})
    w = TrialWorker(c, device="cpu")
    trials = expand(c)
    w.run_chunk(trials[:1])
    with pytest.warns(UserWarning, match="differs from the pristine model"):
        result = w.run_chunk(trials[1:])
    assert result.rebuilt == ["a"]
    assert result.rows[0]["m"] == pytest.approx(float(_build()[0].weight.detach().sum()))


def test_replica_pristine_after_chunks():
    c = _campaign(evaluate=lambda m, x: {"m": float(m(x).sum())})
    w = TrialWorker(c, device="cpu")
    w.run_chunk(expand(c))
    assert state_checksum(w._models["a"]) == state_checksum(_build())
    assert not w.ensure_pristine("a")


def test_profiled_mitigation_calibrated_per_model_and_kept_out_of_spec():
    profiled = []

    class Recorder(Mitigation):
        def profile(self, model, run):
            run(model)
            profiled.append(id(self))
            return self

    ranger = Ranger()
    calib = []
    c = _campaign(mitigations={"ranger": ranger, "rec": Recorder()}, bers=[1e-3],
                  repetitions=1, calibrate=lambda m, x: calib.append(m(x)))
    rows = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows
    assert all(r["status"] == "ok" for r in rows)
    assert len(profiled) == 2 and len(set(profiled)) == 2  # one copy per model
    assert len(calib) == 4 and ranger.ranges == {}  # the spec's instance is never profiled
