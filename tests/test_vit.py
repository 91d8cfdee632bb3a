"""The ViT study on its tiny setting (seconds): training, formats, bits, the job end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

from pytei_ray import Campaign, Level, bit_levels  # noqa: E402
from pytei_ray.campaign import expand  # noqa: E402
from pytei_ray.errors import TrialSetupError  # noqa: E402
from pytei_ray.execution.context import BuildContext  # noqa: E402
from pytei_ray.execution.worker import TrialWorker  # noqa: E402
from pytei_ray.studies.vit import BIT_TARGETS, FORMATS, ViTStudy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ViTStudy.preset("tiny")
CTX = BuildContext()  # no location: the checkpoint is cached in this process (trained once)
#: Golden accuracy of a format may differ from fp32's by at most this (3 of 360 test images).
FORMAT_TOLERANCE = 3 / 360


def _golden(fmt: str) -> float:
    model = STUDY.trained(fmt, ctx=CTX)
    return STUDY.evaluate(model, STUDY.eval_data(fmt))["accuracy"]


def test_trained_vit_beats_chance_by_far():
    assert _golden("fp32") >= 0.8  # chance is 0.1 (10 classes); the full setting reaches 0.97


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "fp32"])
def test_format_variants_have_golden_accuracy_close_to_fp32(fmt):
    assert abs(_golden(fmt) - _golden("fp32")) <= FORMAT_TOLERANCE + 1e-9


def _bit_campaign(fmt: str, bits: list[int], reps: int) -> Campaign:
    return Campaign(
        name="bits", models={fmt: Level(STUDY.model(fmt), format=fmt)},
        data=STUDY.eval_data, evaluate=STUDY.evaluate, bers=[1e-6], repetitions=reps,
        targets={"linear": BIT_TARGETS},
        error_models=bit_levels(bits, prefix=f"{fmt}-bit", format=fmt), seed=7)


def _rows(campaign: Campaign):
    return TrialWorker(campaign, device="cpu", context=CTX).run_chunk(expand(campaign)).rows


@pytest.mark.parametrize("fmt, high, low", [("fp32", 30, 0), ("bf16", 14, 0)])
def test_high_exponent_bit_breaks_far_more_trials_than_low_mantissa_bit(fmt, high, low):
    rows = _rows(_bit_campaign(fmt, [high, low], reps=12))
    assert all(r["status"] == "ok" for r in rows)
    broken = {b: sum(r["golden_accuracy"] - r["accuracy"] > 0.05 for r in rows if r["bit"] == b)
              for b in (high, low)}
    assert broken[high] >= 8 and broken[low] == 0, broken


def test_int8_single_flips_give_no_nonfinite_output():
    rows = _rows(_bit_campaign("int8", list(range(8)), reps=3))
    assert len(rows) == 24 and all(r["status"] == "ok" for r in rows)
    assert all(r["nonfinite"] == 0.0 and r["crashed"] == 0.0 for r in rows)
    assert {r["bit"] for r in rows} == set(range(8)) and {r["format"] for r in rows} == {"int8"}


def test_a_bit_outside_the_word_is_refused_before_any_trial():
    bad = Campaign(
        name="bad", models={"bf16": STUDY.model("bf16")}, data=STUDY.eval_data,
        evaluate=STUDY.evaluate, bers=[1e-6], repetitions=1, targets={"linear": BIT_TARGETS},
        error_models=bit_levels([20]))
    with pytest.raises(TrialSetupError, match=r"(?s)Bit index out of range.*\[0, 16\)"):
        TrialWorker(bad, device="cpu", context=CTX).prepare(["bf16"])


def _job():
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import vit
    finally:
        sys.path.remove(str(ROOT / "jobs"))
    return vit


@pytest.mark.parametrize("params, match", [
    ({"formats": "fp32,fp64"}, "number format"),
    ({"dataset": "mnist"}, "dataset"),
])
def test_bad_job_parameters_fail_in_make_campaign(params, match):
    with pytest.raises(ValueError, match=match):
        _job().make_campaign(tiny=True, **params)


def test_job_runs_end_to_end_and_the_report_draws_the_by_bit_plot(tmp_path):
    from pytei_ray.driver import run
    from pytei_ray.report import write_report

    job = str(ROOT / "jobs" / "vit.py")
    quiet = dict(executor="local", progress=False, echo=lambda s: None)
    out = tmp_path / "vit-tiny"
    run(job, str(out), params={"tiny": True}, **quiet)
    bits = tmp_path / "vit-bits-tiny"
    run(job, str(bits), params={"tiny": True, "bits": True}, **quiet)
    # the second campaign trained nothing: it has its own directory, so it trained again;
    # each directory keeps its checkpoint
    assert list((out / "_artifacts").glob("vit-*.pt")) and list((bits / "_artifacts").glob("*.pt"))
    rep = write_report(bits, tmp_path / "report")
    pngs = [p.name for p in (tmp_path / "report").glob("*.png")]
    assert any("by_bit" in n for n in pngs), pngs
    from pytei_ray.report import load_dataset

    df = load_dataset(bits).frame
    assert (df["status"] == "ok").all()
    assert set(df["format"]) == set(FORMATS)
    assert df.groupby("format")["bit"].max().to_dict() == {"fp32": 30, "bf16": 15, "fp16": 15,
                                                           "int8": 6}
    main = load_dataset(out).frame
    assert (main["status"] == "ok").all() and set(main["format"]) == set(FORMATS)
    assert "bit" not in main
    del rep


def test_golden_int8_model_keeps_its_float_layer_norms():
    model = STUDY.trained("int8", ctx=CTX)
    assert model.norm.weight.dtype == torch.float32
    assert model.head.weight().is_quantized
