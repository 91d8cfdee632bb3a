"""Activation faults under autograd (issue 17, defects A, B, C) and the per-call stream "v2"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from pytei_ray import ActivationInjector, BitFlip, StuckAt
from pytei_ray.faults import SiteInfo
from pytei_ray.faults.callstream import CallStream

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bits(t: torch.Tensor) -> np.ndarray:
    from pytei_ray.faults import layout_of

    return t.detach().contiguous().view(layout_of(t.dtype).int_dtype).reshape(-1).numpy().copy()


class Capture:
    """A forward hook registered after the fault hook: sees (and keeps) the faulty output."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.value = out.detach().clone()


def mlp(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def reference_grads(model, x, g, faulty_hidden):
    """Autograd on a reference: the clean graph up to the Tanh, the faulty values after it, and
    the fault as an identity between them (straight-through), built by hand."""
    lin1, tanh, lin2 = model
    x = x.detach().requires_grad_(True)
    hidden = tanh(lin1(x))
    leaf = faulty_hidden.detach().requires_grad_(True)
    out = lin2(leaf)
    (out * g).sum().backward()
    hidden.backward(leaf.grad)  # straight-through: the gradient at the faulty value, unchanged
    return x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("error", [BitFlip(n=5), StuckAt(0.3, value=1, bits=[62])])
def test_a_saved_output_is_not_corrupted_and_gradients_equal_autograds(error):
    """Tanh saves its output for backward: writing the fault in place changed what backward used
    (96 of 128 gradient entries differed, some infinitely, before the fix)."""
    model, x, g = mlp(), torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 3,
                                                                             dtype=torch.float64)
    cap = Capture(model[1])
    xg = x.clone().requires_grad_(True)
    with ActivationInjector("1", error, seed=4).inject(model) as h:
        (model(xg) * g).sum().backward()
    cap.handle.remove()
    assert h.n_faults > 0
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref_x, ref = reference_grads(model, x, g, cap.value)
    assert torch.equal(xg.grad, ref_x)
    for name in ref:
        assert torch.equal(got[name], ref[name]), name
    assert torch.isfinite(xg.grad).all()


def test_a_gradcheck_of_a_permanent_high_mantissa_fault():
    """Finite differences through the faulty forward agree with the straight-through backward:
    a flip of a high mantissa bit at fixed positions shifts the value by a locally constant
    amount, so the numerical Jacobian is the clean one."""
    model = mlp()
    inj = ActivationInjector("1", BitFlip(n=3, bits=[50, 51]), seed=2, mode="permanent")
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    with inj.inject(model) as h:
        assert torch.autograd.gradcheck(lambda t: model(t), (x,), eps=1e-7, atol=1e-5)
    assert h.n_faults > 0


@pytest.mark.parametrize("where", ["input", "output"])
def test_b_copies_pass_the_gradient_straight_through(where):
    """A copy (where='input', an output aliasing its input) used to be made under no_grad, so
    the gradient stopped there (the input's .grad was None)."""
    torch.manual_seed(1)
    lin = nn.Linear(6, 2).double()
    first = nn.Identity() if where == "output" else lin
    model = nn.Sequential(first, lin) if where == "output" else nn.Sequential(lin)
    target = "0"
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    keep = bits(x)
    seen: list[torch.Tensor] = []
    with ActivationInjector(target, BitFlip(n=4, bits="mantissa"), seed=0, where=where).inject(
            model) as h:
        grab = lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
        model(x).sum().backward()
    grab.remove()
    assert h.n_faults == 4 and x.grad is not None
    assert np.array_equal(bits(x), keep)  # the caller's tensor is untouched
    assert not torch.equal(seen[0], x.detach())  # the layer saw the faulty copy
    # straight-through: d(sum(lin(x')))/dx' = column sums of W, passed on unchanged
    assert torch.equal(x.grad, lin.weight.detach().sum(0).expand(3, 6))
    assert torch.equal(lin.weight.grad, torch.ones(2, 1, dtype=torch.float64) * seen[0].sum(0))


class ReturnsKeyword(nn.Module):
    def forward(self, x=None, scale=None):
        return x


def test_c_an_output_aliasing_a_keyword_input_is_copied():
    """A module that returns an input passed by keyword was not seen as aliasing: the caller's
    tensor was corrupted in place (283 of 1024 words)."""
    mod, x = ReturnsKeyword(), torch.randn(32, 32)
    keep = bits(x)
    with ActivationInjector("", BitFlip(0.02), seed=0).inject(mod) as h:
        out = mod(x=x, scale=1.0)
    assert h.n_faults > 0 and np.array_equal(bits(x), keep)
    assert out is not x and np.count_nonzero(bits(out) != keep) == h.n_words


def test_c_a_tuple_returning_one_tensor_twice_is_written_once_per_element():
    class Twice(nn.Module):
        def forward(self, x):
            y = x * 2
            return y, y

    with ActivationInjector("", BitFlip(n=3), seed=1, record_positions=True).inject(
            m := Twice()) as h:
        a, b = m(torch.ones(4, 8))
    clean = bits(torch.ones(4, 8) * 2)
    assert np.flatnonzero(bits(a) != clean).tolist() == h.calls[0].index.tolist()
    assert np.flatnonzero(bits(b) != clean).tolist() == h.calls[1].index.tolist()


def test_fresh_outputs_without_autograd_are_still_written_in_place():
    lin = nn.Linear(8, 8)
    ptrs: list[int] = []
    lin.register_forward_hook(lambda m, a, o: ptrs.append(o.data_ptr()))  # after the fault hook
    with torch.no_grad(), ActivationInjector("", BitFlip(n=2)).inject(lin):
        out = lin(torch.randn(2, 8))
    assert ptrs == [out.data_ptr()]


# ---- the per-call stream v2 ------------------------------------------------------------------
@pytest.mark.parametrize("ber", [1e-4, 3e-3, 0.05])
def test_v2_counts_are_binomial_including_the_no_fault_calls(ber):
    stream = CallStream(BitFlip(ber), seed=5, domain="test")
    site = SiteInfo("s", torch.float32, (8, 16))  # 4096 bits
    key = stream.key("s")
    n = 4096
    counts = np.array([0 if (tf := stream.sample(key, (c,), site)) is None else tf.n_sites
                       for c in range(3000)])
    mean, var = n * ber, n * ber * (1 - ber)
    assert abs(counts.mean() - mean) < 5 * np.sqrt(var / counts.size)
    p0 = (1 - ber) ** n
    assert abs((counts == 0).mean() - p0) < 5 * np.sqrt(p0 * (1 - p0) / counts.size) + 1e-3
    hist = np.bincount(counts, minlength=counts.max() + 1)
    expected = stats.binom.pmf(np.arange(hist.size), n, ber) * counts.size
    keep = expected > 5
    chi2 = ((hist[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, max(1, keep.sum() - 1)) > 1e-4


@pytest.mark.parametrize("k", [1, 7])
def test_v2_positions_are_uniform_and_distinct_per_call(k):
    stream = CallStream(BitFlip(n=k), seed=1, domain="test")
    site = SiteInfo("s", torch.float16, (10, 10))  # 1600 bits
    key = stream.key("s")
    bit_hits = np.zeros(16, dtype=np.int64)
    words = np.zeros(100, dtype=np.int64)
    for c in range(2000):
        tf = stream.sample(key, (c,), site)
        assert tf.n_sites == k
        flips = tf.xor_mask.view(np.uint16)
        assert int(np.bitwise_count(flips).sum()) == k  # distinct sites, folded per word
        for w, m in zip(tf.index, flips):
            words[w] += 1
            bit_hits += (m >> np.arange(16, dtype=np.uint16)) & 1
    for counts in (bit_hits, words):
        assert stats.chisquare(counts).pvalue > 1e-4


def test_v2_is_a_pure_function_of_key_and_counter():
    a = CallStream(BitFlip(0.01), seed=3, domain="d")
    b = CallStream(BitFlip(0.01), seed=3, domain="d")
    site = SiteInfo("s", torch.bfloat16, (64,))
    ka, kb = a.key("m", 0), b.key("m", 0)
    draws = [(a.sample(ka, (s, c), site), b.sample(kb, (s, c), site))
             for s in range(5) for c in range(3)]
    for x, y in draws:
        assert (x is None) == (y is None)
        if x is not None:
            assert x.index.tolist() == y.index.tolist()
            assert x.xor_mask.tolist() == y.xor_mask.tolist()
    got = [tuple(x.index.tolist()) for x, _ in draws if x is not None]
    assert len(set(got)) == len(got) > 5  # new faults for every counter
    assert a.key("m", 0) != CallStream(BitFlip(0.01), seed=4, domain="d").key("m", 0)


def test_v1_stays_available_and_campaign_targets_keep_it():
    from pytei_ray import Activations

    assert repr(Activations("0")) == "Activations(targets='0', mode='transient', where='output')"
    assert Activations("0").injector(BitFlip(1e-3), 1).stream == "v1"
    assert "stream='v2'" in repr(Activations("0", stream="v2"))
    model, x = mlp(torch.float32), torch.randn(4, 6)

    def positions(stream):
        inj = ActivationInjector("0", BitFlip(0.01), seed=9, stream=stream,
                                 record_positions=True)
        with inj.inject(model) as h, torch.no_grad():
            model(x), model(x)
        return [c.index.tolist() for c in h.calls]

    assert positions("v1") == positions("v1") and positions("v2") == positions("v2")
    assert positions("v1") != positions("v2")
    with pytest.raises(ValueError, match="`stream`"):
        ActivationInjector("0", BitFlip(0.01), stream="v3")
