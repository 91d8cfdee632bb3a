"""Inject+restore cost of pytei_ray vs PyTEI's dense error map vs PyTorchFI, side by side.

    python -m benchmarks.injection              # full grid: 1M, 10M, 100M params x BER 1e-9..1e-3
    python -m benchmarks.injection --quick      # 1M and 10M, three BERs
    python -m benchmarks.injection --device cuda --json out.json

Models are MLPs of ``width x width`` ``nn.Linear`` blocks without bias (``--width``, default 1000,
so 1M = 1 tensor, 100M = 100 tensors), fp32. For every (size, BER) three methods run:

* **ours**: ``with Injector(error=BitFlip(ber=p), seed=s).inject(model): pass`` (sample, apply,
  restore), median over repetitions with distinct seeds; also ``inj.sample(model)`` alone and
  ``faults.apply(model).restore()`` alone. Checked: the state checksum is unchanged after all
  repetitions and the total number of flips is within 6 sigma of ``ber * N * 32`` per repetition.
* **dense**: PyTEI's algorithm re-implemented from its description (DESIGN.md): per tensor a
  ``(*shape, 32)`` int32 map of bit weights times ``(p * dropout(ones, 1 - p)).int()`` (its
  rounding defect included), summed to an int32 mask, ``param.data = (w.view(int) ^ mask)``;
  restore = xor with the stored masks again. Sizes above ``--max-dense-params`` are skipped.
* **pytorchfi** (0.6.0, if importable): one ``declare_weight_fi`` of a single weight (it deep-copies
  the model), the per-injection cost of a PyTorchFI campaign. BER-independent: one measurement per
  size, shown on every BER row. "Restore" is dropping the copy (freed by the next declare).

Peak extra memory: each (method, size) runs in a fresh subprocess; before each measured injection
the script runs ``gc.collect()`` and glibc ``malloc_trim(0)``, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs`` <- 5) and reads the current RSS; the figure is peak RSS (``VmHWM``)
minus that. It counts every host allocation (numpy, torch CPU, Python) at page granularity; the
model itself is allocated before and is not counted. With ``--device cuda`` the figure is
``torch.cuda.max_memory_allocated()`` minus the allocation before (GPU memory), and the host
figure is in the JSON. Timings use ``time.perf_counter`` (after ``torch.cuda.synchronize``).
For ours, the minor page faults per injection (``getrusage``, repetitions after the first) are
printed and in the JSON: fresh pages cost ~2 us each on a VM, and a change that makes every
injection allocate (or free to the OS) megabytes shows up there before it shows in the times.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
BERS_FULL = [1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
BERS_QUICK = [1e-9, 1e-6, 1e-3]
SIZES_FULL = [1_000_000, 10_000_000, 100_000_000]
SIZES_QUICK = [1_000_000, 10_000_000]
DENSE_BYTES_PER_PARAM = 660  # DESIGN.md, used only to print the estimate of a skipped size
DENSE_SECONDS_PER_PARAM = 1.5e-6
TARGET_RATIO_1M = 1000.0
TARGET_100M_MS = 5.0
TARGET_100M_MB = 10.0


# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class PeakMemory:
    """Peak extra host RSS (and CUDA memory) of the code run inside the ``with`` block."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.host_bytes = 0
        self.cuda_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        _malloc_trim()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        self._rss0 = _status_kib("VmRSS")
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._cuda0 = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.host_bytes = max(0, _status_kib("VmHWM") - self._rss0) * 1024
        if self.device.startswith("cuda"):
            self.cuda_bytes = max(0, torch.cuda.max_memory_allocated() - self._cuda0)

    @property
    def bytes(self) -> int:
        return self.cuda_bytes if self.cuda_bytes is not None else self.host_bytes


def build_mlp(n_params: int, width: int, device: str) -> nn.Sequential:
    block = width * width
    if n_params % block:
        raise SystemExit(f"--width {width}: {n_params} parameters is not a multiple of {block}.")
    layers = [nn.Linear(width, width, bias=False, device=device) for _ in range(n_params // block)]
    return nn.Sequential(*layers)


def _checksum(model: nn.Module) -> str:
    from pytei_ray import state_checksum

    return state_checksum(model)


def _plausible(observed: int, expected: float) -> bool:
    """Within 6 sigma of a Poisson/Binomial mean (plus slack for tiny means)."""
    return abs(observed - expected) <= 6.0 * math.sqrt(expected) + 3.0


# ---------------------------------------------------------------------------------------------
# the three methods (each run in a worker subprocess)
# ---------------------------------------------------------------------------------------------
def run_ours(model: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    from pytei_ray import BitFlip, Injector

    device, n_bits = cfg["device"], cfg["n_params"] * 32
    warm = nn.Linear(64, 64, device=device)
    for _ in range(3):  # first-call costs (imports, lazy inits) are not per-injection costs
        with Injector(error=BitFlip(ber=1e-2), seed=1).inject(warm):
            pass
    rows = []
    for b, ber in enumerate(cfg["bers"]):
        before = _checksum(model)
        seeds = [cfg["seed"] + 1000 * b + r for r in range(cfg["reps"])]
        total, flips, mem = [], [], None
        faults_after_first = 0  # minor page faults in repetitions 2.. (the first one is trimmed)
        start = time.perf_counter()
        for r, seed in enumerate(seeds):
            minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            inj = Injector(error=BitFlip(ber=ber), seed=seed)
            if r == 0:
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    with inj.inject(model) as faults:
                        pass
                    _sync(device)
                    t1 = time.perf_counter()
            else:
                t0 = time.perf_counter()
                with inj.inject(model) as faults:
                    pass
                _sync(device)
                t1 = time.perf_counter()
            total.append(t1 - t0)
            flips.append(faults.n_faults)
            if r:
                faults_after_first += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - minflt
            if r + 1 >= cfg["min_reps"] and time.perf_counter() - start > cfg["budget_s"]:
                break
        seeds = seeds[: len(total)]
        sample, apply_restore = [], []
        for seed in seeds:
            inj = Injector(error=BitFlip(ber=ber), seed=seed)
            t0 = time.perf_counter()
            fm = inj.sample(model)
            t1 = time.perf_counter()
            fm.apply(model).restore()
            _sync(device)
            t2 = time.perf_counter()
            sample.append(t1 - t0)
            apply_restore.append(t2 - t1)
        exact = _checksum(model) == before
        expected = ber * n_bits
        assert mem is not None
        rows.append(
            {
                "ber": ber,
                "reps": len(total),
                "ms": 1e3 * statistics.median(total),
                "ms_min": 1e3 * min(total),
                "sample_ms": 1e3 * statistics.median(sample),
                "apply_restore_ms": 1e3 * statistics.median(apply_restore),
                "peak_bytes": mem.bytes,
                "host_peak_bytes": mem.host_bytes,
                "page_faults_per_inject": faults_after_first / max(1, len(total) - 1),
                "flips_mean": statistics.fmean(flips),
                "flips_expected": expected,
                "flips_plausible": _plausible(sum(flips), expected * len(flips)),
                "exact_restore": exact,
            }
        )
        _progress(cfg, rows[-1])
    return rows


def pytei_error_map(
    shape: torch.Size, bitwidth: int, device: str, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTEI's dense error map for one tensor: (int32 mask per word, flips per word).

    Bit weights ``2**31 .. 2**0`` along a trailing dimension of 32, kept where
    ``(p * dropout(ones, 1 - p)).int()`` is 1: dropout keeps an element with probability p and
    scales it by 1/p, and ``p * (1/p)`` may round to 0.99999994 in fp32 and truncate to 0 (the
    rounding defect; at some BERs nothing is injected).
    """
    weights = (2 * torch.ones((*shape, bitwidth), dtype=torch.int, device=device)) ** torch.arange(
        0, bitwidth, dtype=torch.int, device=device
    ).flip(dims=(-1,)).expand((*shape, bitwidth))
    keep = (
        p
        * nn.functional.dropout(torch.ones_like(weights, dtype=torch.float, device=device), 1 - p)
    ).int()
    count = keep.sum(dim=-1)
    mask = (keep * weights).sum(dim=-1).int()
    return mask, count


def _dense_inject_restore(model: nn.Module, ber: float, device: str) -> int:
    """PyTEI ``inject()`` (all maps allocated first, then applied) and an xor-restore."""
    params = dict(model.named_parameters())
    masks, counts = {}, {}
    for name, p in params.items():
        masks[name], counts[name] = pytei_error_map(p.shape, 32, device, ber)
    n = 0
    for name, p in params.items():
        n += counts[name].sum()
        p.data = (p.view(torch.int) ^ masks[name]).view(torch.float)
    for name, p in params.items():
        p.data = (p.view(torch.int) ^ masks[name]).view(torch.float)
    return int(n)


def run_dense(model: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    device, n_bits = cfg["device"], cfg["n_params"] * 32
    _dense_inject_restore(nn.Sequential(nn.Linear(64, 64, device=device)), 1e-2, device)
    rows = []
    for b, ber in enumerate(cfg["bers"]):
        before = _checksum(model)
        times, flips, mem = [], [], None
        start = time.perf_counter()
        for r in range(cfg["reps"]):
            torch.manual_seed(cfg["seed"] + 1000 * b + r)
            if r == 0:
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    n = _dense_inject_restore(model, ber, device)
                    _sync(device)
                    t1 = time.perf_counter()
            else:
                t0 = time.perf_counter()
                n = _dense_inject_restore(model, ber, device)
                _sync(device)
                t1 = time.perf_counter()
            times.append(t1 - t0)
            flips.append(n)
            if r + 1 >= cfg["min_reps_baseline"] and time.perf_counter() - start > cfg["budget_s"]:
                break
        assert mem is not None
        rows.append(
            {
                "ber": ber,
                "reps": len(times),
                "ms": 1e3 * statistics.median(times),
                "peak_bytes": mem.bytes,
                "host_peak_bytes": mem.host_bytes,
                "flips_mean": statistics.fmean(flips),
                "flips_expected": ber * n_bits,
                "exact_restore": _checksum(model) == before,
            }
        )
        _progress(cfg, rows[-1])
    return rows


def _flip_value(v: float, bit: int) -> float:
    word = np.array([v], dtype=np.float32).view(np.uint32)
    return float((word ^ np.uint32(1 << bit)).view(np.float32)[0])


def run_pytorchfi(model: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    from pytorchfi.core import fault_injection

    device, width = cfg["device"], cfg["width"]
    cuda = device.startswith("cuda")
    pfi = fault_injection(
        model, 1, input_shape=[width], layer_types=[nn.Linear], use_cuda=cuda
    )
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    rng = np.random.default_rng(cfg["seed"])
    before = _checksum(model)

    def one() -> tuple[float, bool]:
        layer = int(rng.integers(len(layers)))
        k, j, bit = (int(v) for v in rng.integers((width, width, 32)))
        value = _flip_value(float(layers[layer].weight.detach()[k, j]), bit)
        t0 = time.perf_counter()
        corrupted = pfi.declare_weight_fi(
            layer_num=[layer], k=[k], dim1=[j], dim2=[None], dim3=[None], value=[value]
        )
        _sync(device)
        t1 = time.perf_counter()
        got = corrupted[layer].weight[k, j].detach().cpu().numpy().view(np.uint32)
        want = np.array(value, dtype=np.float32).view(np.uint32)
        return t1 - t0, bool(got == want)

    one()  # warm-up
    pfi.fi_reset()
    with PeakMemory(device) as mem:  # one declare from a clean state: one model copy alive
        t, ok = one()
    times, oks = [t], [ok]
    start = time.perf_counter()
    # campaign steady state: the previous copy is freed when the next declare replaces it
    while len(times) < cfg["reps"]:
        if len(times) >= cfg["min_reps_baseline"] and time.perf_counter() - start > cfg["budget_s"]:
            break
        t, ok = one()
        times.append(t)
        oks.append(ok)
    pfi.fi_reset()
    row = {
        "reps": len(times),
        "ms": 1e3 * statistics.median(times),
        "peak_bytes": mem.bytes,
        "host_peak_bytes": mem.host_bytes,
        "injected_ok": all(oks),
        "original_untouched": _checksum(model) == before,
    }
    _progress(cfg, row)
    return [dict(row, ber=ber) for ber in cfg["bers"]]


METHODS = {"ours": run_ours, "dense": run_dense, "pytorchfi": run_pytorchfi}


def _progress(cfg: dict[str, Any], row: dict[str, Any]) -> None:
    ber = f" ber={row['ber']:.0e}" if "ber" in row else ""
    pf = row.get("page_faults_per_inject")
    pf = "" if pf is None else f", {pf:.0f} page faults per injection"
    print(
        f"  [{cfg['method']} {_fmt_params(cfg['n_params'])}{ber}] {row['ms']:.3f} ms "
        f"({row['reps']} reps), peak +{_fmt_bytes(row['peak_bytes'])}{pf}",
        file=sys.stderr,
        flush=True,
    )


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(cfg["seed"])
    model = build_mlp(cfg["n_params"], cfg["width"], cfg["device"])
    with torch.no_grad():  # weights with a spread of exponents, like a trained model
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    _sync(cfg["device"])
    return {"rows": METHODS[cfg["method"]](model, cfg)}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _spawn(cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.injection", "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"worker exited with status {proc.returncode} (see stderr above)"}
    return json.loads(lines[-1][len("RESULT ") :])


def _pytorchfi_status() -> str | None:
    """None if PyTorchFI 0.6.0 is usable, else why it is skipped."""
    try:
        from importlib.metadata import version

        from pytorchfi.core import fault_injection

        if not hasattr(fault_injection, "declare_weight_fi"):
            return "pytorchfi.core.fault_injection has no declare_weight_fi"
        v = version("pytorchfi")
        if v != "0.6.0":
            return f"pytorchfi {v} installed, the benchmark expects 0.6.0"
    except Exception as e:  # ImportError and anything its import raises
        return f"cannot import pytorchfi ({type(e).__name__}: {e}); pip install pytorchfi==0.6.0"
    return None


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    if b < 1024**2:
        return f"{b / 1024:.0f} KiB"
    if b < 1024**3:
        return f"{b / 1024**2:.1f} MiB"
    return f"{b / 1024**3:.2f} GiB"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def _dense_skip_reason(n_params: int, width: int, measured: dict[str, Any] | None) -> str:
    per_s, per_b = DENSE_SECONDS_PER_PARAM, DENSE_BYTES_PER_PARAM
    if measured:  # extrapolate from the largest dense size measured in this run
        per_s = measured["ms"] / 1e3 / measured["n_params"]
        per_b = measured["peak_bytes"] / min(measured["n_params"], width * width)
    largest = min(n_params, width * width)
    return (
        f"skipped: > --max-dense-params; would need ~{per_s * n_params:,.0f} s per injection, "
        f"{_fmt_bytes(per_b * largest)} peak with {_fmt_params(largest)}-param tensors "
        f"({_fmt_bytes(per_b * n_params)} if the model were one tensor)"
    )


def _row_ok(r: dict[str, Any]) -> bool:
    o, d, f = r["ours"], r.get("dense"), r.get("pytorchfi")
    ok = o["exact_restore"] and o["flips_plausible"]
    if d:
        ok = ok and d["exact_restore"]
    if f:
        ok = ok and f["injected_ok"] and f["original_untouched"]
    return bool(ok)


def _table(results: list[dict[str, Any]], pfi_note: str | None) -> str:
    head = [
        "params", "BER", "flips exp", "flips", "ours ms", "sample", "apply+rst", "ours mem",
        "dense ms", "dense mem", "dense flips", "pfi ms", "pfi mem", "dense/ours", "pfi/ours", "ok",
    ]  # fmt: skip
    rows = [head]
    for r in results:
        o, d, f = r["ours"], r.get("dense"), r.get("pytorchfi")
        rows.append(
            [
                _fmt_params(r["n_params"]),
                f"{r['ber']:.0e}",
                f"{o['flips_expected']:,.1f}" if o["flips_expected"] < 10 else
                f"{o['flips_expected']:,.0f}",
                f"{o['flips_mean']:,.1f}" if o["flips_mean"] < 10 else f"{o['flips_mean']:,.0f}",
                _fmt_ms(o["ms"]),
                _fmt_ms(o["sample_ms"]),
                _fmt_ms(o["apply_restore_ms"]),
                _fmt_bytes(o["peak_bytes"]),
                _fmt_ms(d["ms"]) if d else "skipped",
                _fmt_bytes(d["peak_bytes"]) if d else "-",
                f"{d['flips_mean']:,.0f}" if d else "-",
                _fmt_ms(f["ms"]) if f else "skipped",
                _fmt_bytes(f["peak_bytes"]) if f else "-",
                _fmt_ratio(d["ms"], o["ms"]) if d else "-",
                _fmt_ratio(f["ms"], o["ms"]) if f else "-",
                "yes" if _row_ok(r) else "NO",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = sorted({r["dense_skipped"] for r in results if r.get("dense_skipped")})
    lines += [f"dense @ {n}" for n in notes]
    if pfi_note:
        lines.append(f"pytorchfi: skipped ({pfi_note})")
    return "\n".join(lines)


def _targets(results: list[dict[str, Any]]) -> tuple[list[str], bool]:
    out, met = [], True
    at_1m = [r for r in results if r["n_params"] == 1_000_000 and r.get("dense")]
    if at_1m:
        ratios = {r["ber"]: r["dense"]["ms"] / r["ours"]["ms"] for r in at_1m}
        worst = min(ratios, key=ratios.get)
        ok = ratios[worst] >= TARGET_RATIO_1M
        met &= ok
        out.append(
            f"dense/ours at 1M >= {TARGET_RATIO_1M:,.0f}x: {'MET' if ok else 'NOT MET'} "
            f"(worst {ratios[worst]:,.0f}x at BER {worst:.0e}, best {max(ratios.values()):,.0f}x)"
        )
    for r in results:
        if r["n_params"] == 100_000_000 and r["ber"] == 1e-7:
            o = r["ours"]
            ok_t, ok_m = o["ms"] < TARGET_100M_MS, o["peak_bytes"] < TARGET_100M_MB * 1e6
            met &= ok_t and ok_m
            out.append(
                f"100M @ 1e-7 inject+restore < {TARGET_100M_MS:g} ms: "
                f"{'MET' if ok_t else 'NOT MET'} ({o['ms']:.2f} ms median: sample "
                f"{o['sample_ms']:.2f} + apply/restore {o['apply_restore_ms']:.2f})"
            )
            out.append(
                f"100M @ 1e-7 extra memory < {TARGET_100M_MB:g} MB: "
                f"{'MET' if ok_m else 'NOT MET'} ({_fmt_bytes(o['peak_bytes'])})"
            )
    return out, met


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )
    if device.startswith("cuda"):
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M and 10M params, BER 1e-9/1e-6/1e-3")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--sizes", type=float, nargs="+", help="parameter counts (override)")
    ap.add_argument("--bers", type=float, nargs="+", help="bit error rates (override)")
    ap.add_argument("--width", type=int, default=1000, help="Linear blocks are width x width")
    ap.add_argument("--max-dense-params", type=float, default=10e6,
                    help="skip the dense baseline above this many parameters (default 10M)")
    ap.add_argument("--reps", type=int, default=21, help="max repetitions per point")
    ap.add_argument("--budget-s", type=float, default=5.0,
                    help="stop repeating a point after this long (min reps still run)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine.")
    sizes = [int(s) for s in (args.sizes or (SIZES_QUICK if args.quick else SIZES_FULL))]
    bers = args.bers or (BERS_QUICK if args.quick else BERS_FULL)
    pfi_note = _pytorchfi_status() if "pytorchfi" in args.methods else "not requested"
    machine = _machine(args.device)
    print(f"machine: {machine}\ndevice: {args.device}", file=sys.stderr)

    base = {
        "device": args.device, "width": args.width, "bers": bers, "reps": args.reps,
        "min_reps": 3, "min_reps_baseline": 1, "budget_s": args.budget_s, "seed": args.seed,
    }  # fmt: skip
    results: list[dict[str, Any]] = []
    last_dense: dict[str, Any] | None = None
    failures = []
    for n in sizes:
        per_method: dict[str, list[dict[str, Any]] | None] = {}
        skipped = None
        for method in METHODS:
            if method not in args.methods or (method == "pytorchfi" and pfi_note):
                per_method[method] = None
                continue
            if method == "dense" and n > args.max_dense_params:
                skipped = _dense_skip_reason(n, args.width, last_dense)
                per_method[method] = None
                print(f"  [dense {_fmt_params(n)}] {skipped}", file=sys.stderr)
                continue
            out = _spawn(dict(base, method=method, n_params=n))
            if "error" in out:
                failures.append(f"{method} {_fmt_params(n)}: {out['error']}")
                per_method[method] = None
                continue
            per_method[method] = out["rows"]
            if method == "dense":
                last_dense = dict(out["rows"][-1], n_params=n)
        if per_method.get("ours") is None:
            continue
        for i, ber in enumerate(bers):
            row: dict[str, Any] = {"n_params": n, "ber": ber}
            for method, rows in per_method.items():
                row[method] = rows[i] if rows else None
            row["dense_skipped"] = f"{_fmt_params(n)}: {skipped}" if skipped else None
            results.append(row)

    table = _table(results, None if pfi_note == "not requested" else pfi_note)
    target_lines, met = _targets(results)
    cmd = "python -m benchmarks.injection " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{machine}\ndevice {args.device}; command: {cmd}\n")
    print(table)
    print("\nms = median wall time of one inject+restore; mem = peak extra memory "
          f"({'GPU' if args.device.startswith('cuda') else 'host RSS'}); "
          "pfi = one single-weight declare_weight_fi (model deep copy); ok = exact restore, "
          "plausible flip count, PyTorchFI weight written and original untouched")
    if target_lines:
        print("\ntargets:\n  " + "\n  ".join(target_lines))
    for f in failures:
        print(f"FAILED: {f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine, "device": args.device, "command": cmd, "results": results,
                 "pytorchfi": pfi_note or "ok", "targets": target_lines, "failures": failures},
                indent=2,
            )
        )
    return 1 if failures or not all(_row_ok(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
