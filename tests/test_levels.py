"""Factor levels with attributes (`Level`): extra typed columns in every row, pinned ids."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytei_ray import Level
from pytei_ray.campaign import spec_hash
from pytei_ray.campaign.trials import expand

ROOT = Path(__file__).resolve().parents[1]
# jobs/tiny.py as of issue 13 (before `Level` existed): its spec hash and first trial ids
PINNED_HASH = "63b72227a8f54be641cf68e3175f69b5f0e4566f8f81e2f32c3f85f8cef371b7"
PINNED_IDS = ["25bd34f7afe1ea6f", "469e605c6771d4cb", "cdb348cddc32b7e4"]


def test_existing_campaign_spec_and_ids_are_pinned():
    """Stored results of campaigns without attributes must keep their spec hash and ids."""
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import tiny
    finally:
        sys.path.remove(str(ROOT / "jobs"))
    c = tiny.make_campaign()
    assert spec_hash(c.spec()) == PINNED_HASH
    ids = [t.trial_id for t in expand(c)]
    assert len(ids) == 120
    assert ids[:3] == PINNED_IDS
    assert "factors" not in c.spec()


LEVEL_JOB = '''
import torch
from torch import nn
from pytei_ray import BitFlip, Campaign, Level, bit_levels

def build(dtype):
    def make():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)
    return make

def data(name):
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0))

def evaluate(model, x):
    out = model(x.to(model[0].weight.dtype)).float()
    ok = torch.isfinite(out).all(dim=1)
    return {"acc": float(((out.argmax(1) == 0) | ~ok).float().mean() * 0 + ok.float().mean())}

campaign = Campaign(
    name="levels",
    models={"f32": Level(build(torch.float32), format="fp32", bits=32),
            "bf16": Level(build(torch.bfloat16), format="bf16", bits=16)},
    data=data, evaluate=evaluate, bers=[1e-3], repetitions=3,
    error_models={"bitflip": BitFlip,
                  **bit_levels([0, 30], prefix="fp32-bit", format="fp32"),
                  **bit_levels([0, 14], prefix="bf16-bit", format="bf16")},
    mitigations={"none": None}, seed=1)
'''


def test_level_columns_reach_every_part_the_manifest_and_the_report(tmp_path):
    import pyarrow.parquet as pq

    from pytei_ray.driver import run
    from pytei_ray.report import load_dataset, write_report

    job = tmp_path / "levels.py"
    job.write_text(LEVEL_JOB)
    out = tmp_path / "out"
    summary = run(str(job), str(out), executor="local", progress=False, echo=lambda s: None,
                  rows_per_part=5)
    del summary
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) > 1
    for p in parts:  # typed columns in every part
        schema = pq.read_schema(p)
        assert str(schema.field("bit").type) == "int64"
        assert str(schema.field("bits").type) == "int64"
        assert str(schema.field("format").type) == "string"
    ds = load_dataset(out)
    df = ds.frame
    # paired by format: 2 models x (bitflip + 2 bits of their own format) x 3 reps
    assert len(df) == 2 * 3 * 3
    assert set(zip(df["model"], df["format"])) == {("f32", "fp32"), ("bf16", "bf16")}
    assert set(df.loc[df["error_model"] == "bitflip", "bit"].isna()) == {True}
    assert set(df["bit"].dropna()) == {0, 30, 14}
    assert "acc" in ds.manifest["metrics"] and "bit" not in ds.manifest["metrics"]
    assert set(ds.manifest["spec"]["factors"]) == {"format", "bits", "bit"}
    rep = write_report(out, tmp_path / "report")
    names = [p.name for p in rep.figures] if hasattr(rep, "figures") else \
        [p.name for p in (tmp_path / "report").glob("*.png")]
    assert any("by_bit" in n for n in names), names


def test_a_changed_attribute_is_a_new_trial():
    import torch

    from pytei_ray import Campaign, Level

    def make(fmt):
        return Campaign(name="x", models={"m": Level(lambda: torch.nn.Linear(2, 2), format=fmt)},
                        data=lambda n: None, evaluate=lambda m, d: {}, bers=[0.1],
                        repetitions=1)

    a, b = make("fp32"), make("bf16")
    assert [t.trial_id for t in expand(a)] != [t.trial_id for t in expand(b)]
    from pytei_ray.campaign import compare_specs

    diff = compare_specs(a.spec(), b.spec())
    assert not diff.extendable and any("format" in c for c in diff.changes)


@pytest.mark.parametrize("kwargs, match", [
    ({"models": {"m": Level(len, trial_id="x")}}, "new column names"),
    ({"models": {"m": Level(len, golden_acc=1)}}, "new column names"),
    ({"models": {"m": Level(len, fmt=[1])}}, "int, float or str"),
    ({"models": {"m": Level(len, fmt=True)}}, "int, float or str"),
    ({"models": {"m": Level(len, fmt=float("nan"))}}, "finite"),
    ({"models": {"m": Level(len, fmt="a"), "n": Level(len, fnt="b")}}, "same attributes"),
    ({"models": {"m": Level(len, fmt="a"), "n": Level(len, fmt=1)}}, "one type"),
    ({"mitigations": {"none": Level(None, fmt="a")}, "models": {"m": Level(len, fmt="a")}},
     "mitigations cannot be paired"),
])
def test_bad_attributes_are_spec_errors(kwargs, match):
    from pytei_ray import Campaign
    from pytei_ray.errors import CampaignSpecError

    base = dict(name="x", models={"m": len}, data=len, evaluate=len, bers=[0.1], repetitions=1)
    with pytest.raises(CampaignSpecError, match=match):
        Campaign(**{**base, **kwargs})
