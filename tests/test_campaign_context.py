"""Build contexts (artifact cache with the results), the prepare phase, and --repetitions."""

from __future__ import annotations

import functools
import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch

from pytei_ray.campaign import Campaign, JobRef, expand, load_job
from pytei_ray.execution import ExecutorConfig
from pytei_ray.execution.base import Executor
from pytei_ray.execution.context import BuildContext, accepts_ctx, call_hook, context_for
from pytei_ray.execution.worker import TrialWorker
from pytei_ray.launch import main, run

JOB = '''
import os, torch
from pytei_ray import Campaign

LOG = os.path.join(os.path.dirname(__file__), "built.log")

def build(ctx):
    # "train" once: the bytes are cached with the results, the log says who produced them
    def produce():
        with open(LOG, "a") as f:
            f.write("trained\\n")
        return b"%d" % 7
    scale = int(ctx.artifact("weights.bin", produce))
    with open(LOG, "a") as f:
        f.write(f"built {{ctx.results_uri}}\\n")
    with torch.random.fork_rng():
        torch.manual_seed(scale)
        return torch.nn.Linear(4, 1)

def data(name, ctx=None):
    return torch.ones(8, 4)

def evaluate(model, x):
    return {{"out": float(model(x).mean())}}

def make_campaign(reps={reps}):
    return Campaign(name="ctx", models={{"a": build}}, data=data, evaluate=evaluate,
                    bers=[1e-3, 1e-2], repetitions=reps, seed=1)

campaign = make_campaign()
'''


def write_job(path: Path, reps: int = 2) -> str:
    path.write_text(JOB.format(reps=reps))
    return str(path)


def log_lines(tmp_path: Path) -> list[str]:
    log = tmp_path / "built.log"
    return log.read_text().splitlines() if log.exists() else []


def launch(*args) -> int:
    return main([*map(str, args), "--executor", "local", "--no-progress"])


# ---- BuildContext -------------------------------------------------------------------------
def test_artifact_is_produced_once_and_stored_atomically(tmp_path: Path) -> None:
    calls = []

    def produce() -> bytes:
        calls.append(1)
        return b"payload"

    ctx = BuildContext(tmp_path / "res")
    assert ctx.artifact("m-1.pt", produce) == b"payload"
    assert BuildContext(tmp_path / "res").artifact("m-1.pt", produce) == b"payload"
    assert len(calls) == 1 and ctx.produced == ["m-1.pt"]
    assert os.listdir(tmp_path / "res" / "_artifacts") == ["m-1.pt"]  # no temporary left
    assert ctx.artifact_location("m-1.pt") == str(tmp_path / "res" / "_artifacts" / "m-1.pt")
    assert ctx.artifact("m-1.pt", lambda: b"new", refresh=True) == b"new"
    assert (tmp_path / "res" / "_artifacts" / "m-1.pt").read_bytes() == b"new"


def test_artifact_through_a_filesystem_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/res"
    assert BuildContext(uri).artifact("k", lambda: b"x") == b"x"
    assert (tmp_path / "res" / "_artifacts" / "k").read_bytes() == b"x"
    assert BuildContext(uri).artifact_location("k") == f"{uri}/_artifacts/k"


def test_artifact_without_location_is_cached_in_process() -> None:
    key = f"mem-{os.getpid()}-{id(object())}"
    a, b = BuildContext(), BuildContext()
    assert a.artifact(key, lambda: b"1") == b"1"
    assert b.artifact(key, lambda: b"2") == b"1" and b.loaded == [key]
    assert a.artifact_location(key) is None


def test_artifact_rejects_bad_keys_and_non_bytes(tmp_path: Path) -> None:
    ctx = BuildContext(tmp_path)
    with pytest.raises(ValueError, match="artifact key"):
        ctx.artifact("../escape", lambda: b"")
    with pytest.raises(TypeError, match="to return bytes, but got str"):
        ctx.artifact("k", lambda: "text")


def test_context_pickles_by_location(tmp_path: Path) -> None:
    ctx = BuildContext(tmp_path)
    ctx.artifact("k", lambda: b"v")
    back = pickle.loads(pickle.dumps(ctx))
    assert back.results_uri == str(tmp_path) and back.produced == []
    assert back.artifact("k", lambda: b"other") == b"v"


def test_hooks_get_ctx_only_when_they_ask() -> None:
    class Net(torch.nn.Module):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(width, 1)

    def with_ctx(ctx):
        return ctx

    def kw_only(*, ctx=None):
        return ctx

    ctx = BuildContext()
    assert not accepts_ctx(Net) and not accepts_ctx(lambda **kw: 1) and not accepts_ctx(len)
    assert call_hook(with_ctx, ctx) is ctx and call_hook(kw_only, ctx) is ctx
    assert call_hook(functools.partial(lambda name, ctx: (name, ctx), "m"), ctx) == ("m", ctx)
    assert isinstance(call_hook(Net, ctx), Net)


# ---- JobRef, TrialWorker, prepare ---------------------------------------------------------
def test_jobref_carries_location_and_overrides(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path / "job.py")).replace(results_uri=str(tmp_path / "r"),
                                                            overrides={"repetitions": 5})
    campaign = job.campaign()
    assert campaign.repetitions == 5 and job.base_campaign().repetitions == 2
    assert context_for(campaign).results_uri == str(tmp_path / "r")
    back = pickle.loads(pickle.dumps(job))
    assert back.results_uri == job.results_uri and back.campaign().repetitions == 5
    with pytest.raises(Exception, match="overrides among"):
        JobRef("j.py", "", overrides={"bers": [0.1]})


def test_worker_prepare_builds_once_with_the_jobs_context(tmp_path: Path) -> None:
    out = tmp_path / "res"
    job = load_job(write_job(tmp_path / "job.py")).replace(results_uri=str(out))
    worker = TrialWorker(job.campaign(), device="cpu")  # context found through the campaign
    seconds = worker.prepare(["a"])
    assert set(seconds) == {"a"} and worker.prepare(["a"]) == {"a": 0.0}
    assert log_lines(tmp_path) == ["trained", f"built {out}"]
    rows = worker.run_chunk(expand(job.campaign())).rows
    assert all(r["status"] == "ok" for r in rows)
    assert log_lines(tmp_path) == ["trained", f"built {out}"]  # the replica was reused
    TrialWorker.for_job(job, device="cpu").prepare(["a"])  # another worker: loads, no training
    assert log_lines(tmp_path)[2:] == [f"built {out}"]
    with pytest.raises(KeyError, match="Unknown model 'zz'"):
        worker.prepare(["zz"])


class PlainExecutor(Executor):
    """An executor that does not override prepare (like a remote one before it does)."""

    name = "plain"

    def run(self, job, chunks, on_result) -> None:
        worker = TrialWorker.for_job(job, device="cpu")
        for chunk in chunks:
            on_result(worker.run_chunk(chunk))


def test_default_prepare_caches_before_the_trials(tmp_path: Path) -> None:
    out = tmp_path / "res"
    summary = run(write_job(tmp_path / "job.py"), str(out),
                  executor=PlainExecutor(ExecutorConfig()), progress=False, echo=lambda s: None)
    assert summary.complete and summary.ran == 4
    # prepare trained and cached; the executor's own worker then only loaded the artifact
    assert log_lines(tmp_path) == ["trained", f"built {out}", f"built {out}"]
    assert (out / "_artifacts" / "weights.bin").read_bytes() == b"7"


def test_launcher_prepares_then_reuses_the_cache_on_extension(tmp_path: Path, capsys) -> None:
    job, out = write_job(tmp_path / "job.py"), tmp_path / "res"
    assert launch(job, "--out", out) == 0
    assert "Prepared 1 model(s)" in capsys.readouterr().out
    assert log_lines(tmp_path) == ["trained", f"built {out}"]  # local: one build, kept
    assert launch(job, "--out", out) == 0  # complete: nothing is built
    assert len(log_lines(tmp_path)) == 2
    assert launch(job, "--out", out, "--extend", "--repetitions", "3") == 0
    assert log_lines(tmp_path)[2:] == [f"built {out}"]  # loaded from _artifacts, not trained
    assert launch(job, "--out", out, "--dry-run") == 0
    assert len(log_lines(tmp_path)) == 3


# ---- --repetitions ------------------------------------------------------------------------
def test_repetitions_flag_is_recorded_and_kept_by_plain_reruns(tmp_path: Path, capsys) -> None:
    job, out = write_job(tmp_path / "job.py"), tmp_path / "res"
    assert launch(job, "--out", out, "--repetitions", "3") == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["spec"]["repetitions"] == 3 and manifest["spec"]["params"] == {}
    assert manifest["job"]["repetitions_override"] == 3
    assert len(pd.read_parquet(out)) == 6
    capsys.readouterr()
    assert launch(job, "--out", out) == 0  # no flag: the stored 3 repetitions, complete
    text = capsys.readouterr().out
    assert "using 3 repetitions as recorded" in text and "complete, all 6 trials" in text
    assert launch(job, "--out", out, "--repetitions", "5", "--extend") == 0
    assert len(pd.read_parquet(out)) == 10
    assert json.loads((out / "_manifest.json").read_text())["job"]["repetitions_override"] == 5
    assert launch(job, "--out", out, "--repetitions", "2") == 2  # explicit fewer: refused
    assert "repetitions: 5 -> 2" in capsys.readouterr().err
    write_job(tmp_path / "job.py", reps=6)  # the job itself now asks for more: an extension
    assert launch(job, "--out", out) == 2
    assert "repetitions: 5 -> 6" in capsys.readouterr().err
    assert launch(job, "--out", out, "--extend") == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["job"]["repetitions_override"] is None and len(pd.read_parquet(out)) == 12


def test_repetitions_flag_rejects_bad_values(tmp_path: Path, capsys) -> None:
    job = write_job(tmp_path / "job.py")
    assert launch(job, "--out", tmp_path / "res", "--repetitions", "0") == 2
    assert "Expected --repetitions to be an integer >= 1, but got 0." in capsys.readouterr().err


def test_campaign_replace_keeps_validation() -> None:
    c = Campaign(name="v", models={"m": lambda: torch.nn.Linear(2, 1)}, data=lambda n: None,
                 evaluate=lambda m, d: {"x": 0.0}, bers=[0.1], repetitions=1)
    job = JobRef("j.py", "", overrides={"repetitions": 0})
    job._cache["base"] = c
    with pytest.raises(Exception, match="repetitions"):
        job.campaign()
