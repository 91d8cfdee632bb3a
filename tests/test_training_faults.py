"""Faults during training (issue 17): counts, determinism, straight-through gradients, where
each site's fault lands in a real loop, permanent positions, dtypes, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from training_fixtures import bits, closure, golden, make, run

from pytei_ray import BitFlip, state_checksum
from pytei_ray.training import (
    ActivationGrads,
    AtStep,
    Every,
    OptimizerState,
    Outputs,
    ParamGrads,
    Permanent,
    TrainingFaults,
    Weights,
    Window,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parent.parent




@pytest.mark.parametrize("site, opt, loss_changes", [
    (Weights("0.weight"), "adam", True),
    (Outputs("1"), "adam", True),
    (ActivationGrads("2"), "adam", False),
    (ActivationGrads("2", of="output"), "adam", False),
    (ParamGrads("2.*"), "adam", False),
    (OptimizerState("exp_avg"), "adam", False),
    (OptimizerState(["momentum_buffer"], "0.weight"), "sgd", False),
])
def test_a_fault_lands_at_its_step_and_site_only(site, opt, loss_changes):
    g_recs, g_params, _ = golden(opt)
    recs, params, tf = run(site, opt=opt)
    for i in range(3):  # before the fault: bit for bit the golden run
        assert recs[i].loss == g_recs[i].loss and np.array_equal(params[i], g_params[i])
        assert recs[i].n_faults == 0 and not tf.records[i].active
    assert recs[3].n_faults_sampled == recs[3].n_faults == 3 and recs[3].n_words_changed >= 1
    # activation/weight faults change the step's loss; gradient and state faults only its update
    assert (recs[3].loss != g_recs[3].loss) == loss_changes
    assert not np.array_equal(params[3], g_params[3])
    assert recs[4].n_faults == 0  # one step only


def test_activation_grad_faults_hit_only_this_modules_gradient():
    model, optim, data = make()
    x, y = data[0][0], data[1][0]
    seen = {}

    def watch(m, a, o):  # the gradient arriving at the Tanh's output
        o.register_hook(lambda g: seen.__setitem__("h", g.clone()))

    model[1].register_forward_hook(watch)
    def grads():
        model.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, seen["h"]
    clean, h_clean = grads()
    with TrainingFaults(model, optim, site=ActivationGrads("2"), error=BitFlip(n=4),
                        when=AtStep(0)) as tf:
        tf.step(0)
        faulty, h_faulty = grads()
        tf.before_step()
    changed = np.count_nonzero(bits(h_faulty) != bits(h_clean))
    assert changed == tf.records[0].totals.n_words_changed >= 1
    assert torch.equal(faulty["2.weight"], clean["2.weight"])  # the module's own weight grad
    assert not torch.equal(faulty["0.weight"], clean["0.weight"])  # upstream sees the fault


def test_output_faults_pass_gradients_straight_through_and_leave_saved_tensors_alone():
    model, optim, data = make()
    x = data[0][0]
    got = {}
    model[1].register_forward_hook(lambda m, a, o: got.__setitem__("h", o.detach().clone()))
    with TrainingFaults(model, optim, site=Outputs("1"), error=BitFlip(n=5), when=AtStep(0),
                        seed=2) as tf:
        tf.step(0)
        model(x).sum().backward()
        tf.before_step()
    assert tf.records[0].n_faults == 5
    faulty = {n: p.grad.clone() for n, p in model.named_parameters()}
    # reference: clean graph to the Tanh, the faulty values after it, identity in between
    model.zero_grad()
    pre = model[0](x)
    h = torch.tanh(pre)
    leaf = got["h"].requires_grad_(True)
    model[2](leaf).sum().backward()
    h.backward(leaf.grad)
    for n, p in model.named_parameters():
        assert torch.equal(faulty[n], p.grad), n


def test_caller_tensors_are_never_written():
    class Pass(nn.Module):
        def forward(self, x=None):
            return x

    model = nn.Sequential(Pass(), nn.Linear(8, 2))
    x = torch.randn(4, 8)
    keep = bits(x)
    with TrainingFaults(model, None, site=Outputs("0"), error=BitFlip(0.05),
                        when=AtStep(0)) as tf:
        tf.step(0)
        model[0](x=x)
        model(x)
    assert tf.records[0].n_faults > 0 and np.array_equal(bits(x), keep)

    class Twice(nn.Module):
        def forward(self, x):
            y = x * 2
            return y, y

    twice = Twice()
    with TrainingFaults(twice, None, site=Outputs(""), error=BitFlip(n=3),
                        when=AtStep(0)) as tf:
        tf.step(0)
        a, b = twice(torch.ones(4, 8))
    clean = bits(torch.ones(4, 8) * 2)
    # each element gets its own 3 faults: neither is written through the other
    assert tf.records[0].n_faults == 6
    assert 1 <= np.count_nonzero(bits(a) != clean) <= 3
    assert 1 <= np.count_nonzero(bits(b) != clean) <= 3


@pytest.mark.parametrize("site", [Weights("0.weight"), ParamGrads("0.weight"),
                                  OptimizerState("exp_avg", "0.weight")])
def test_counts_are_binomial_per_step_and_site(site):
    model, optim, data = make()
    closure(model, data, 0)()
    optim.step()  # the optimizer's state exists from here on
    ber, n_bits, steps = 2e-3, 128 * 32, 400
    tf = TrainingFaults(model, optim, site=site, error=BitFlip(ber), when=Every(1.0, start=1),
                        seed=3)
    counts = []
    for i in range(1, steps + 1):
        tf.step(i)
        model[0].weight.grad = torch.zeros(16, 8)
        tf.before_step()
        counts.append(tf.records[-1].totals.n_sampled)
    counts = np.array(counts)
    mean, var = n_bits * ber, n_bits * ber * (1 - ber)
    assert abs(counts.mean() - mean) < 5 * np.sqrt(var / steps)
    assert 0.6 * var < counts.var(ddof=1) < 1.5 * var


@pytest.mark.parametrize("site", [Outputs("0"), ActivationGrads("2")])
def test_hook_site_counts_are_binomial_per_step(site):
    model, optim, data = make()
    ber, steps = 3e-3, 300
    n_bits = 4 * 16 * 32  # a (4, 16) float32 activation or gradient, one call per step
    counts = []
    with TrainingFaults(model, optim, site=site, error=BitFlip(ber), when=Every(1.0),
                        seed=2) as tf:
        for i in range(steps):
            tf.step(i)
            model(data[0][i % 12]).sum().backward()
            tf.before_step()
            counts.append(tf.records[-1].totals.n_sampled)
    counts = np.array(counts)
    mean, var = n_bits * ber, n_bits * ber * (1 - ber)
    assert abs(counts.mean() - mean) < 5 * np.sqrt(var / steps)
    assert 0.6 * var < counts.var(ddof=1) < 1.5 * var


def test_intermittent_steps_are_seeded_bernoulli():
    sched = Every(0.2)
    hits = [s for s in range(2000) if sched.active(s, seed=5)]
    assert abs(len(hits) / 2000 - 0.2) < 5 * np.sqrt(0.2 * 0.8 / 2000)
    assert hits == [s for s in range(2000) if Every(0.2).active(s, seed=5)]
    assert hits != [s for s in range(2000) if sched.active(s, seed=6)]


def test_permanent_positions_are_the_same_at_every_step():
    model, optim, _ = make()
    tf = TrainingFaults(model, optim, site=ParamGrads("0.weight"), error=BitFlip(n=6),
                        when=Permanent(2, 7), seed=1)
    hit = []
    for i in range(9):
        tf.step(i)
        model[0].weight.grad = torch.full((16, 8), float(i + 1))
        tf.before_step()
        hit.append(tuple(np.flatnonzero(bits(model[0].weight.grad)
                                        != bits(torch.full((16, 8), float(i + 1))))))
    assert all(h == () for h in hit[:2] + hit[7:])
    assert len(set(hit[2:7])) == 1 and len(hit[2]) >= 1


def test_permanent_output_positions_per_sample_and_step():
    model, optim, data = make()
    with TrainingFaults(model, optim, site=Outputs("0"), error=BitFlip(n=3),
                        when=Permanent(), seed=4) as tf:
        hits = set()
        for i in range(3):
            tf.step(i)
            x = data[0][i]
            with torch.no_grad():
                diff = (bits(model[0](x)) != bits(model[0].forward(x))).reshape(4, 16)
            hits |= {tuple(np.flatnonzero(row)) for row in diff}
        assert len(hits) == 1
        with pytest.raises(ValueError, match="per-sample shape, which changed"):
            model[0](torch.randn(2, 3, 8))


def test_determinism_across_runs_and_processes():
    sites = [Weights("0.*"), Outputs("1"), ActivationGrads("2"), ParamGrads(),
             OptimizerState("exp_avg_sq")]
    a = run(sites, when=Every(0.5, start=1), error=BitFlip(3e-3), steps=5)
    b = run(sites, when=Every(0.5, start=1), error=BitFlip(3e-3), steps=5)
    rows = [r.as_row() for r in a[0]]
    assert repr(rows) == repr([r.as_row() for r in b[0]])  # repr: NaN equals NaN
    assert sum(r["n_faults"] for r in rows) > 0
    code = (
        "import sys, numpy as np; sys.path.insert(0, 'tests');"
        "import training_fixtures as t; from pytei_ray.training import *;"
        "from pytei_ray import BitFlip;"
        "s=[Weights('0.*'), Outputs('1'), ActivationGrads('2'), ParamGrads(),"
        " OptimizerState('exp_avg_sq')];"
        "r=t.run(s, when=Every(0.5, start=1), error=BitFlip(3e-3), steps=5);"
        "print(np.concatenate(r[1]).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == np.concatenate(a[1]).tobytes().hex()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_training_sites(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    optim = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    x = torch.randn(4, 8, dtype=dtype)
    sites = [Weights("0.weight"), Outputs("1"), ParamGrads("2.weight"),
             OptimizerState("momentum_buffer")]
    with TrainingFaults(model, optim, site=sites, error=BitFlip(n=2), when=Window(1, 3)) as tf:
        def step():
            loss = (model(x).float() ** 2).mean()
            loss.backward()
            return loss

        for i in range(4):
            train_step(i, model, optim, step, faults=tf)
    per = [{k: v.n_faults for k, v in r.sites.items()} for r in tf.records]
    assert per[1] == per[2] == dict.fromkeys(per[1], 2) and set(per[0].values()) == {0}


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no float8 in this torch")
def test_float8_weights():
    lin = nn.Linear(4, 4)
    lin.register_parameter("scale", nn.Parameter(torch.ones(16).to(torch.float8_e4m3fn),
                                                 requires_grad=False))
    before = bits(lin.scale)
    tf = TrainingFaults(lin, None, site=Weights("scale"), error=BitFlip(n=3), when=AtStep(0))
    rec = tf.step(0)
    assert rec.n_faults == 3 and np.count_nonzero(bits(lin.scale) != before) >= 1


def test_weight_faults_stay_and_hooks_are_removed():
    model, optim, data = make()
    before = state_checksum(model)
    with TrainingFaults(model, optim, site=[Weights("2.bias"), Outputs("1")],
                        error=BitFlip(n=1, bits="sign"), when=AtStep(0)) as tf:
        tf.step(0)
    assert state_checksum(model) != before  # nothing restored: a memory fault stays
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_input_is_refused_before_any_step():
    model, optim, _ = make()
    err = BitFlip(1e-3)
    cases = [
        (dict(site=Outputs("3")), ValueError, r"Unknown target module '3'"),
        (dict(site=Weights("0.wieght")), ValueError, r"closest names: \['0.weight'"),
        (dict(site=OptimizerState("exp_avgs")), ValueError,
         r"Adam has no state 'exp_avgs'.\n  expected one of: \['exp_avg', 'exp_avg_sq', 'step'\]"),
        (dict(when=AtStep(20), steps=10), ValueError, "outside the training window"),
        (dict(when=Permanent(10), steps=10), ValueError, "outside the training window"),
        (dict(site=OptimizerState("exp_avg"), when=AtStep(0)), ValueError,
         r"no state yet (?s:.)*Start optimizer-state faults at step 1"),
        (dict(site=[ParamGrads(), ParamGrads()]), ValueError, "listed twice"),
        (dict(error=1e-3), TypeError, "ErrorModel"),
        (dict(when=5), TypeError, "schedule"),
    ]
    for kwargs, exc, match in cases:
        args = dict(site=ParamGrads(), error=err, when=AtStep(3)) | kwargs
        with pytest.raises(exc, match=match):
            TrainingFaults(model, optim, **args)
    with pytest.raises(ValueError, match=r"must end after it starts.\n  expected: end > start = "
                                         r"5\n  got: end = 3"):
        Window(5, 3)
    with pytest.raises(ValueError, match="cannot be combined"):
        AtStep(1) | Permanent()
    with pytest.raises(ValueError, match="no state 'momentum_buffer'"):
        TrainingFaults(model, torch.optim.SGD(model.parameters(), 0.1),
                       site=OptimizerState("momentum_buffer"), error=err, when=AtStep(3))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_misuse_during_the_loop_is_named():
    model, optim, data = make()
    tf = TrainingFaults(model, optim, site=ParamGrads(), error=BitFlip(n=1), when=AtStep(1),
                        steps=4)
    with pytest.raises(ValueError, match="outside the training window"):
        tf.step(4)
    tf.step(0)
    tf.step(1)
    with pytest.raises(RuntimeError, match="have no gradient at this step"):
        tf.before_step()  # no backward yet
    tf.step(1)
    closure(model, data, 1)()
    with pytest.raises(RuntimeError, match="before_step\\(\\) was not called"):
        tf.step(2)
