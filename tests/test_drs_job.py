"""jobs/drs.py end to end through the launcher (small setting), and the DRS study hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pytei_ray.campaign import load_job
from pytei_ray.execution.context import BuildContext
from pytei_ray.launch import main
from pytei_ray.mitigations import Ranger
from pytei_ray.studies.drs import MODELS, ClickData, DRSStudy, synthetic_criteo

ROOT = Path(__file__).resolve().parents[1]
JOB = str(ROOT / "jobs" / "drs.py")


def launch(*args) -> int:
    return main([JOB, *map(str, args), "--executor", "local", "--no-progress"])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drs") / "out"
    assert launch("--set", "small=1", "--repetitions", "1", "--out", out) == 0
    return out


def test_small_campaign_runs_end_to_end(small_run: Path) -> None:
    df = pd.read_parquet(small_run)
    assert len(df) == 6 * 6 * 1 * 4 * 4 and (df["status"] == "ok").all()
    assert set(df["model"]) == set(MODELS)
    assert set(df["target"]) == {"embedding", "dense", "predictor", "all"}
    assert set(df["mitigation"]) == {"none", "sbp", "clip", "ranger"}
    assert {"auc", "logloss", "golden_auc", "golden_logloss"} <= set(df.columns)
    manifest = json.loads((small_run / "_manifest.json").read_text())
    assert manifest["campaign"] == "drs-small" and manifest["spec"]["params"] == {"small": 1}


def test_every_trained_model_beats_065_auc(small_run: Path) -> None:
    golden = pd.read_parquet(small_run / "_golden")
    auc = golden[golden["mitigation"] == "none"].set_index("model")["auc"]
    assert set(auc.index) == set(MODELS) and (auc > 0.65).all(), auc
    ranger = golden[golden["mitigation"] == "ranger"].set_index("model")["auc"]
    assert (ranger - auc).abs().max() < 1e-3  # bounds from validation barely touch clean test


def test_checkpoints_are_cached_and_reused(small_run: Path, capsys) -> None:
    ckpts = sorted((small_run / "_artifacts").glob("*.pt"))
    assert sorted(p.name.split("-")[0] for p in ckpts) == sorted(MODELS)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ckpts}
    capsys.readouterr()
    assert launch("--set", "small=1", "--repetitions", "2", "--extend", "--out", small_run) == 0
    text = capsys.readouterr().out
    assert "Prepared 6 model(s)" in text and len(pd.read_parquet(small_run)) == 2 * 576
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes())
             for p in (small_run / "_artifacts").glob("*.pt")}
    assert after == stamps  # loaded, not trained again
    assert launch("--set", "small=1", "--repetitions", "2", "--out", small_run) == 0
    assert "complete, all 1152 trials" in capsys.readouterr().out


def test_dry_run_of_the_full_job(tmp_path: Path, capsys) -> None:
    assert launch("--dry-run", "--out", tmp_path / "full") == 0
    text = capsys.readouterr().out
    assert "7680 trials = 6 model x 4 target x 1 error_model x 8 ber x 10 repetition x " \
           "4 mitigation" in text


def test_real_data_needs_an_existing_file(tmp_path: Path, capsys) -> None:
    assert launch("--set", "dataset=criteo", "--set", f"data={tmp_path / 'nope.txt'}",
                  "--dry-run") == 2
    err = capsys.readouterr().err
    assert "make_campaign(dataset='criteo'" in err and "Nothing is downloaded" in err
    assert launch("--set", "dataset=imagenet", "--dry-run") == 2
    assert "Expected `dataset` to be one of" in capsys.readouterr().err


def write_criteo(path: Path, n: int) -> Path:
    log = synthetic_criteo(n, seed=3)
    raw = torch.expm1(log.dense).round().long()
    lines = []
    for i in range(n):
        ints = [str(int(v)) for v in raw[i]]
        cats = ["" if int(c) == 0 else f"{int(c) * 2654435761 % 2**32:08x}" for c in log.sparse[i]]
        lines.append("\t".join([str(int(log.labels[i])), *ints, *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_criteo_file_through_the_job(tmp_path: Path) -> None:
    path = write_criteo(tmp_path / "train.txt", 3000)
    job = load_job(JOB, {"dataset": "criteo", "data": str(path), "rows": 2000, "small": 1})
    campaign = job.campaign()
    assert campaign.name == "drs-small-criteo"
    data = campaign.data("fm")
    assert len(data.validation) == 200 and len(data.test) == 200  # the file's first 2000 rows
    model = campaign.models["fm"](ctx=BuildContext(tmp_path / "res"))
    metrics = campaign.evaluate(model, data)
    assert set(metrics) == {"auc", "logloss"} and 0.0 <= metrics["auc"] <= 1.0
    assert len(list((tmp_path / "res" / "_artifacts").glob("fm-*.pt"))) == 1


def test_study_hooks_keep_test_and_validation_apart(tmp_path: Path) -> None:
    study = DRSStudy.preset("small", rows=4000)
    train, val, test = study.data.splits()
    assert (len(train), len(val), len(test)) == (3200, 400, 400)
    data = study.eval_data("dlrm")
    assert data.test is test and data.validation is val
    model = study.trained("dlrm", BuildContext(tmp_path))
    ranger = Ranger().profile(model, lambda m: study.calibrate(m, data))
    direct = Ranger().profile(model, lambda m: m(val.dense, val.sparse))
    assert ranger.ranges == direct.ranges  # calibrated on validation rows, not test


def test_checkpoint_key_and_determinism(tmp_path: Path) -> None:
    a = DRSStudy.preset("small", rows=3000)
    assert a.checkpoint_name("fm") == DRSStudy.preset("small", rows=3000).checkpoint_name("fm")
    assert a.checkpoint_name("fm") != DRSStudy.preset("small", rows=3001).checkpoint_name("fm")
    assert a.checkpoint_name("fm") != DRSStudy.preset("small", rows=3000,
                                                      seed=1).checkpoint_name("fm")
    m1, m2 = a.trained("fm"), a.trained("fm")  # no cache: trained twice, same weights
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(),
                                                  m2.state_dict().values()))
    threads = torch.get_num_threads()
    a.trained("fm", BuildContext(tmp_path))
    assert torch.get_num_threads() == threads  # training's single thread is restored
    with pytest.raises(ValueError, match="reads no file"):
        ClickData(path="x.txt")
    with pytest.raises(KeyError, match="Unknown DRS model"):
        a.model("bert")
