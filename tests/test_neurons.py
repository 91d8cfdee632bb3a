"""PyTorchFI-style neuron faults: exact positions and values, its random helpers, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytei_ray import (
    NeuronFault,
    random_fault_per_layer,
    random_neuron_fault,
    random_neuron_fault_batched,
    single_neuron_fault,
    state_checksum,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3),
                         nn.ReLU(), nn.Conv2d(6, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


CONVS = ["0", "2", "4"]


def diffs(model, x, make_handle):
    """Per conv layer: indices (b, c, h, w) where the faulty output differs from the clean one."""
    with torch.no_grad():
        seen: dict[str, torch.Tensor] = {}
        caps = [model.get_submodule(n).register_forward_hook(
            lambda m, a, o, n=n: seen.__setitem__(n, o.clone())) for n in CONVS]
        model(x)
        ref = dict(seen)
        with make_handle() as h:
            model(x)
            model(x)  # a fixed fault: the second call is hit the same way
        for c in caps:
            c.remove()
    out = {n: [tuple(i) for i in torch.nonzero(seen[n] != ref[n]).tolist()] for n in CONVS}
    return out, seen, h


def test_single_neuron_value_and_bit():
    model, x = cnn(), torch.randn(2, 3, 8, 8)
    before = state_checksum(model)
    d, seen, h = diffs(model, x, lambda: single_neuron_fault(model, 1, (1, 3, 2, 4), value=1e4))
    assert d == {"0": [], "2": [(1, 3, 2, 4)], "4": d["4"]}
    assert float(seen["2"][1, 3, 2, 4]) == 1e4 and h.n_faults == 2  # two calls
    with torch.no_grad():
        clean = model[2](model[1](model[0](x)))
    d, seen, _ = diffs(model, x, lambda: single_neuron_fault(model, "2", (0, 5, 0, 1), bit=30))
    assert d["2"] == [(0, 5, 0, 1)]
    a = clean[0, 5, 0, 1].view(torch.int32) ^ (1 << 30)
    assert torch.equal(seen["2"][0, 5, 0, 1].view(torch.int32), a)
    d, _, _ = diffs(model, x, lambda: single_neuron_fault(model, "0", (None, 0, 0, 0), value=9.0))
    assert d["0"] == [(0, 0, 0, 0), (1, 0, 0, 0)]  # batch=None: every sample
    assert state_checksum(model) == before
    assert all(not m._forward_hooks for m in model.modules())


def test_random_neuron_fault_is_one_fixed_seeded_fault():
    model, x = cnn(), torch.randn(4, 3, 8, 8)
    d, _, h = diffs(model, x, lambda: random_neuron_fault(model, batch_size=4, seed=3))
    hit = [n for n in CONVS if d[n] and n == h.calls[0].module]
    assert len(hit) == 1 and len(d[hit[0]]) == 1
    assert h.calls[0].index.tolist() == h.calls[1].index.tolist()  # fixed across calls
    again, _, _ = diffs(model, x, lambda: random_neuron_fault(model, batch_size=4, seed=3))
    assert again[hit[0]] == d[hit[0]]
    assert len(h.calls) == 2 and all(c.n_faults == 1 for c in h.calls)


def test_random_neuron_fault_batched_hits_every_sample_once():
    model, x = cnn(), torch.randn(5, 3, 8, 8)
    _, _, h = diffs(model, x, lambda: random_neuron_fault_batched(model, 5, seed=1))
    first = [c for c in h.calls if c.call == 0]
    samples = sorted(int(i) // int(np.prod(c.shape[1:])) for c in first for i in c.index)
    assert samples == [0, 1, 2, 3, 4]
    _, _, h = diffs(model, x, lambda: random_neuron_fault_batched(
        model, 5, random_location=False, seed=1))
    first = [c for c in h.calls if c.call == 0]
    assert len(first) == 1
    per = int(np.prod(first[0].shape[1:]))
    assert len({int(i) % per for i in first[0].index}) == 1 and first[0].n_words == 5


def test_random_fault_per_layer_hits_each_layer_once():
    model, x = cnn(), torch.randn(3, 3, 8, 8)
    d, _, h = diffs(model, x, lambda: random_fault_per_layer(model, 3, seed=0))
    assert sorted(h.faults_per_module().values()) == [2, 2, 2]  # one per layer, two calls
    assert len(d["0"]) == 1  # later layers also see the faults propagated from earlier ones
    first = [c for c in h.calls if c.call == 0]
    assert len({int(c.index[0]) // int(np.prod(c.shape[1:])) for c in first}) == 1  # one sample


def test_bad_neuron_faults():
    model = cnn()
    with pytest.raises(ValueError, match="exactly one of `value`"):
        NeuronFault("0", (0, 0, 0, 0), value=1.0, bit=3)
    with pytest.raises(ValueError, match=r"an int in \[0, 3\)"):
        single_neuron_fault(model, 7, (0, 0, 0, 0), value=1.0)
    with pytest.raises(ValueError, match="Unknown target module"):
        single_neuron_fault(model, "9", (0, 0, 0, 0), value=1.0)
    with single_neuron_fault(model, 0, (4, 0, 0, 0), value=1.0):
        with pytest.raises(ValueError, match="batch index 4 is out of range"):
            model(torch.randn(2, 3, 8, 8))
    with single_neuron_fault(model, 0, (0, 0, 0), value=1.0):
        with pytest.raises(ValueError, match="does not fit the output"):
            model(torch.randn(2, 3, 8, 8))
    assert all(not m._forward_hooks for m in model.modules())
