"""Mitigations: SBP never lets a protected bit change; hooks clamp and are removed on exit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytei_ray import BitFlip, Injector, StuckAt, state_checksum
from pytei_ray.faults import bit_fields
from pytei_ray.mitigations import SBP, Clip, Mitigation, Ranger


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)
    )


def int_words(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: p.detach().view(torch.int32).numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("error", [BitFlip(0.05), StuckAt(0.05, value=1), BitFlip(n=50)], ids=repr)
@pytest.mark.parametrize("bits", [None, ("sign",), ("exponent", 0, 1)], ids=str)
def test_sbp_never_changes_a_protected_bit(error, bits):
    model = mlp()
    before = int_words(model)
    sbp = SBP(bits=bits) if bits is not None else SBP()
    protected_bits = bits if bits is not None else ("sign", "exponent")
    fields = bit_fields(torch.float32)
    prot = set()
    for b in protected_bits:
        prot.update(fields[b] if isinstance(b, str) else (b,))
    mask = np.uint32(sum(1 << b for b in prot))
    unmitigated = Injector(error=error, seed=1).sample(model)
    with Injector(error=error, seed=1).inject(model, mitigations=[sbp]) as faults:
        after = int_words(model)
        for n in before:
            diff = (before[n] ^ after[n]).view(np.uint32)
            assert np.all(diff & mask == 0)
        assert faults.n_faults <= unmitigated.n_faults
        # SBP only masks: the faults on unprotected bits are the unmitigated ones (pairing)
        for tm, tu in zip(faults.tensors, unmitigated.tensors):
            assert set(tm.index.tolist()) <= set(tu.index.tolist())
    assert all(np.array_equal(before[n], v) for n, v in int_words(model).items())


def test_sbp_keeps_mantissa_faults_only():
    model = mlp()
    faults = SBP().filter_faults(Injector(error=BitFlip(0.05), seed=3).sample(model))
    mant = np.uint32(sum(1 << b for b in bit_fields(torch.float32)["mantissa"]))
    for t in faults.tensors:
        assert np.all(t.xor_mask.view(np.uint32) & ~mant == 0)
    assert faults.n_faults == sum(
        int(np.bitwise_count(t.xor_mask.view(np.uint32)).sum()) for t in faults.tensors
    )


def test_clip_clamps_all_but_last_linear_and_removes_hooks():
    model = mlp()
    x = torch.randn(8, 16)
    seen = {}
    # what the next layer receives from Linear 2 (after any clamp hook on it)
    model[3].register_forward_pre_hook(lambda m, a: seen.setdefault("mid", a[0].detach().clone()))
    check = state_checksum(model)
    with Injector(error=BitFlip(0.02, bits="exponent"), seed=0).inject(
        model, mitigations=[Clip(-1.0, 1.0)]
    ):
        n_hooks = sum(len(m._forward_hooks) for m in model.modules())
        model(x)
        assert seen["mid"].abs().max() <= 1.0
        assert torch.isfinite(seen["mid"]).all()
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks - 2
    assert state_checksum(model) == check


def test_clip_matches_pytei_defaults():
    model = mlp()
    clip = Clip()
    assert (clip.low, clip.high, clip.nan_to) == (-100.0, 100.0, 0.0)
    assert [n for n, _ in clip.hooked_modules(model)] == ["0", "2"]


def test_ranger_profiles_bounds_from_clean_data():
    model = mlp()
    data = torch.randn(64, 16)
    ranger = Ranger().profile(model, lambda m: m(data))
    with torch.no_grad():
        h = model[0](data)
    assert ranger.ranges["0"] == pytest.approx((float(h.min()), float(h.max())))
    assert set(ranger.ranges) == {"0", "2"}
    clean = model(data)
    with Injector(error=BitFlip(0.0), seed=0).inject(model, mitigations=[ranger]):
        assert torch.allclose(model(data), clean)  # clean data stays within the profiled range
    with pytest.raises(RuntimeError, match="profile"):
        Ranger().attach(model)


def test_failed_attach_rolls_back_the_weights():
    model = mlp()
    check = state_checksum(model)
    with pytest.raises(RuntimeError, match="profile"):
        Injector(error=BitFlip(0.05), seed=0).inject(model, mitigations=[Ranger()])
    assert state_checksum(model) == check
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_custom_mitigation():
    class ZeroBiasFaults(Mitigation):
        name = "no-bias-faults"

        def filter_faults(self, faults):
            keep = [t for t in faults.tensors if not t.name.endswith("bias")]
            return type(faults)(keep, faults.error, faults.unit, faults.seed)

    model = mlp()
    with Injector(error=BitFlip(0.05), seed=0).inject(model, mitigations=[ZeroBiasFaults()]) as f:
        assert all(not t.name.endswith("bias") for t in f.tensors)
