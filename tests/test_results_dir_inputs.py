"""Bad results locations and damaged manifests: exit status 2, a message naming the problem and
the fix, and nothing stored changed. Also ``--part-rows`` exactness and golden-row repair."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from launch_fixtures import write_job

from pytei_ray.launch import main, run
from pytei_ray.report.__main__ import main as report_main

ROOT = Path(__file__).resolve().parents[1]


def launch(*args) -> int:
    return main([*map(str, args), "--executor", "local", "--no-progress"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("dry", [False, True])
def test_out_under_a_regular_file(tmp_path, capsys, dry):
    job = write_job(tmp_path / "job.py")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    before = snapshot(tmp_path)
    assert launch(job, "--out", blocker / "out", *(["--dry-run"] if dry else [])) == 2
    captured = capsys.readouterr()
    assert f"{blocker} is a regular file, not a folder" in captured.err
    assert "Pass --out with a path whose parents are folders" in captured.err
    assert "(new)" not in captured.out
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("dry", [False, True])
def test_out_under_proc(tmp_path, capsys, dry):
    """A real unwritable location even for root: /proc accepts no new files."""
    job = write_job(tmp_path / "job.py")
    out = Path("/proc") / f"pytei-ray-test-{os.getpid()}" / "out"
    assert launch(job, "--out", out, *(["--dry-run"] if dry else [])) == 2
    captured = capsys.readouterr()
    assert "does not accept new files" in captured.err and "writable location" in captured.err
    assert "(new)" not in captured.out
    assert not out.parent.exists()


def test_out_on_a_read_only_filesystem(tmp_path, capsys, monkeypatch):
    """Simulated: the tests run as root on a writable disk, so creating the probe file fails
    with EROFS through a patched ``os.open`` (the same syscall error a read-only mount gives).
    What this covers is the check and its message, not the kernel's behaviour."""
    job = write_job(tmp_path / "job.py")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(ro)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    for extra in ([], ["--dry-run"]):
        assert launch(job, "--out", ro / "campaign", *extra) == 2
        captured = capsys.readouterr()
        assert f"{ro} does not accept new files" in captured.err
        assert "(new)" not in captured.out
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("content, expected", [
    ("{}", "lacks the field 'spec' (the campaign spec, a JSON object)"),
    ('{"spec": null}', "lacks the field 'spec'"),
    ("null", "to hold a JSON object, but it holds null"),
    ("[1, 2]", "to hold a JSON object, but it holds list"),
    ("{not json", "is not valid JSON"),
])
def test_damaged_manifest_is_refused_with_the_field(tmp_path, capsys, content, expected):
    job = write_job(tmp_path / "job.py", reps=1, models='{"a": build}')
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    (out / "_manifest.json").write_text(content)
    before = snapshot(out)
    capsys.readouterr()
    for extra in ([], ["--dry-run"]):
        assert launch(job, "--out", out, *extra) == 2
        err = capsys.readouterr().err
        assert expected in err, err
        assert "holds no _manifest.json" not in err
        assert "Restore it from a backup" in err and "--out DIR" in err
        assert "Traceback" not in err
    assert snapshot(out) == before


def test_manifest_of_another_format_is_refused(tmp_path, capsys):
    job = write_job(tmp_path / "job.py", reps=1, models='{"a": build}')
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    (out / "_manifest.json").write_text(json.dumps(dict(manifest, format="pytei_ray.results/9")))
    capsys.readouterr()
    assert launch(job, "--out", out) == 2
    assert "in format 'pytei_ray.results/1', but it is 'pytei_ray.results/9'" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("rows, chunk, sizes", [(1, 3, [1] * 16), (5, 6, [5, 5, 5, 1]),
                                                (20, 16, [16])])
def test_part_rows_is_a_maximum(tmp_path, rows, chunk, sizes):
    job = write_job(tmp_path / "job.py")
    out = tmp_path / "out"
    assert launch(job, "--out", out, "--part-rows", rows, "--chunk-size", chunk,
                  "--flush-every", 1000) == 0
    parts = sorted(out.glob("part-*.parquet"))
    assert sorted((pq.read_metadata(p).num_rows for p in parts), reverse=True) == sizes


@pytest.mark.parametrize("value", ["0", "-3"])
def test_part_rows_below_one_is_bad_input(tmp_path, capsys, value):
    out = tmp_path / "out"
    assert launch(write_job(tmp_path / "job.py"), "--out", out, "--part-rows", value) == 2
    assert (f"Expected --part-rows (rows per part file at most) to be an integer >= 1, but got "
            f"{value}.") in capsys.readouterr().err
    assert not out.exists()


def _golden(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out / "_golden").drop(columns=["worker", "started_at", "duration_s"])
    return df.sort_values(["model", "mitigation"]).reset_index(drop=True)


def test_torn_golden_part_is_recomputed(tmp_path, capsys):
    job = write_job(tmp_path / "job.py")
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert launch(job, "--out", ref) == 0
    assert launch(job, "--out", out, "--flush-every", "0", "--chunk-size", "2") == 0
    golden_parts = sorted((out / "_golden").glob("part-*.parquet"))
    victim = golden_parts[-1]
    lost = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.warns(UserWarning, match="Moved torn part"):
        summary = run(job, str(out), executor="local", progress=False, echo=print)
    assert summary.ran == 0 and summary.complete
    assert f"Recomputing {lost} missing golden row(s)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_golden(out), _golden(ref))
    rerun = run(job, str(out), executor="local", progress=False, echo=print)
    assert rerun.ran == 0 and "Recomputing" not in capsys.readouterr().out


def test_report_of_a_read_only_dataset_asks_for_an_output_folder(tmp_path, capsys, monkeypatch):
    """Simulated read-only dataset (root can write anywhere): creating ``_report`` fails with
    EROFS through a patched ``Path.mkdir``; ``--to`` elsewhere works."""
    job = write_job(tmp_path / "job.py", reps=1, models='{"a": build}')
    out = tmp_path / "out"
    assert launch(job, "--out", out) == 0
    before = snapshot(out)
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    capsys.readouterr()
    assert report_main([str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "Cannot write the report into" in err and "--to FOLDER" in err
    assert snapshot(out) == before
    assert report_main([str(out), "--no-plots", "-q", "--to", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
