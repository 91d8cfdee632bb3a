"""Faults in activations: exact counts, determinism, permanent positions, cleanup, bad input."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pytei_ray import ActivationInjector, BitFlip, RandomValue, StuckAt, state_checksum

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def words(t: torch.Tensor) -> np.ndarray:
    from pytei_ray.faults import layout_of

    return t.detach().contiguous().view(layout_of(t.dtype).int_dtype).reshape(-1).numpy().copy()


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("ber", [3e-4, 2e-3, 1e-2])
def test_transient_counts_are_binomial_per_call(ber):
    model, x = make_mlp(), torch.randn(4, 32)
    n_bits = 4 * 64 * 32
    with ActivationInjector("0", BitFlip(ber), seed=11).inject(model) as h, torch.no_grad():
        for _ in range(400):
            model(x)
    counts = np.array([c.n_faults for c in h.calls])
    assert counts.size == 400 and h.n_calls == 400
    mean, var = n_bits * ber, n_bits * ber * (1 - ber)
    assert abs(counts.mean() - mean) < 5 * np.sqrt(var / counts.size)
    assert 0.6 * var < counts.var(ddof=1) < 1.5 * var
    assert len({tuple(c.shape) for c in h.calls}) == 1


def test_exact_count_mode_is_per_tensor_and_call():
    model, x = make_mlp(), torch.randn(4, 32)
    with ActivationInjector(nn.Linear, BitFlip(n=3), seed=0).inject(model) as h:
        model(x)
        model(x)
    assert h.faults_per_module() == {"0": 6, "2": 6, "4": 6}
    assert all(c.n_faults == 3 and c.n_words >= 2 for c in h.calls)


def _positions(seed, calls=3, order=("0", "2")):
    model, x = make_mlp(), torch.randn(4, 32)
    inj = ActivationInjector(list(order), BitFlip(5e-3), seed=seed, record_positions=True)
    with inj.inject(model) as h, torch.no_grad():
        for _ in range(calls):
            model(x)
    return {(c.module, c.call): c.index.tolist() for c in h.calls}


def test_faults_are_a_pure_function_of_seed_module_call_and_shape():
    a, b = _positions(5), _positions(5)
    assert a == b
    assert a[("0", 0)] != a[("0", 1)]  # a new draw at every call
    assert a != _positions(6)
    # the faults of module "0" do not depend on which other modules are targeted
    only0 = _positions(5, order=("0",))
    assert only0 == {k: v for k, v in a.items() if k[0] == "0"}


def test_faults_do_not_depend_on_the_order_modules_run_in():
    class Two(nn.Module):
        def __init__(self, swap: bool):
            super().__init__()
            self.a, self.b, self.swap = nn.Linear(8, 8), nn.Linear(8, 8), swap

        def forward(self, x):
            if self.swap:
                return self.b(x), self.a(x)
            return self.a(x), self.b(x)

    recs = []
    for swap in (False, True):
        torch.manual_seed(0)
        m = Two(swap)
        with ActivationInjector(["a", "b"], BitFlip(0.01), seed=3,
                                record_positions=True).inject(m) as h:
            m(torch.ones(2, 8))
        recs.append({c.module: c.index.tolist() for c in h.calls})
    assert recs[0] == recs[1]


def test_permanent_faults_hit_the_same_per_sample_positions_every_sample_and_call():
    model = make_mlp()
    inj = ActivationInjector("0", BitFlip(n=5), seed=2, mode="permanent", record_positions=True)
    hit = set()
    with inj.inject(model) as h, torch.no_grad():
        for batch in (4, 7, 4):
            x = torch.randn(batch, 32)
            clean = words(model[0].forward(x))  # forward() bypasses the hooks
            diff = (clean != words(model[0](x))).reshape(batch, 64)
            per_sample = {tuple(np.flatnonzero(row)) for row in diff}
            assert len(per_sample) == 1  # every sample hit at the same positions
            hit |= per_sample
    assert len(hit) == 1 and len(next(iter(hit))) == 5  # and in every call
    assert [c.n_faults for c in h.calls] == [20, 35, 20]
    assert all(c.per_sample and c.index.tolist() == h.calls[0].index.tolist() for c in h.calls)


def test_permanent_faults_refuse_a_changed_per_sample_shape():
    conv = nn.Conv2d(1, 2, 3)
    with ActivationInjector("", BitFlip(n=1), mode="permanent").inject(conv):
        conv(torch.randn(2, 1, 8, 8))
        with pytest.raises(ValueError, match="per-sample shape, which changed"):
            conv(torch.randn(2, 1, 9, 9))


def test_exact_cleanup_and_locality():
    model, x = make_mlp(), torch.randn(8, 32)
    before = state_checksum(model)
    with torch.no_grad():
        clean = model(x)
        hidden_clean = model[:2](x)
    with ActivationInjector("2", BitFlip(0.05), seed=1).inject(model) as h, torch.no_grad():
        hidden = model[:2](x)  # the layers before the target are untouched
        faulty = model(x)
    assert h.n_faults > 0 and h.removed
    assert torch.equal(hidden, hidden_clean) and not torch.equal(faulty, clean)
    assert hooks_left(model) == 0 and state_checksum(model) == before
    with torch.no_grad():
        assert torch.equal(model(x), clean)


def test_stuck_at_semantics_on_activations():
    model, x = make_mlp(), torch.randn(8, 32)
    with ActivationInjector("0", StuckAt(1.0, value=1, bits="sign")).inject(model):
        neg = model[0](x)
    assert (torch.signbit(neg)).all()
    with ActivationInjector("0", StuckAt(1.0, value=0, bits="sign")).inject(model):
        pos = model[0](x)
    assert not torch.signbit(pos).any()
    assert torch.equal(pos.abs(), neg.abs())


def test_random_value_replaces_words():
    lin = nn.Linear(4, 100)
    with ActivationInjector("", RandomValue(n=10, low=5.0, high=6.0)).inject(lin) as h:
        out = lin(torch.zeros(1, 4))
    assert h.n_faults == 10 and int(((out >= 5) & (out < 6)).sum()) == 10


class Cast(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x):
        return (x * 10).to(self.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int8,
                                   torch.uint8])
def test_every_dtype_through_its_bit_view(dtype):
    mod, x = Cast(dtype), torch.randn(4, 64)
    clean = words(mod(x))
    inj = ActivationInjector("", BitFlip(n=7), seed=4, record_positions=True)
    with inj.inject(mod) as h:
        out = mod(x)
    assert out.dtype == dtype
    changed = np.flatnonzero(words(out) != clean)
    assert set(changed) == set(h.calls[0].index.tolist()) and h.calls[0].n_faults == 7


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantized_outputs_through_int_repr():
    q = torch.ao.nn.quantized.Quantize(0.1, 0, torch.quint8)
    x = torch.rand(2, 50)
    clean = q(x).int_repr()
    with ActivationInjector("", BitFlip(n=4), seed=0, record_positions=True).inject(q) as h:
        out = q(x)
    assert out.is_quantized and out.q_scale() == pytest.approx(0.1)
    changed = torch.nonzero((out.int_repr() != clean).reshape(-1)).reshape(-1).tolist()
    assert changed == h.calls[0].index.tolist()


def test_tuple_outputs_inject_every_tensor_element():
    class Pair(nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    m = Pair()
    a, b = m(torch.zeros(3, 5))
    with ActivationInjector("", BitFlip(n=2), seed=0).inject(m) as h:
        fa, fb = m(torch.zeros(3, 5))
    assert [c.element for c in h.calls] == [0, 1]
    assert not torch.equal(fa, a) and not torch.equal(fb, b)


def test_inputs_and_aliased_outputs_never_touch_the_caller_tensor():
    x = torch.randn(4, 16)
    keep = x.clone()
    ident = nn.Sequential(nn.Identity(), nn.Flatten())
    with ActivationInjector(["0", "1"], BitFlip(0.1), seed=0).inject(ident) as h:
        out = ident(x)
    assert h.n_faults > 0 and torch.equal(x, keep) and not torch.equal(out, x)
    lin = nn.Linear(16, 2)
    with ActivationInjector("", BitFlip(0.1), where="input").inject(lin) as h:
        lin(x)
    assert h.calls[0].where == "input" and torch.equal(x, keep)


def test_autograd_still_flows():
    model = make_mlp()
    with ActivationInjector("0", BitFlip(n=1, bits="mantissa")).inject(model):
        model(torch.randn(2, 32)).sum().backward()
    assert model[0].weight.grad is not None


def test_bad_input_is_refused_with_the_rule():
    model = make_mlp()
    with pytest.raises(ValueError, match=r"Unknown target module '5'"):
        ActivationInjector("5", BitFlip(1e-3)).inject(model)
    named = nn.Sequential(OrderedDict(encoder=nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"closest names: \['encoder'\]"):
        ActivationInjector("encodr", BitFlip(1e-3)).inject(named)
    with pytest.raises(ValueError, match="matches no leaf module"):
        ActivationInjector("enc.*", BitFlip(1e-3)).inject(model)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ActivationInjector("0", BitFlip(1.5))
    with pytest.raises(ValueError, match="`mode`"):
        ActivationInjector("0", BitFlip(1e-3), mode="sometimes")
    with pytest.raises(TypeError, match="ErrorModel"):
        ActivationInjector("0", 1e-3)
    assert hooks_left(model) == 0

    class Dict(nn.Module):
        def forward(self, x):
            return {"y": x}

    d = Dict()
    with ActivationInjector("", BitFlip(1e-3)).inject(d):
        with pytest.raises(TypeError, match=r"module '' \(Dict\) is a dict"):
            d(torch.ones(1))
    with ActivationInjector("", BitFlip(1e-3)).inject(cast := Cast(torch.bool)):
        with pytest.raises(TypeError, match="Unsupported dtype"):
            cast(torch.ones(2))


# ---- mitigations -------------------------------------------------------------------------------
def test_sbp_masks_activation_faults_on_the_protected_bits():
    from pytei_ray.faults import bit_fields
    from pytei_ray.mitigations import SBP

    model, x = make_mlp(), torch.randn(8, 32)
    with torch.no_grad():
        clean = words(model[0](x))
    inj = ActivationInjector("0", BitFlip(0.02), seed=9)
    with inj.inject(model, mitigations=[SBP()]) as h, torch.no_grad():
        out = words(model[0](x))
    assert 0 < h.n_faults < h.n_faults_sampled
    changed = (clean ^ out).view(np.uint32)
    protected = sum(1 << b for b in bit_fields(torch.float32)["sign"]
                    + bit_fields(torch.float32)["exponent"])
    assert changed.any() and not (changed & protected).any()
    # same seed without SBP: the same draw, with the protected flips back in
    with inj.inject(model) as h2, torch.no_grad():
        model[0](x)
    assert h2.n_faults == h2.n_faults_sampled == h.n_faults_sampled


@pytest.mark.parametrize("attach_first", [False, True])
def test_clip_sees_the_fault_in_the_same_layer_output(attach_first):
    from pytei_ray.mitigations import Clip

    model, x = make_mlp(), torch.randn(8, 32)
    huge = StuckAt(0.2, value=1, bits=[30])  # exponent MSB: values of ~1e38, or inf/NaN
    with torch.no_grad():
        with ActivationInjector("0", huge, seed=0).inject(model):
            raw = model[0](x)  # unmitigated: the fault is there
            assert (~torch.isfinite(raw) | (raw.abs() > 1e30)).any()
        outer = Clip().attach(model) if attach_first else None
        mits = [] if attach_first else [Clip()]
        with ActivationInjector("0", huge, seed=0).inject(model, mitigations=mits) as h:
            out = model[0](x)
        if outer is not None:
            outer.remove()
    assert h.n_faults > 0
    assert torch.isfinite(out).all() and out.abs().max() <= 100
    assert hooks_left(model) == 0


def test_ranger_clamps_activation_faults_to_profiled_bounds():
    from pytei_ray.mitigations import Ranger

    model, x = make_mlp(), torch.randn(8, 32)
    ranger = Ranger().profile(model, lambda m: m(x))
    lo, hi = ranger.ranges["0"]
    with ActivationInjector("0", StuckAt(0.2, value=1, bits=[30])).inject(
            model, mitigations=[ranger]), torch.no_grad():
        out = model[0](x)
    assert lo <= float(out.min()) and float(out.max()) <= hi
