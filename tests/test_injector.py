"""The injector: exact restore for every dtype, error-model semantics, targets, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from pytei_ray import BitFlip, FaultMap, Injector, RandomValue, StuckAt, state_checksum
from pytei_ray.faults import LAYOUTS, bit_fields, layout_of

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64] + [
    d for d in LAYOUTS if "float8" in str(d)
]
PLAIN_DTYPES = FLOAT_DTYPES + [torch.int8, torch.uint8]


def make_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    if dtype != torch.float32:
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight = nn.Parameter((m.weight * 20).to(dtype), requires_grad=False)
                m.bias = nn.Parameter((m.bias * 20).to(dtype), requires_grad=False)
    return model


def words(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().view(layout_of(p.dtype).int_dtype).clone()
        for n, p in model.named_parameters()
    }


ERRORS = [
    BitFlip(0.01),
    BitFlip(n=7),
    BitFlip(0.05, bits=["exponent"]),
    StuckAt(0.02, value=1),
    StuckAt(0.02, value=0),
    RandomValue(0.05, -2.0, 2.0),
    RandomValue(n=5, low=0.0, high=3.0),
]


@pytest.mark.parametrize("dtype", PLAIN_DTYPES, ids=str)
@pytest.mark.parametrize("error", ERRORS, ids=repr)
def test_exact_restore_every_dtype(dtype, error):
    model = make_mlp(1, dtype)
    if isinstance(error, BitFlip) and error.bits == ("exponent",) and not dtype.is_floating_point:
        error = BitFlip(0.05, bits=["value"])
    before, check = words(model), state_checksum(model)
    with Injector(error=error, seed=3).inject(model) as faults:
        during = words(model)
        changed = sum(int((during[n] != before[n]).sum()) for n in before)
        assert changed <= faults.n_words
        assert faults.n_faults > 0
    after = words(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert state_checksum(model) == check


def test_quantized_modules_inject_and_restore():
    import warnings

    import torch.ao.nn.quantized as nnq

    warnings.filterwarnings("ignore", category=UserWarning)

    class Q(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nnq.Embedding(100, 8)
            self.fc = nnq.Linear(8, 4)

    model = Q()
    w0 = model.fc.weight().int_repr().clone()
    check = state_checksum(model)
    with Injector(targets="fc.weight", error=BitFlip(0.05), seed=0).inject(model) as faults:
        changed = int((model.fc.weight().int_repr() != w0).sum())
        assert changed == faults.n_words > 0
    assert torch.equal(model.fc.weight().int_repr(), w0)
    assert state_checksum(model) == check


def test_bitflip_changes_exactly_sampled_bits_and_respects_bits():
    model = make_mlp(2)
    before = words(model)
    allowed = bit_fields(torch.float32)["mantissa"]
    mask = sum(1 << b for b in allowed)
    with Injector(error=BitFlip(0.01, bits="mantissa"), seed=5).inject(model) as faults:
        during = words(model)
        flipped = 0
        for n in before:
            diff = (before[n] ^ during[n]).numpy().view(np.uint32)
            assert np.all(diff & ~np.uint32(mask) == 0)
            flipped += int(np.bitwise_count(diff).sum())
        assert flipped == faults.n_faults
        assert faults.summary().totals["n_bits_changed"] == flipped


def test_bit_positions_uniform_over_bits():
    model = nn.Linear(1000, 100)
    before = words(model)["weight"]
    counts = np.zeros(32)
    for seed in range(5):
        with Injector(targets="weight", error=BitFlip(2e-3), seed=seed).inject(model):
            diff = (before ^ model.weight.detach().view(torch.int32)).numpy().view(np.uint32)
            for b in range(32):
                counts[b] += int(((diff >> np.uint32(b)) & np.uint32(1)).sum())
    _, pvalue = stats.chisquare(counts)
    assert pvalue > 1e-4


@pytest.mark.parametrize("ber", [9e-4, 7e-3])
def test_pytei_dead_bers_inject(ber):
    # PyTEI's dense map injects nothing at these BERs; here the count is Binomial(N, ber).
    model = nn.Linear(500, 200)
    n_bits = (500 * 200 + 200) * 32
    counts = [Injector(error=BitFlip(ber), seed=s).sample(model).n_faults for s in range(30)]
    z = (sum(counts) - 30 * n_bits * ber) / np.sqrt(30 * n_bits * ber * (1 - ber))
    assert abs(z) < 4.5


@pytest.mark.parametrize("value", [0, 1])
def test_stuck_at_semantics(value):
    model = make_mlp(3)
    before = words(model)
    with Injector(error=StuckAt(0.05, value=value), seed=1).inject(model) as faults:
        during = words(model)
        for tf in faults.tensors:
            old = before[tf.name].view(-1).numpy()[tf.index].view(np.uint32)
            new = during[tf.name].view(-1).numpy()[tf.index].view(np.uint32)
            stuck = (~tf.and_mask).view(np.uint32)
            # stuck bits hold `value`; every other bit is unchanged
            assert np.all((new & stuck) == (stuck if value else 0))
            assert np.all((new & ~stuck) == (old & ~stuck))
        # bits already at the stuck value do not change: about half the sites change
        changed = faults.summary().totals["n_bits_changed"]
        assert 0.35 * faults.n_faults < changed < 0.65 * faults.n_faults


def test_random_value_range():
    model = make_mlp(4)
    before = words(model)
    with Injector(error=RandomValue(0.1, low=5.0, high=6.0), seed=0).inject(model) as faults:
        for tf in faults.tensors:
            vals = model.get_parameter(tf.name).detach().view(-1)[torch.from_numpy(tf.index)]
            assert torch.all((vals >= 5.0) & (vals <= 6.0))
        assert faults.n_faults == faults.n_words
    assert all(torch.equal(before[n], words(model)[n]) for n in before)


def test_exact_count_mode_over_whole_target_set():
    model = make_mlp(0)
    for n in (0, 1, 13):
        faults = Injector(error=BitFlip(n=n), seed=9).sample(model)
        assert faults.n_faults == n
    with pytest.raises(ValueError, match="at most"):
        Injector(targets="4.bias", error=BitFlip(n=10**6), seed=0).sample(model)


class Net(nn.Module):
    def __init__(self, order: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = {"a": nn.Linear(20, 30), "b": nn.Linear(30, 10)}
        for k in order:
            self.add_module(k, layers[k])


def test_determinism_across_visit_order_and_target_spelling():
    m1, m2 = Net("ab"), Net("ba")
    f1 = Injector(error=BitFlip(0.01), seed=4).sample(m1)
    f2 = Injector(targets=["b.*", "a.weight", "a.bias"], error=BitFlip(0.01), seed=4).sample(m2)
    assert [t.name for t in f1.tensors] == [t.name for t in f2.tensors]
    for t1, t2 in zip(f1.tensors, f2.tensors):
        assert np.array_equal(t1.index, t2.index) and np.array_equal(t1.xor_mask, t2.xor_mask)
    # a different seed gives different faults
    other = Injector(error=BitFlip(0.01), seed=5).sample(m1)
    assert other.tensors[1].index.tolist() != f1.tensors[1].index.tolist()


def test_save_load_replay_round_trip(tmp_path):
    model = make_mlp(5)
    inj = Injector(error=BitFlip(0.01), seed=11)
    with inj.inject(model):
        faulty = words(model)
    path = tmp_path / "map.pt"
    inj.sample(model).save(path)
    loaded = FaultMap.load(path)
    assert loaded.n_faults == inj.sample(model).n_faults
    other = make_mlp(5)  # same weights, another instance
    with loaded.apply(other):
        replayed = words(other)
    assert all(torch.equal(faulty[n], replayed[n]) for n in faulty)
    assert state_checksum(other) == state_checksum(make_mlp(5))
    (tmp_path / "junk.pt").write_bytes(b"not a map")
    with pytest.raises(Exception):  # noqa: B017 - torch's own unpickling error
        FaultMap.load(tmp_path / "junk.pt")


def test_replay_on_mismatched_model_is_refused_before_any_write():
    model = make_mlp(0)
    faults = Injector(error=BitFlip(0.01), seed=0).sample(model)
    wrong = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 17))
    check = state_checksum(wrong)
    with pytest.raises(ValueError, match="does not (fit|have)"):
        faults.apply(wrong)
    assert state_checksum(wrong) == check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_faults_on_cuda_as_on_cpu():
    cpu = make_mlp(6)
    gpu = make_mlp(6).cuda()
    inj = Injector(error=BitFlip(0.01), seed=2)
    with inj.inject(cpu):
        a = words(cpu)
    with inj.inject(gpu):
        b = {n: t.cpu() for n, t in words(gpu).items()}
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert state_checksum(gpu) == state_checksum(make_mlp(6).cuda())


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(PLAIN_DTYPES),
    ber=st.sampled_from([1e-4, 1e-3, 1e-2, 0.1, 0.5]),
    seed=st.integers(0, 2**31),
    bits=st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True),
)
def test_property_restore_and_bits(dtype, ber, seed, bits):
    model = make_mlp(seed % 7, dtype)
    before = words(model)
    lay = layout_of(dtype)
    with Injector(error=BitFlip(ber, bits=bits), seed=seed).inject(model) as faults:
        mask = lay.mask(bits)
        for n, b in before.items():
            diff = (b ^ words(model)[n]).numpy()
            assert np.all(diff & ~np.array(mask, dtype=lay.np_int) == 0)
        assert faults.n_faults == faults.summary().totals["n_bits_changed"]
    assert all(torch.equal(before[n], words(model)[n]) for n in before)


def test_target_kinds(tmp_path):
    model = make_mlp(0)

    def names(t):
        return [x.name for x in Injector(targets=t, error=BitFlip(0.1)).sample(model).tensors]

    assert names("0.weight") == ["0.weight"]
    assert names("*.bias") == ["0.bias", "2.bias", "4.bias"]
    assert names(nn.Linear) == sorted(n for n, _ in model.named_parameters())
    target_file = tmp_path / "targets.txt"
    target_file.write_text("; PyTEI target file\n0.weight\n\n; comment\n2.bias\n")
    assert names(target_file) == ["0.bias", "0.weight"][1:] + ["2.bias"]
    bn = nn.BatchNorm1d(4)
    bufs = Injector(targets="running_mean", error=BitFlip(0.1), include_buffers=True).sample(bn)
    assert [t.name for t in bufs.tensors] == ["running_mean"]


def test_bad_input_is_refused_with_clear_errors():
    model = make_mlp(0)
    with pytest.raises(ValueError, match=r"`ber` to be a float in \[0, 1\].*1.5"):
        BitFlip(1.5)
    with pytest.raises(ValueError, match="`ber`"):
        BitFlip(-1e-3)
    with pytest.raises(ValueError, match="exactly one of"):
        BitFlip()
    with pytest.raises(ValueError, match="exactly one of"):
        BitFlip(0.1, n=3)
    with pytest.raises(ValueError, match="Unknown bit field 'exponant'"):
        Injector(error=BitFlip(0.1, bits="exponant")).sample(model)
    with pytest.raises(ValueError, match="Unknown bit field 'exponent' for dtype int8"):
        Injector(error=BitFlip(0.1, bits="exponent")).sample(make_mlp(0, torch.int8))
    with pytest.raises(ValueError, match=r"closest names: \['0.weight'"):
        Injector(targets="0.wieght", error=BitFlip(0.1)).sample(model)
    with pytest.raises(ValueError, match="matches no tensor"):
        Injector(targets="encoder.*", error=BitFlip(0.1)).sample(model)
    with pytest.raises(ValueError, match="no parameters"):
        Injector(error=BitFlip(0.1)).sample(nn.ReLU())
    with pytest.raises(TypeError, match="ErrorModel"):
        Injector(error=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`value` to be 0 or 1"):
        StuckAt(0.1, value=2)
    bad = nn.Linear(2, 2)
    bad.weight = nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64), requires_grad=False)
    with pytest.raises(TypeError, match="(?s)Unsupported dtype.*complex64"):
        Injector(error=BitFlip(0.1)).sample(bad)


def test_fault_core_does_not_import_ray_or_pyarrow():
    code = (
        "import sys, torch, pytei_ray; from pytei_ray.mitigations import SBP;"
        "m = torch.nn.Linear(4, 4);"
        "pytei_ray.Injector(error=pytei_ray.BitFlip(0.1)).inject(m).restore();"
        "bad = [k for k in ('ray', 'pyarrow', 'pandas') if k in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


@pytest.mark.parametrize(
    "error", [BitFlip(0.02), StuckAt(0.02, value=0), RandomValue(0.05)], ids=repr
)
def test_accelerator_write_path_matches_cpu_path(error):
    # The batched path used for CUDA tensors, exercised on CPU tensors: same faulty words.
    from pytei_ray.injection import resolve_targets
    from pytei_ray.injection.apply import _write_device

    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 5).half(), nn.Linear(5, 2).double())
    before = words(model)
    with Injector(error=error, seed=1).inject(model):
        expected = words(model)
    faults = Injector(error=error, seed=1).sample(model)
    sites = {s.name: s for s in resolve_targets(model)}
    writes = _write_device(
        torch.device("cpu"), [(sites[t.name], t) for t in faults.tensors if t.n_words]
    )
    assert all(torch.equal(expected[n], words(model)[n]) for n in expected)
    for w in reversed(writes):
        w.restore()
    assert all(torch.equal(before[n], words(model)[n]) for n in before)


def _reference_words(error, dtype, positions):
    """Masks per hit word, built one site at a time from the model's documented ``transform``."""
    lay = layout_of(dtype)
    k = error.sites_per_word(lay)
    per_word: dict[int, list[int]] = {}
    for p in positions.tolist():
        per_word.setdefault(p // k, []).append(p % k)
    words_, ands, xors = [], [], []
    rng = np.random.default_rng(0)  # bit models draw nothing
    for w, slots in sorted(per_word.items()):
        a, x = error.transform(lay, np.asarray(slots, dtype=np.int64), rng)
        words_.append(w)
        ands.append(np.bitwise_and.reduce(np.asarray(a, dtype=lay.np_int)))
        xors.append(np.bitwise_or.reduce(np.asarray(x, dtype=lay.np_int)))
    return np.array(words_), np.array(ands, dtype=lay.np_int), np.array(xors, dtype=lay.np_int)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.int8, torch.float64], ids=str
)
@pytest.mark.parametrize(
    "error",
    [
        BitFlip(0.3),
        StuckAt(0.3, value=0),
        StuckAt(0.3, value=1),
        BitFlip(0.4, bits=[0, 3, 5, 6]),  # four sites per word, not bits 0..3
        BitFlip(0.4, bits=[1, 2, 7]),  # three sites per word
        StuckAt(0.4, value=1, bits=["sign", 6]),
    ],
    ids=repr,
)
def test_fault_masks_match_the_documented_transform(dtype, error):
    # Built-in models compute masks on a fast path and fold several sites of one word together;
    # both must give what `transform`, applied one site at a time, says.
    from pytei_ray.faults.faultmap import SiteInfo, _words_faults
    from pytei_ray.faults.sampling import bernoulli_positions

    lay = layout_of(dtype)
    site = SiteInfo("w", dtype, (300,))
    n_sites = 300 * error.sites_per_word(lay)
    for seed in range(3):
        positions = bernoulli_positions(n_sites, error.rate, np.random.default_rng(seed))
        assert np.any(np.diff(positions // error.sites_per_word(lay)) == 0)  # words hit twice+
        expected = _reference_words(error, dtype, positions)
        tf = _words_faults(site, error, positions.copy(), np.random.default_rng(0))
        assert tf.n_sites == positions.size
        for got, want in zip((tf.index, tf.and_mask, tf.xor_mask), expected):
            np.testing.assert_array_equal(np.asarray(got), want)


def test_fault_map_is_freed_without_the_garbage_collector():
    # Map and handle hold no reference cycle: dropping them frees their arrays at once (a cycle
    # left them for the next collection and cost page faults on every following injection).
    import gc
    import weakref

    model = make_mlp(0)
    gc.disable()
    try:
        with Injector(error=BitFlip(0.2), seed=3).inject(model) as faults:
            pass
        summary = faults.summary()  # statistics of the application survive the `with` block
        assert summary.totals["n_bits_changed"] == faults.n_faults > 0
        assert faults.n_nonfinite is not None
        ref = weakref.ref(faults)
        del faults
        assert ref() is None
    finally:
        gc.enable()


def test_saved_map_of_constant_masks_loads_writable(tmp_path, recwarn):
    faults = Injector(error=BitFlip(0.05), seed=2).sample(make_mlp(1))
    faults.save(tmp_path / "m.pt")
    loaded = FaultMap.load(tmp_path / "m.pt")
    assert not [w for w in recwarn if "writable" in str(w.message)]
    for a, b in zip(faults.tensors, loaded.tensors):
        for got, want in ((b.index, a.index), (b.and_mask, a.and_mask), (b.xor_mask, a.xor_mask)):
            np.testing.assert_array_equal(got, want)
            assert got.flags.writeable


def test_a_buffer_named_as_target_says_include_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    for target in ("1.running_mean", "1.running_*"):
        with pytest.raises(ValueError, match="include_buffers=True"):
            Injector(targets=[target], error=BitFlip(n=1)).sample(model)
    faults = Injector(targets=["1.running_mean"], error=BitFlip(n=1),
                      include_buffers=True).sample(model)
    assert faults.n_faults == 1
    with pytest.raises(ValueError, match="no similar name|closest names"):
        Injector(targets=["nope"], error=BitFlip(n=1)).sample(model)


def test_faults_package_does_not_know_injection():
    # a FaultMap is a pure description: faults/ imports nothing of injection/, not even for
    # type checking; the statistics of an application live on its handle
    import re

    root = Path(__file__).resolve().parents[1] / "pytei_ray" / "faults"
    pattern = re.compile(r"^\s*(from|import)\s+(\.\.injection|pytei_ray\.injection)")
    offenders = [f"{p.name}:{i}" for p in root.glob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders
    from pytei_ray.faults.faultmap import FaultMap as Map

    assert "_applied" not in Map.__dataclass_fields__


def test_applied_faults_view_and_the_pure_map():
    model = make_mlp(0)
    handle = Injector(error=BitFlip(0.2), seed=3).inject(model)
    with handle as faults:
        pass
    assert faults.map is handle.faults and faults.n_faults == handle.faults.n_faults
    assert faults.n_nonfinite == handle.n_nonfinite
    assert handle.summary().totals == faults.summary().totals
    plain = handle.faults.summary()  # the map alone: a description, no application stats
    assert "n_bits_changed" not in plain.totals and "n_faults" in plain.totals
    assert not hasattr(handle.faults, "n_nonfinite")


@pytest.mark.parametrize("seed", [-1, True, 1.5, "3"])
def test_every_seed_argument_is_checked_alike(seed):
    """Injectors, activation injection and training faults share one seed check."""
    from pytei_ray.injection.activations import ActivationInjector
    from pytei_ray.training import AtStep, TrainingFaults, Weights

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="`seed` to be a non-negative int, but got"):
        Injector(error=BitFlip(1e-3), seed=seed)
    with pytest.raises(ValueError, match="`seed` to be a non-negative int, but got"):
        ActivationInjector(None, BitFlip(1e-3), seed=seed)
    with pytest.raises(ValueError, match="`seed` to be a non-negative int, but got"):
        TrainingFaults(model, site=Weights(None), error=BitFlip(1e-3), when=AtStep(1),
                       seed=seed)
