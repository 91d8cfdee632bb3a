"""Trials whose faults change no weight take the golden metrics without an evaluation.

Covers the row columns (n_faults_sampled, n_faults, n_sites, p_no_fault, evaluated), the exact
no-op detection of the applied writes (n_words_changed), the determinism check that guards
skipping, ``skip_ineffective=False``, and the spec staying unchanged for the default.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

import pytest
import torch
from torch import nn

from pytei_ray import BitFlip, FaultMap, Injector, StuckAt
from pytei_ray.campaign import Campaign, expand
from pytei_ray.campaign.compare import compare_specs
from pytei_ray.campaign.spec import spec_hash
from pytei_ray.errors import CampaignSpecError
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.mitigations import SBP

NUMEL = 8 * 4 + 4 + 4 * 2 + 2  # parameters of _build()


def _build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))


def _data(name):
    return torch.randn(16, 8, generator=torch.Generator().manual_seed(1))


def _digest(model: nn.Module) -> float:
    """An exact fingerprint of the weights as a metric: any changed bit changes it."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().view(torch.int32).numpy().tobytes())
    return float(int(h.hexdigest()[:12], 16))


def _eval(model, x):
    return {"w": _digest(model), "mean": float(model(x).mean())}


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


BERS = [0.0, 1e-6, 3e-4, 1e-3, 1e-2]


def _campaign(**over):
    kw = dict(name="skip", models={"a": _build}, data=_data, evaluate=_eval, bers=BERS,
              repetitions=12, mitigations={"none": None, "sbp": SBP()},
              error_models={"flip": BitFlip, "stuck1": lambda ber: StuckAt(ber, value=1)},
              seed=4)
    kw.update(over)
    return Campaign(**kw)


@pytest.fixture(scope="module")
def rows():
    c = _campaign()
    result = TrialWorker(c, device="cpu").run_chunk(expand(c))
    assert result.nondeterministic == []
    assert all(r["status"] == "ok" for r in result.rows)
    return result.rows


def test_skipped_rows_hold_the_golden_metrics_and_evaluating_them_agrees(rows):
    skipped = [r for r in rows if not r["evaluated"]]
    assert skipped and len(skipped) < len(rows)
    c = _campaign()
    model, x = _build(), _data("a")
    for r in skipped:
        assert r["n_faults"] == 0 or r["error_model"] == "stuck1"  # only stuck-at writes no-op
        for m in ("w", "mean"):
            assert _bits(r[m]) == _bits(r[f"golden_{m}"])
        # apply the same faults and evaluate anyway: bit-identical to the golden metrics
        error = c.error_models[r["error_model"]](r["ber"])
        fmap = Injector(error=error, seed=r["seed"]).sample(model)
        mits = [SBP()] if r["mitigation"] == "sbp" else []
        with fmap.apply(model, mitigations=mits) as faults:
            assert faults.n_faults == r["n_faults"]
            with torch.no_grad():
                out = _eval(model, x)
        assert {m: _bits(v) for m, v in out.items()} == {m: _bits(r[m]) for m in out}
    assert _digest(model) == _digest(_build())


def test_no_fault_sampled_is_never_evaluated(rows):
    none_sampled = [r for r in rows if r["n_faults_sampled"] == 0]
    assert {r["ber"] for r in none_sampled} >= {0.0, 1e-6}
    assert not any(r["evaluated"] for r in none_sampled)
    assert all(r["n_faults"] == 0 and r["n_words"] == 0 for r in none_sampled)


def test_sbp_masking_every_fault_is_not_evaluated(rows):
    masked = [r for r in rows if r["mitigation"] == "sbp" and r["n_faults_sampled"] > 0
              and r["n_faults"] == 0]
    assert masked  # the grid has such trials (seeded, so this cannot flake)
    assert not any(r["evaluated"] for r in masked)


def test_stuck_at_bits_already_set_are_not_evaluated(rows):
    noop = [r for r in rows if r["error_model"] == "stuck1" and r["n_faults"] > 0
            and not r["evaluated"]]
    assert noop
    # and a stuck-at trial that changed a word was evaluated: its digest differs from golden
    changed = [r for r in rows if r["error_model"] == "stuck1" and r["evaluated"]]
    assert changed and all(r["w"] != r["golden_w"] for r in changed)


def test_evaluated_rows_changed_the_weights(rows):
    for r in rows:
        assert r["evaluated"] == (r["w"] != r["golden_w"]), r["trial_id"]


def test_n_sites_and_p_no_fault(rows):
    for r in rows:
        assert r["n_sites"] == 32 * NUMEL  # every bit of every fp32 parameter
        expected = (1.0 - r["ber"]) ** r["n_sites"]
        assert r["p_no_fault"] == pytest.approx(expected, rel=1e-12, abs=0.0)
        assert r["n_faults"] <= r["n_faults_sampled"]
    # the same sampled faults for every mitigation of a point (paired)
    by_point: dict = {}
    for r in rows:
        key = (r["error_model"], r["ber"], r["repetition"])
        by_point.setdefault(key, set()).add(r["n_faults_sampled"])
    assert all(len(v) == 1 for v in by_point.values())


def test_p_no_fault_of_error_models():
    assert BitFlip(0.0).p_no_fault(10**12) == 1.0
    assert BitFlip(1.0).p_no_fault(5) == 0.0
    assert BitFlip(0.5).p_no_fault(0) == 1.0
    assert BitFlip(1e-12).p_no_fault(10**9) == pytest.approx(math.exp(-1e-3), rel=1e-12)
    assert BitFlip(n=3).p_no_fault(32) == 0.0
    assert BitFlip(n=0).p_no_fault(32) == 1.0


def test_n_words_changed_is_exact():
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.fill_(-1.0)  # sign bit set in every word
    before = lin.weight.detach().clone()
    h = Injector(["weight"], StuckAt(n=5, value=1, bits="sign"), seed=0).inject(lin)
    assert (h.faults.n_faults, h.n_words_changed) == (5, 0)
    h.restore()
    h = Injector(["weight"], StuckAt(n=5, value=0, bits="sign"), seed=0).inject(lin)
    assert h.n_words_changed == 5
    h.restore()
    assert torch.equal(lin.weight, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_n_words_changed_on_cuda_matches_cpu():
    for value in (0, 1):
        counts = []
        for device in ("cpu", "cuda"):
            lin = nn.Linear(64, 64).to(device)
            with torch.no_grad():
                lin.weight.copy_(torch.linspace(-1, 1, 64 * 64).view(64, 64))
            inj = Injector(["weight"], StuckAt(1e-2, value=value), seed=3)
            with inj.inject(lin) as faults:
                pass
            h = inj.inject(lin)
            counts.append((faults.n_faults, h.n_words_changed))
            h.restore()
        assert counts[0] == counts[1] and 0 < counts[0][1] < counts[0][0]


def test_fault_map_records_targeted_sites(tmp_path):
    model = _build()
    fmap = Injector(error=BitFlip(1e-2), seed=1).sample(model)
    assert fmap.n_targeted == 32 * NUMEL
    assert Injector(["0.weight"], error=StuckAt(1e-2, bits="sign"), seed=1).sample(
        model).n_targeted == 8 * 4
    assert SBP().filter_faults(fmap).n_targeted == fmap.n_targeted
    fmap.save(tmp_path / "m.pt")
    assert FaultMap.load(tmp_path / "m.pt").n_targeted == fmap.n_targeted
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["n_targeted"]  # a file written before the field existed
    torch.save(payload, tmp_path / "old.pt")
    old = FaultMap.load(tmp_path / "old.pt")
    assert old.n_targeted is None and old.n_faults == fmap.n_faults


# ---- determinism check -------------------------------------------------------------------
def _noisy(model, x):
    return {"mean": float(model(x).mean()) + float(torch.rand(()))}


def test_nondeterministic_evaluate_disables_skipping():
    c = _campaign(evaluate=_noisy, bers=[0.0, 1e-3], repetitions=2,
                  models={"a": _build, "b": _build})
    w = TrialWorker(c, device="cpu")
    with pytest.warns(UserWarning, match=r"evaluate\(\) of model 'a' .*not deterministic"):
        result = w.run_chunk([t for t in expand(c) if t.model == "a"])
    assert result.nondeterministic == ["a"]
    assert all(r["evaluated"] for r in result.rows)
    assert any(r["n_faults_sampled"] == 0 for r in result.rows)
    with pytest.warns(UserWarning, match="'b'"):
        result = w.run_chunk([t for t in expand(c) if t.model == "b"])
    assert result.nondeterministic == ["a", "b"]
    assert all(r["evaluated"] for r in result.rows)


def test_nan_metrics_count_as_deterministic():
    c = _campaign(evaluate=lambda m, x: {"nan": float("nan")}, bers=[0.0], repetitions=2,
                  error_models={"flip": BitFlip}, mitigations={"none": None})
    result = TrialWorker(c, device="cpu").run_chunk(expand(c))
    assert result.nondeterministic == []
    assert not any(r["evaluated"] for r in result.rows)
    assert all(math.isnan(r["nan"]) for r in result.rows)


NOISY_JOB = '''
import torch
from torch import nn
from pytei_ray import Campaign

def build():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))

def data(name):
    return torch.randn(16, 8, generator=torch.Generator().manual_seed(1))

def evaluate(model, x):  # not deterministic: unseeded noise
    return {"mean": float(model(x).mean()) + float(torch.rand(()))}

campaign = Campaign(name="noisy", models={"a": build}, data=data, evaluate=evaluate,
                    bers=[0.0, 1e-3], repetitions=2, seed=1)
'''


def test_driver_records_nondeterministic_models_in_the_manifest(tmp_path):
    from pytei_ray.driver import run

    job = tmp_path / "job.py"
    job.write_text(NOISY_JOB)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="not deterministic"):
        summary = run(str(job), str(out), executor="local", progress=False, echo=lambda s: None)
    assert summary.complete
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["nondeterministic_evaluate"] == ["a"]
    import pandas as pd

    df = pd.read_parquet(out)
    assert df["evaluated"].all() and len(df) == 4
    assert {"n_faults_sampled", "n_sites", "p_no_fault", "evaluated"} <= set(df.columns)


# ---- turning it off; the spec ------------------------------------------------------------
def test_skip_off_evaluates_every_trial():
    calls = []

    def evaluate(model, x):
        calls.append(1)
        return _eval(model, x)

    c = _campaign(evaluate=evaluate, skip_ineffective=False, repetitions=2)
    rows = TrialWorker(c, device="cpu").run_chunk(expand(c)).rows
    assert all(r["evaluated"] for r in rows)
    assert any(r["n_faults_sampled"] == 0 for r in rows)
    # one golden run per (model, mitigation) and no second one (no determinism check needed)
    assert len(calls) == 2 + len(rows)


def test_spec_unchanged_by_default_and_a_change_when_off():
    kw = dict(name="pin", models={"a": lambda: torch.nn.Linear(2, 2)}, data=lambda n: None,
              evaluate=lambda m, x: {}, bers=[0.0, 1e-3], repetitions=2,
              mitigations={"none": None, "sbp": SBP()}, seed=5)
    spec = Campaign(**kw).spec({"k": 1})
    assert "skip_ineffective" not in spec
    # the hash a default campaign had before the option existed
    assert spec_hash(spec) == "78dd465999c2de2e7bf313277037c0c50ca2102848554e805b9d7397dd329a30"
    off = Campaign(**kw, skip_ineffective=False).spec({"k": 1})
    assert off["skip_ineffective"] is False
    diff = compare_specs(spec, off)
    assert diff.changes == ["skip_ineffective: True -> False"] and not diff.extendable
    assert not compare_specs(off, spec).extendable
    assert compare_specs(spec, Campaign(**kw, skip_ineffective=True).spec({"k": 1})).same
    with pytest.raises(CampaignSpecError, match="`skip_ineffective` to be a bool"):
        Campaign(**kw, skip_ineffective=1)


def test_resuming_a_directory_of_an_older_version_keeps_the_new_columns(tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pytei_ray.storage import ResultsStore, ResultsWriter, result_schema

    new_cols = {"n_faults_sampled", "n_sites", "p_no_fault", "evaluated"}
    full = result_schema(["acc"])
    old_schema = pa.schema([f for f in full if f.name not in new_cols])
    old = pa.Table.from_pylist([{"trial_id": "old", "status": "ok", "acc": 1.0,
                                 "golden_acc": 1.0}], schema=old_schema)
    pq.write_table(old, tmp_path / "part-0-old.parquet")
    w = ResultsWriter(ResultsStore(str(tmp_path)), metrics=["acc"])
    w.add([{"trial_id": "new", "status": "ok", "acc": 0.5, "golden_acc": 1.0,
            "evaluated": True, "n_sites": 64, "n_faults_sampled": 1, "p_no_fault": 0.5}])
    w.close()
    df = pd.read_parquet(tmp_path).set_index("trial_id")
    assert new_cols <= set(df.columns)
    assert df.loc["new", "evaluated"] == True  # noqa: E712 (a numpy/pandas bool)
    assert pd.isna(df.loc["old", "evaluated"])
