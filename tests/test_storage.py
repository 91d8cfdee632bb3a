"""ResultsStore / ResultsWriter: one readable table, atomic parts, quarantine, schema evolution."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from pytei_ray.errors import ResultsDirError
from pytei_ray.storage import MANIFEST, ResultsStore, ResultsWriter, new_manifest, result_schema


def _manifest(name: str = "c") -> dict:
    return new_manifest({"name": name, "params": {}}, spec_hash="h", n_trials=1, metrics=[],
                        job_path=None, source_sha256="s")


def _row(i: int, status: str = "ok", **metrics) -> dict:
    return {"campaign": "c", "trial_id": f"t{i:04d}", "model": "m", "target": "all",
            "error_model": "bitflip", "ber": 1e-3, "repetition": i, "mitigation": "none",
            "seed": 7, "n_faults": i, "n_words": i, "n_nonfinite": 0, "status": status,
            "error": None if status == "ok" else "boom", "worker": "h:1", "device": "cpu",
            "started_at": datetime.now(timezone.utc), "duration_s": 0.1, "version": "0",
            **metrics, **{f"golden_{k}": 1.0 for k in metrics}}


def _filled(tmp_path, n_parts=3, per_part=4) -> ResultsStore:
    store = ResultsStore(tmp_path / "res")
    store.write_manifest(_manifest())
    for p in range(n_parts):
        rows = [_row(p * per_part + i, acc=0.5) for i in range(per_part)]
        store.write_part(rows, ["acc"], f"part-x-{p:03d}.parquet")
    return store


def test_one_table_for_pandas_pyarrow_and_duckdb(tmp_path):
    store = _filled(tmp_path)
    store.write_part([{"campaign": "c", "model": "m", "mitigation": "none", "acc": 1.0}],
                     ["acc"], "part-g.parquet", golden=True)
    store.write_job_source("campaign = None\n")
    path = store.path
    assert len(pd.read_parquet(path)) == 12
    assert ds.dataset(path).to_table().num_rows == 12
    query = f"select count(*) from read_parquet('{path}/*.parquet')"
    assert duckdb.sql(query).fetchall() == [(12,)]
    df = pd.read_parquet(path)
    assert list(df.columns) == result_schema(["acc"]).names
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert store.read_golden()[0]["acc"] == 1.0
    assert set(store.read_trial_status().values()) == {"ok"}


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "magic_only"])
def test_torn_part_is_quarantined_not_fatal(tmp_path, damage):
    store = _filled(tmp_path)
    bad = os.path.join(store.path, "part-x-001.parquet")
    data = open(bad, "rb").read()
    payload = {"truncate": data[: len(data) // 2], "empty": b"",
               "garbage": b"not parquet at all", "magic_only": b"PAR1" + b"\0" * 20 + b"PAR1"}
    with open(bad, "wb") as f:
        f.write(payload[damage])
    with pytest.raises(Exception):  # noqa: B017 - a torn part breaks plain readers...
        pd.read_parquet(store.path)
    with pytest.warns(UserWarning, match="Moved torn part"):
        moved = store.quarantine_bad_parts()
    assert moved == [bad]
    assert len(pd.read_parquet(store.path)) == 8  # ...until it is moved aside
    assert len(store.read_trial_status()) == 8
    assert os.listdir(os.path.join(store.path, "_quarantine"))


def test_tmp_files_are_invisible_and_cleaned(tmp_path):
    store = _filled(tmp_path)
    tmp = os.path.join(store.path, ".part-x-009.parquet.tmp-abcd1234")
    with open(tmp, "wb") as f:
        f.write(b"PAR1 half written")
    assert len(pd.read_parquet(store.path)) == 12
    store.quarantine_bad_parts()
    assert not os.path.exists(tmp)


def test_put_is_atomic_rename(tmp_path, monkeypatch):
    store = _filled(tmp_path, n_parts=1)
    target = os.path.join(store.path, "part-x-000.parquet")
    before = open(target, "rb").read()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.write_part([_row(99, acc=0.1)], ["acc"], "part-x-000.parquet")
    assert open(target, "rb").read() == before  # old file intact, no temp left behind
    assert sorted(os.listdir(store.path)) == [MANIFEST, "part-x-000.parquet"]


def test_writer_buffers_flushes_and_evolves_schema(tmp_path):
    store = ResultsStore(tmp_path / "res")
    store.write_manifest(_manifest())
    recorded = []
    w = ResultsWriter(store, [], rows_per_part=3, flush_seconds=3600,
                      on_new_metrics=recorded.append)
    w.add([_row(0, acc=0.5), _row(1, acc=0.6)])
    assert store.part_paths() == []
    w.add([_row(2, acc=0.7)], golden=[{"campaign": "c", "model": "m", "mitigation": "none",
                                        "acc": 1.0}])
    assert len(store.part_paths()) == 1 and len(store.part_paths(golden=True)) == 1
    w.add([_row(3, "failed")])  # a failed row has no metric values
    w.add([_row(4, acc=0.1, loss=float("nan"))])  # a new metric appears later
    w.close()
    assert recorded == [["acc"], ["acc", "loss"]]
    df = pd.read_parquet(store.path).sort_values("trial_id")
    assert list(df["trial_id"]) == [f"t{i:04d}" for i in range(5)]
    assert df["loss"].isna().sum() == 5 and math.isnan(df["loss"].iloc[4])
    assert df["status"].tolist() == ["ok", "ok", "ok", "failed", "ok"]
    assert store.stored_metrics() == ["acc", "loss"]


def test_writer_dedupes_golden_and_flushes_by_time(tmp_path):
    store = ResultsStore(tmp_path / "res")
    g = {"campaign": "c", "model": "m", "mitigation": "none", "acc": 1.0}
    w = ResultsWriter(store, ["acc"], flush_seconds=0, known_golden={("m", "sbp")})
    w.add([_row(0, acc=0.5)], golden=[g, dict(g, mitigation="sbp")])
    w.add([_row(1, acc=0.5)], golden=[g])
    assert w.parts_written == 2 and len(store.read_golden()) == 1


def test_drop_trials_rewrites_parts(tmp_path):
    store = _filled(tmp_path)
    assert store.drop_trials({"t0000", "t0005", "t0006", "t0007", "t0004"}) == 5
    assert sorted(store.read_trial_status()) == [f"t{i:04d}" for i in (1, 2, 3, 8, 9, 10, 11)]
    assert len(store.part_paths()) == 2


def test_location_checks(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ResultsDirError, match="is a file"):
        ResultsStore(f).check_location()
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "setup.py").write_text("")
    with pytest.raises(ResultsDirError, match="not a pytei_ray results directory"):
        ResultsStore(tmp_path / "proj").check_location()
    ResultsStore(tmp_path / "new").check_location()  # missing: fine
    (tmp_path / "empty").mkdir()
    ResultsStore(tmp_path / "empty").check_location()  # empty: fine
    _filled(tmp_path).check_location()  # ours: fine


def test_object_store_code_path(tmp_path):
    """On a non-local filesystem parts are written with one put, read back the same way."""
    fs = pafs._MockFileSystem()
    store = ResultsStore("bucket/res", filesystem=fs)
    assert not store._local
    store.write_manifest(_manifest())
    store.write_part([_row(i, acc=0.5) for i in range(3)], ["acc"], "part-a.parquet")
    with fs.open_output_stream("bucket/res/part-torn.parquet") as out:
        out.write(b"PAR1xx")
    with pytest.warns(UserWarning, match="Moved torn part"):
        store.quarantine_bad_parts()
    assert store.read_manifest()["campaign"] == "c"
    assert len(store.read_trial_status()) == 3
    assert store.read_table().num_rows == 3


HOLD = """
import sys, time
from pytei_ray.storage import ResultsStore
with ResultsStore(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_refuses_a_live_writer_and_is_freed_when_it_dies(tmp_path):
    store = ResultsStore(tmp_path / "res")
    lock = tmp_path / "res" / "_lock"
    with store.lock():
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(ResultsDirError, match=f"pid {os.getpid()}"):
            with store.lock():
                pass
    assert not lock.exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsDirError) as info:
            with store.lock():
                pass
        text = str(info.value)
        assert f"host {socket.gethostname()}, pid {holder.pid}" in text
        assert "Wait for it to finish" in text and "resumes" in text
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the file stays...
        holder.wait()
    assert lock.exists()
    with store.lock():  # ...but the kernel released the lock: taken at once
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # a stale file, no holder
    with store.lock():
        pass
    store.check_location()  # "_lock" alone does not make the directory foreign


def test_scan_reads_each_part_once_and_gives_what_a_resume_needs(tmp_path, monkeypatch):
    store = _filled(tmp_path)
    store.write_part([{"campaign": "c", "model": "m", "mitigation": "none", "acc": 0.9}],
                     ["acc"], "part-g.parquet", golden=True)
    torn = os.path.join(store.path, "part-x-999.parquet")
    with open(torn, "wb") as f:
        f.write(b"PAR1 torn")
    opened: list[str] = []
    real = store._open_part  # the one read of a part (magic bytes, footer, columns)

    def counting(info, *a, **k):
        opened.append(info.path)
        return real(info, *a, **k)

    monkeypatch.setattr(store, "_open_part", counting)
    with pytest.warns(UserWarning, match="Moved torn part"):
        scan = store.scan(["trial_id", "status"])
    assert sorted(opened) == sorted(set(opened))  # each part opened once
    assert len(opened) == 5  # 3 result parts, the torn one, 1 golden part
    assert len(scan.rows) == 12 and {r["status"] for r in scan.rows} == {"ok"}
    assert scan.metrics == ["acc"]
    assert set(scan.schemas) == set(store.part_paths()) and not os.path.exists(torn)
    assert [g["acc"] for g in scan.golden] == [0.9]
    assert scan.golden_of_rows == {("m", "none"): {"acc": 1.0}}
    # the writer conforms parts from the scanned schemas: no footer read for conforming parts
    read = []
    monkeypatch.setattr("pyarrow.parquet.read_schema", lambda *a, **k: read.append(a))
    assert store.conform_parts(["acc"], scan.schemas) == 0 and not read


def _step(trial_id: str, step: int, loss: float) -> dict:
    return {"trial_id": trial_id, "step": step, "loss": loss, "grad_norm": 1.0,
            "update_norm": 0.1, "max_attention_logit": 2.0, "nonfinite_grads": 0,
            "nonfinite_params": 0, "action": "apply", "attempts": 1, "n_faults_sampled": 0,
            "n_faults": 0, "n_words_changed": 0, "n_nonfinite_faults": 0}


_GOLDEN_ROW = {"campaign": "c", "model": "m", "mitigation": "none", "acc": 1.0}


@pytest.mark.parametrize("golden", [False, True], ids=["steps", "golden_steps"])
def test_step_part_without_its_part_is_removed_on_resume(tmp_path, golden):
    # a kill between the step part and its (result or golden) part: the steps go, the
    # trial (golden row) is computed again and brings them again
    store = _filled(tmp_path)
    write = store.write_golden_steps if golden else store.write_steps
    kept = write([_step("t0000", 0, 1.5)], "part-x-000.parquet")
    if golden:
        store.write_part([_GOLDEN_ROW], ["acc"], "part-x-000.parquet", golden=True)
    orphan = write([_step("t9999", 0, 2.5)], "part-y-001.parquet")
    scan = store.scan(["trial_id"])
    assert len(scan.rows) == 12
    assert store.step_paths(golden) == [kept] and not os.path.exists(orphan)
    assert store.step_paths(not golden) == []  # the other table is not touched


@pytest.mark.parametrize("golden", [False, True], ids=["steps", "golden_steps"])
def test_torn_step_part_quarantines_its_part(tmp_path, golden):
    store = _filled(tmp_path)
    write = store.write_golden_steps if golden else store.write_steps
    path = write([_step("t0004", 0, 1.5)], "part-x-001.parquet")
    if golden:
        store.write_part([_GOLDEN_ROW], ["acc"], "part-x-001.parquet", golden=True)
    with open(path, "wb") as f:
        f.write(b"PAR1 torn")
    with pytest.warns(UserWarning, match="its step part is torn"):
        scan = store.scan(["trial_id"])
    assert not os.path.exists(path) and store.step_paths(golden) == []
    quarantined = os.listdir(os.path.join(store.path, "_quarantine"))
    assert len(quarantined) == 2  # the step part and its part
    if golden:  # the golden row is gone: it is computed again; the trials stay
        assert scan.golden == [] and len(scan.rows) == 12
    else:  # the part's trials rerun
        assert len(scan.rows) == 8


def test_writer_stores_golden_steps_before_the_golden_part(tmp_path, monkeypatch):
    from pytei_ray.columns import STEPS_KEY, golden_trial_id

    store = ResultsStore(tmp_path / "res")
    order: list[str] = []
    for name in ("write_golden_steps", "write_part", "write_steps"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _n=name, _r=real, **k:
                            (order.append(_n), _r(*a, **k))[1])
    gid = golden_trial_id("m", "none")
    g = {**_GOLDEN_ROW, STEPS_KEY: [_step(gid, i, 1.0 + i) for i in range(3)]}
    w = ResultsWriter(store, [], flush_seconds=0)
    row = {**_row(0, acc=0.5), STEPS_KEY: [_step("t0000", i, 2.0) for i in range(3)]}
    w.add([row], golden=[g])
    assert order == ["write_golden_steps", "write_part", "write_steps", "write_part"]
    golden_names = {os.path.basename(p) for p in store.part_paths(golden=True)}
    assert {os.path.basename(p) for p in store.step_paths(golden=True)} == golden_names
    assert store.read_golden()[0]["acc"] == 1.0  # the steps are no metric column
    assert STEPS_KEY not in pd.read_parquet(os.path.join(store.path, "_golden")).columns
    got = store.read_golden_steps().to_pylist()
    assert [(s["trial_id"], s["step"], s["loss"]) for s in got] == \
        [(gid, i, 1.0 + i) for i in range(3)]


def test_golden_steps_stored_twice_are_read_once(tmp_path):
    # several workers may store the same golden trajectory (bit-identical): one row per step
    store = ResultsStore(tmp_path / "res")
    for name in ("part-a-001.parquet", "part-b-001.parquet"):
        store.write_golden_steps([_step("golden/m/none", i, 1.0 + i) for i in range(4)], name)
        store.write_part([_GOLDEN_ROW], ["acc"], name, golden=True)
    assert len(pd.read_parquet(os.path.join(store.path, "_golden_steps"))) == 8
    table = store.read_golden_steps()
    assert table.num_rows == 4 and table.column("step").to_pylist() == [0, 1, 2, 3]
    assert ResultsStore(tmp_path / "empty").read_golden_steps().num_rows == 0
