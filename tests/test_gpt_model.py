"""GPT study: the standard-library corpus (selection, split, fingerprint, batch order) and the
model (shapes, causality, the observable attention logit, bf16 products)."""

from __future__ import annotations

import math

import pytest
import torch

from pytei_ray.studies.gpt import (
    CONFIGS,
    STDLIB_MODULES,
    VOCAB,
    CorpusSpec,
    GPTConfig,
    build_gpt,
    load_corpus,
)
from pytei_ray.studies.gpt.corpus import SEPARATOR, _load
from pytei_ray.studies.gpt.model import matmul

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = CONFIGS["tiny"]


def _write(folder, texts: dict[str, bytes]) -> CorpusSpec:
    for name, text in texts.items():
        (folder / f"{name}.py").write_bytes(text)
    return CorpusSpec(modules=tuple(texts), val_fraction=0.25, root=str(folder))


# ---- corpus --------------------------------------------------------------------------------
def test_stdlib_corpus_is_read_twice_to_the_same_bytes_and_split_by_whole_files():
    first = load_corpus()
    _load.cache_clear()
    again = load_corpus()
    assert again is not first and again.fingerprint == first.fingerprint
    assert torch.equal(again.train, first.train) and torch.equal(again.validation,
                                                                 first.validation)
    assert set(first.train_files).isdisjoint(first.val_files)
    assert set(first.train_files) | set(first.val_files) | set(first.missing) == set(
        STDLIB_MODULES)
    n = len(first.train) + len(first.validation)
    assert 0.1 <= len(first.validation) / n <= 0.2  # val_fraction 0.1, whole files
    assert first.train.dtype == torch.uint8 and len(first.train) > 2_000_000
    assert list(first.train_files) == sorted(first.train_files)
    assert first.unigram_loss() < first.uniform_loss() == pytest.approx(math.log(256))


def test_the_split_is_a_function_of_the_names_and_seed_and_the_fingerprint_of_the_bytes(
        tmp_path):
    texts = {f"m{i}": f"def f{i}():\n    return {i}\n".encode() * (i + 1) for i in range(8)}
    spec = _write(tmp_path, texts)
    a = load_corpus(spec)
    assert a.val_files and a.train_files and a.missing == ()
    # the files' text is joined with the separator, in sorted order
    assert bytes(a.train.tolist()) == SEPARATOR.join(texts[n] for n in a.train_files)
    other_seed = load_corpus(CorpusSpec(spec.modules, 0.25, split_seed=1, root=spec.root))
    assert other_seed.fingerprint != a.fingerprint
    # one changed byte in one file (another Python's version of it) changes the fingerprint
    (tmp_path / "m3.py").write_bytes(texts["m3"].replace(b"3", b"4", 1))
    _load.cache_clear()
    changed = load_corpus(spec)
    assert changed.fingerprint != a.fingerprint
    assert (changed.train_files, changed.val_files) == (a.train_files, a.val_files)


def test_a_missing_module_is_listed_and_no_files_at_all_is_an_error(tmp_path):
    spec = _write(tmp_path, {"a": b"x = 1\n" * 50, "b": b"y = 2\n" * 50, "c": b"z = 3\n" * 9})
    with_missing = CorpusSpec(spec.modules + ("gone",), 0.25, root=spec.root)
    corpus = load_corpus(with_missing)
    assert corpus.missing == ("gone",)
    assert corpus.fingerprint == load_corpus(spec).fingerprint  # of the bytes that were read
    with pytest.raises(FileNotFoundError, match=r"found 0 of 2.*pass `root`"):
        load_corpus(CorpusSpec(("nope", "none"), root=str(tmp_path)))
    with pytest.raises(ValueError, match="val_fraction"):
        CorpusSpec(val_fraction=1.0)


def test_batches_are_a_function_of_seed_and_step_alone():
    corpus = load_corpus()
    x7, y7 = corpus.batch(0, 7, 4, 16)
    for step in (3, 9, 7, 1):  # any order of other calls in between
        corpus.batch(0, step, 4, 16)
    again_x, again_y = corpus.batch(0, 7, 4, 16)
    assert torch.equal(x7, again_x) and torch.equal(y7, again_y)
    assert torch.equal(x7[:, 1:], y7[:, :-1])  # targets are the next bytes
    assert x7.shape == (4, 16) and x7.dtype == torch.int64
    assert not torch.equal(corpus.batch(0, 8, 4, 16)[0], x7)
    assert not torch.equal(corpus.batch(1, 7, 4, 16)[0], x7)
    ex, ey = corpus.eval_windows(5, 16)
    assert torch.equal(ex, corpus.eval_windows(5, 16)[0]) and ey.shape == (5, 16)


def test_a_window_longer_than_a_split_is_refused(tmp_path):
    corpus = load_corpus(_write(tmp_path, {"a": b"x = 1\n" * 40, "b": b"y\n"}))
    with pytest.raises(ValueError, match=r"validation split has \d+ bytes.*lower the context"):
        corpus.eval_windows(2, 300)
    with pytest.raises(ValueError, match=r"train split has \d+ bytes.*lower the context"):
        corpus.batch(0, 0, 2, 300)


# ---- model ---------------------------------------------------------------------------------
def test_initialisation_is_a_function_of_the_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_gpt(TINY, seed=3), build_gpt(TINY, seed=3)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    c = build_gpt(TINY, seed=4)
    assert not torch.equal(a.head.weight, c.head.weight)
    assert 300_000 <= sum(p.numel() for p in build_gpt(CONFIGS["full"]).parameters()) <= 2e6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_future_byte_does_not_change_earlier_logits(dtype):
    model = build_gpt(TINY, seed=0).to(dtype).eval()
    x = torch.randint(0, VOCAB, (2, TINY.context), generator=torch.Generator().manual_seed(0))
    j = 20
    changed = x.clone()
    changed[:, j] = (changed[:, j] + 1) % VOCAB
    with torch.no_grad():
        out, out2 = model(x), model(changed)
    assert out.shape == (2, TINY.context, VOCAB) and out.dtype == dtype
    assert torch.equal(out[:, :j], out2[:, :j])
    assert not torch.equal(out[:, j:], out2[:, j:])


def test_largest_attention_logit_is_recorded_and_reachable_through_a_hook():
    model = build_gpt(TINY, seed=0)
    seen = []
    handles = [b.attn.scores.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
               for b in model.blocks]
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    assert model.max_attention_logit is None
    model(x)
    for h in handles:
        h.remove()
    mask = torch.ones(16, 16, dtype=torch.bool).tril()
    expected = max(float(s[..., mask].max()) for s in seen)  # causal positions only
    assert float(model.max_attention_logit) == expected
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight[0, 0] = float("nan")
    model(x)
    assert math.isnan(float(model.max_attention_logit))


def test_bf16_products_accumulate_in_fp32_and_round_once():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 64, generator=g).bfloat16()
    b = torch.randn(64, 8, generator=g).bfloat16()
    assert torch.equal(matmul(a, b), (a.float() @ b.float()).bfloat16())
    model = build_gpt(TINY).to(torch.bfloat16)
    out = model(torch.zeros(1, 4, dtype=torch.long))
    assert out.dtype == torch.bfloat16 and isinstance(model.head, torch.nn.Linear)


def test_bad_sizes_and_a_too_long_sequence_are_refused():
    with pytest.raises(ValueError, match="`heads` to divide `dim`"):
        GPTConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="`depth` to be a positive integer"):
        GPTConfig(depth=0)
    with pytest.raises(ValueError, match=r"at most 32 tokens"):
        build_gpt(TINY)(torch.zeros(1, 33, dtype=torch.long))
