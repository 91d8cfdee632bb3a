"""Training mitigations: paired with the unmitigated trial (same faults, same data order)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from training_fixtures import bits, make, run

from pytei_ray import BitFlip, StuckAt
from pytei_ray.faults import bit_fields
from pytei_ray.mitigations import SBP
from pytei_ray.training import (
    AtStep,
    Every,
    GradClip,
    ParamGrads,
    Rollback,
    SkipOnSpike,
    Weights,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPONENT_TOP = StuckAt(n=1, value=1, bits=[30])  # fp32: a weight below 2 becomes ~1e38


def test_mitigations_never_change_the_faults_drawn():
    sites = [Weights("0.weight"), ParamGrads("2.*")]
    mits = {"none": [], "clip": [GradClip(0.5)], "skip": [SkipOnSpike(3.0, warmup=2)],
            "rollback": [Rollback(3.0, warmup=2)], "sbp": [SBP()]}
    sampled = {}
    for name, m in mits.items():
        recs, _, tf = run(sites, when=Every(0.5, start=1), error=BitFlip(2e-3), steps=8,
                          mitigations=m)
        sampled[name] = [(r.step, r.attempt, {k: v.n_sampled for k, v in r.sites.items()})
                         for r in tf.records if r.attempt == 0]
    assert all(v == sampled["none"] for v in sampled.values())
    assert sum(sum(d.values()) for _, _, d in sampled["none"]) > 0


def test_sbp_filters_weight_faults_on_protected_bits():
    error = BitFlip(0.02)
    recs = run(Weights("0.weight"), when=AtStep(0), error=error, steps=1,
               mitigations=[SBP()])[0]
    plain = run(Weights("0.weight"), when=AtStep(0), error=error, steps=1)[0]
    assert recs[0].n_faults_sampled == plain[0].n_faults_sampled > recs[0].n_faults > 0
    # the words right after the injection: no protected bit changed
    from pytei_ray.training import TrainingFaults

    model, optim, _ = make()
    before = bits(model[0].weight)
    TrainingFaults(model, optim, site=Weights("0.weight"), error=error, when=AtStep(0),
                   seed=7, mitigations=[SBP()]).step(0)
    changed = (before ^ bits(model[0].weight)).view(np.uint32)
    protected = sum(1 << b for b in bit_fields(torch.float32)["sign"]
                    + bit_fields(torch.float32)["exponent"])
    assert changed.any() and not (changed & protected).any()


def test_grad_clip_bounds_the_update():
    recs, _, _ = run(ParamGrads("2.weight"), when=AtStep(3), error=StuckAt(n=1, value=1,
                                                                           bits=[30]),
                     opt="sgd", steps=5, mitigations=[GradClip(0.5)])
    raw, _, _ = run(ParamGrads("2.weight"), when=AtStep(3), error=StuckAt(n=1, value=1,
                                                                          bits=[30]),
                    opt="sgd", steps=5)
    assert recs[3].grad_norm > 1e30 and raw[3].grad_norm > 1e30  # recorded before clipping
    assert math.isfinite(recs[3].grad_norm)  # float64 norm: a huge finite gradient stays finite
    assert recs[3].update_norm < 1.0 < raw[3].update_norm


def test_skip_on_spike_skips_the_faulty_update_only():
    site, when = ParamGrads("2.weight"), AtStep(4)
    recs, params, _ = run(site, when=when, error=EXPONENT_TOP, steps=6,
                          mitigations=[SkipOnSpike(5.0, warmup=2)])
    raw, raw_params, _ = run(site, when=when, error=EXPONENT_TOP, steps=6)
    assert [r.action for r in recs] == ["ok"] * 4 + ["skip", "ok"]
    assert np.array_equal(params[4], params[3]) and recs[4].update_norm == 0.0
    assert raw[4].action == "ok" and not np.array_equal(raw_params[4], raw_params[3])
    assert all(math.isfinite(r.loss) for r in recs)


def test_rollback_recomputes_a_transient_weight_fault_away_exactly():
    g_recs, g_params, _ = run(None, steps=7)
    recs, params, tf = run(Weights("2.weight"), when=AtStep(4), error=EXPONENT_TOP, steps=7,
                           mitigations=[Rollback(5.0, warmup=2)])
    raw, _, _ = run(Weights("2.weight"), when=AtStep(4), error=EXPONENT_TOP, steps=7)
    assert raw[4].loss > 1e6 * g_recs[4].loss  # the fault is catastrophic unmitigated
    assert recs[4].action == "recomputed" and recs[4].attempts == 2
    assert [(r.step, r.attempt, r.active) for r in tf.records][4:6] == [(4, 0, True),
                                                                        (4, 1, False)]
    # the recomputation does not meet the transient fault again: back on the golden trajectory
    for i in range(7):
        assert np.array_equal(params[i], g_params[i]) and recs[i].loss == g_recs[i].loss


def test_rollback_gives_up_on_a_permanent_fault_and_skips():
    from pytei_ray.training import Permanent

    recs, _, _ = run(ParamGrads("2.weight"), when=Permanent(4), error=EXPONENT_TOP, steps=6,
                     mitigations=[Rollback(5.0, warmup=2, retries=1)])
    assert [r.action for r in recs][4:] == ["skip", "skip"]
    assert [r.attempts for r in recs][4:] == [2, 2]


def test_mitigation_arguments_are_checked():
    with pytest.raises(ValueError, match="`max_norm`"):
        GradClip(0)
    with pytest.raises(ValueError, match="`factor`"):
        SkipOnSpike(1.0)
    with pytest.raises(ValueError, match="`warmup` <= `window`"):
        Rollback(warmup=30, window=20)
    with pytest.raises(ValueError, match="`on`"):
        SkipOnSpike(on=("accuracy",))


def test_standard_mitigations_are_fresh_and_named():
    from pytei_ray.mitigations import SBP
    from pytei_ray.training import GradClip, Rollback, SkipOnSpike, standard_mitigations

    every = standard_mitigations()
    assert list(every) == ["none", "clip", "skip", "rollback", "sbp"]
    assert every["none"] is None and isinstance(every["sbp"], SBP)
    assert isinstance(every["clip"], GradClip) and isinstance(every["skip"], SkipOnSpike)
    assert isinstance(every["rollback"], Rollback)
    assert standard_mitigations()["rollback"] is not every["rollback"]  # no shared state
    assert list(standard_mitigations(["sbp", "none"])) == ["none", "sbp"]  # the fixed order
    with pytest.raises(KeyError, match=r"\['ecc'\].*'rollback'"):
        standard_mitigations(["none", "ecc"])
