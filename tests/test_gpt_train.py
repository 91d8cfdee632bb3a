"""GPT study: pretraining, the checkpoint in the artifact cache, bit-for-bit continuation in fp32
and bf16, the step hooks a fault injector uses, and per-step telemetry."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from pytei_ray.execution.context import BuildContext
from pytei_ray.studies.gpt import (
    SETTINGS,
    TELEMETRY,
    GPTStudy,
    StepAction,
    TrainingHooks,
    build_gpt,
    continue_training,
    load_corpus,
    make_optimizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STUDY = GPTStudy.preset("tiny")
CTX = BuildContext()  # no location: pretrained once in this process, then loaded
WINDOW = 6


def _same(a: list[float], b: list[float]) -> bool:
    """Bit-for-bit equality of two float lists (NaN equals NaN)."""
    return [float(x).hex() for x in a] == [float(x).hex() for x in b]


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_pretraining_beats_the_uniform_guess_and_is_stored_with_its_history():
    ckpt = STUDY.checkpoint(CTX)
    meta = ckpt["meta"]
    assert ckpt["step"] == SETTINGS["tiny"].steps == len(meta["train_losses"])
    losses = meta["train_losses"]
    assert losses[0] > math.log(256) - 0.1  # starts at chance
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5
    assert meta["val_loss"] < math.log(256) - 1.5
    assert meta["corpus_fingerprint"] == load_corpus().fingerprint
    assert STUDY.evaluate(STUDY.trained("fp32", CTX), STUDY.eval_data("gpt"))["val_loss"] == \
        meta["val_loss"]  # the stored model is the one that was scored


@pytest.mark.parametrize("fmt", ["fp32", "bf16"])
def test_continuation_from_the_checkpoint_is_reproducible_bit_for_bit(fmt):
    data = STUDY.eval_data(fmt)
    state = STUDY.replica(fmt, CTX)
    dtype = torch.float32 if fmt == "fp32" else torch.bfloat16
    assert all(p.dtype == dtype for p in state.model.parameters())
    assert all(v.dtype == dtype for s in state.optimizer.state.values()
               for k, v in s.items() if k != "step")
    first = STUDY.continue_training(state, data, WINDOW)
    after_first = _params(state.model)
    state.reset()
    second = STUDY.continue_training(state, data, WINDOW)
    fresh = STUDY.continue_training(STUDY.replica(fmt, CTX), data, WINDOW)
    for other in (second, fresh):
        assert _same(first.losses, other.losses)
        for col in ("grad_norm", "update_norm", "max_attn_logit"):
            assert _same(first.telemetry[col], other.telemetry[col]), col
        assert _same([first.val_loss], [other.val_loss])
    assert all(torch.equal(a, b) for a, b in zip(after_first, _params(state.model)))
    assert first.telemetry["step"] == list(range(state.step, state.step + WINDOW))
    assert not _same(first.losses[:1], first.losses[1:2])  # the steps see different batches


def test_the_callers_thread_count_does_not_change_a_trajectory():
    data = STUDY.eval_data("bf16")
    one = STUDY.continue_training(STUDY.replica("bf16", CTX), data, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = STUDY.continue_training(STUDY.replica("bf16", CTX), data, 3)
    finally:
        torch.set_num_threads(threads)
    assert _same(one.losses, two.losses) and _same([one.val_loss], [two.val_loss])


def test_reset_restores_weights_and_moments_in_place_without_aliasing_the_checkpoint():
    state = STUDY.replica("fp32", CTX)
    weight = state.model.head.weight
    before = _params(state.model)
    moments = {k: v.clone() for k, v in state.optimizer.state[weight].items()}
    STUDY.continue_training(state, STUDY.eval_data("gpt"), 2)
    assert not torch.equal(weight, before[-1])
    state.reset()
    assert state.model.head.weight is weight  # identity kept: optimizer/injector references
    assert all(torch.equal(a, b) for a, b in zip(before, _params(state.model)))
    restored = state.optimizer.state[weight]
    assert all(torch.equal(restored[k], v) for k, v in moments.items())


def test_the_checkpoint_round_trips_through_the_artifact_cache(tmp_path):
    produced = BuildContext(tmp_path)
    a = STUDY.checkpoint(produced)
    assert produced.produced == [STUDY.checkpoint_name()]
    loaded = BuildContext(tmp_path)
    b = STUDY.checkpoint(loaded)
    assert loaded.loaded == [STUDY.checkpoint_name()] and loaded.produced == []
    assert a["step"] == b["step"] and a["meta"] == b["meta"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(x, y) for s, t in zip(a["optimizer"]["state"].values(),
                                                 b["optimizer"]["state"].values())
               for x, y in zip(s.values(), t.values()))
    # a torn stored copy is pretrained and stored again, to the same weights
    path = Path(produced.artifact_location(STUDY.checkpoint_name()))
    path.write_bytes(path.read_bytes()[:100])
    torn = BuildContext(tmp_path)
    c = STUDY.checkpoint(torn)
    assert torn.produced == [STUDY.checkpoint_name()]
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


class _Recorder(TrainingHooks):
    """Records what each point of a step sees; optionally skips or retries one step."""

    def __init__(self, skip: int | None = None, retry: int | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.skip, self.retry = skip, retry
        self.grads_seen = True
        self.snapshot: tuple = ()

    def before_forward(self, state):
        self.calls.append(("before_forward", state.step, state.attempt))
        if state.step == self.retry and state.attempt == 0:  # a rollback detector's snapshot
            # state_dict() references the live moments: a snapshot must copy them
            self.snapshot = (_params(state.model), copy.deepcopy(state.optimizer.state_dict()))

    def after_backward(self, state):
        self.calls.append(("after_backward", state.step, state.attempt))
        self.grads_seen &= all(p.grad is not None for p in state.model.parameters())
        return StepAction.SKIP if state.step == self.skip else None

    def after_step(self, state):
        self.calls.append(("after_step", state.step, state.attempt))
        if state.step == self.retry and state.attempt == 0:
            with torch.no_grad():
                for p, saved in zip(state.model.parameters(), self.snapshot[0]):
                    p.copy_(saved)
            state.optimizer.load_state_dict(copy.deepcopy(self.snapshot[1]))
            return StepAction.RETRY
        return None


def test_hooks_run_at_the_three_points_of_every_step_in_order():
    state = STUDY.replica("fp32", CTX)
    rec = _Recorder()
    run = STUDY.continue_training(state, STUDY.eval_data("gpt"), 3, hooks=[rec])
    s = state.step
    assert rec.calls == [(p, s + i, 0) for i in range(3)
                         for p in ("before_forward", "after_backward", "after_step")]
    assert rec.grads_seen and run.telemetry["attempts"] == [1, 1, 1]


def test_a_skipped_update_leaves_the_weights_and_a_retried_step_is_recomputed():
    data = STUDY.eval_data("gpt")
    golden = STUDY.continue_training(STUDY.replica("fp32", CTX), data, 3)
    state = STUDY.replica("fp32", CTX)
    s = state.step
    skip = _Recorder(skip=s + 1)
    before = {}

    class Watch(TrainingHooks):
        def after_backward(self, st):
            if st.step == s + 1:
                before["w"] = _params(st.model)

    run = STUDY.continue_training(state, data, 3, hooks=[skip, Watch()])
    assert run.telemetry["skipped"] == [False, True, False]
    assert run.telemetry["update_norm"][1] == 0.0 and golden.telemetry["update_norm"][1] > 0
    assert _same(run.losses[:2], golden.losses[:2]) and not _same(run.losses, golden.losses)
    # retry with a restored snapshot: the recomputed step is the golden one
    retry = _Recorder(retry=s + 1)
    again = STUDY.continue_training(STUDY.replica("fp32", CTX), data, 3, hooks=[retry])
    assert again.telemetry["attempts"] == [1, 2, 1]
    assert ("before_forward", s + 1, 1) in retry.calls
    assert _same(again.losses, golden.losses) and _same([again.val_loss], [golden.val_loss])


@pytest.mark.parametrize("point, action", [
    ("after_backward", StepAction.RETRY), ("after_step", StepAction.SKIP),
    ("before_forward", StepAction.SKIP), ("after_step", "retry")])
def test_an_action_a_point_cannot_honour_is_refused(point, action):
    hook = type("Asks", (TrainingHooks,), {point: lambda self, st: action})()
    with pytest.raises(ValueError, match=rf"Asks\.{point} to return .*None, but got"):
        STUDY.continue_training(STUDY.replica("fp32", CTX), STUDY.eval_data("gpt"), 1, [hook])


def test_a_nan_weight_shows_in_the_telemetry():
    class Poison(TrainingHooks):
        def before_forward(self, st):
            if st.attempt == 0 and st.step == st_step + 1:
                with torch.no_grad():
                    st.model.blocks[0].attn.qkv.weight[0, 0] = float("nan")

    state = STUDY.replica("fp32", CTX)
    st_step = state.step
    run = STUDY.continue_training(state, STUDY.eval_data("gpt"), 3, hooks=[Poison()])
    t = run.telemetry
    assert list(t) == list(TELEMETRY)
    assert t["nonfinite_grads"][0] == 0 and t["nonfinite_params"][0] == 0
    assert math.isfinite(t["loss"][0]) and math.isnan(t["loss"][1])
    assert t["nonfinite_grads"][1] > 0 and t["nonfinite_params"][1] > 1
    assert math.isnan(t["max_attn_logit"][1]) and math.isnan(run.val_loss)
    assert math.isnan(run.perplexity)
    assert [r["step"] for r in run.rows()] == t["step"]


def test_training_reduces_the_loss_from_a_fresh_model():
    s = SETTINGS["tiny"]
    model = build_gpt(s.model, seed=1)
    corpus = load_corpus()
    start = continue_training(model, make_optimizer(model, s), corpus, s, 0, 0).val_loss
    run = continue_training(model, make_optimizer(model, s), corpus, s, 0, 25, seed=1)
    assert start > math.log(256) - 0.1 and run.val_loss < start - 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"start_step": -1}, "`start_step` to be an integer >= 0"),
    ({"n_steps": 2.5}, "`n_steps` to be an integer >= 0"),
    ({"max_attempts": 0}, "`max_attempts` to be an integer >= 1"),
])
def test_a_bad_window_is_refused_before_any_step(kwargs, match):
    s = SETTINGS["tiny"]
    model = build_gpt(s.model)
    before = _params(model)
    args = {"start_step": 0, "n_steps": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        continue_training(model, make_optimizer(model, s), load_corpus(), s, **args)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))


def test_unknown_formats_and_presets_are_refused():
    with pytest.raises(ValueError, match=r"training format in \['fp32', 'bf16'\].*'fp16'"):
        STUDY.model("fp16")
    with pytest.raises(ValueError, match="`setting` to be one of"):
        GPTStudy.preset("huge")


def test_an_inference_weight_campaign_runs_on_the_pretrained_gpt_in_both_formats():
    from pytei_ray import BitFlip, Campaign
    from pytei_ray.campaign import expand
    from pytei_ray.execution.worker import TrialWorker
    from pytei_ray.studies.gpt import TARGET_SETS

    campaign = Campaign(
        name="gpt-weights", models={f"gpt-{f}": STUDY.model(f) for f in ("fp32", "bf16")},
        data=STUDY.eval_data, evaluate=STUDY.evaluate, bers=[1e-3], repetitions=2,
        targets={"attention": TARGET_SETS["attention"]}, error_models={"bitflip": BitFlip},
        seed=5)
    rows = TrialWorker(campaign, device="cpu", context=CTX).run_chunk(expand(campaign)).rows
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    golden = STUDY.checkpoint(CTX)["meta"]["val_loss"]
    fp32 = [r for r in rows if r["model"] == "gpt-fp32"]
    assert all(r["golden_val_loss"] == golden and r["n_faults"] > 0 for r in fp32)
    assert all(r["val_loss"] != r["golden_val_loss"] for r in rows if r["evaluated"])
