"""Fixed cost per targeted call of the per-call fault streams "v1" and "v2" (sampling only).

    python -m benchmarks.call_stream                 # 20,000 calls per configuration
    python -m benchmarks.call_stream --calls 500     # a few seconds (the smoke test runs this)

Times what an activation or training hook pays per call to decide its faults, before anything is
written: ``v1`` hashes every call (SHA-256 twice) and builds a NumPy generator; ``v2``
(:class:`~pytei_ray.faults.callstream.CallStream`) mixes a per-site key with the call counter
(SplitMix64) and builds a generator only for a call that has a fault. The figure is the median
over 5 rounds of the mean time per call, in microseconds, for a CNN-sized activation
(8x64x32x32 float32) and an MLP-sized one (8x256), at several BERs and one fault per call.
Checked: both streams draw the same mean number of faults per call (within sampling noise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from pytei_ray import BitFlip
from pytei_ray.injection.activation_sources import _Sampled

SHAPES = [(8, 64, 32, 32), (8, 256)]
ERRORS = [("ber=1e-07", BitFlip(1e-7)), ("ber=1e-05", BitFlip(1e-5)),
          ("ber=0.001", BitFlip(1e-3)), ("n=1", BitFlip(n=1))]


def per_call_us(stream: str, error: BitFlip, shape: tuple[int, ...], calls: int,
                rounds: int) -> tuple[float, float]:
    """(median over rounds of the mean us per call, mean faults per call)."""
    src = _Sampled(error, seed=1, mode="transient", stream=stream)
    times, faults = [], []
    call = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            tf, _ = src.faults("layer", "output", call, 0, shape, torch.float32)
            faults.append(tf.n_sites)
            call += 1
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times), float(np.mean(faults))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'shape':<16} {'error':<10} {'v1 us/call':>11} {'v2 us/call':>11} {'v1/v2':>6} "
          f"{'faults/call v1':>15} {'v2':>8}")
    for shape in SHAPES:
        bits = 32 * int(np.prod(shape))
        for label, error in ERRORS:
            calls = args.calls if error.rate is None or error.rate * bits < 100 else \
                max(50, args.calls // 100)
            v1, f1 = per_call_us("v1", error, shape, calls, args.rounds)
            v2, f2 = per_call_us("v2", error, shape, calls, args.rounds)
            expected = bits * error.rate if error.rate is not None else error.n
            tol = 6 * np.sqrt(max(expected, 1e-9) / (calls * args.rounds)) + 1e-9
            if abs(f1 - expected) > tol or abs(f2 - expected) > tol:
                raise SystemExit(f"{shape} {label}: faults per call {f1:.4g} (v1), {f2:.4g} "
                                 f"(v2), expected {expected:.4g}")
            print(f"{'x'.join(map(str, shape)):<16} {label:<10} {v1:11.1f} {v2:11.1f} "
                  f"{v1 / v2:6.1f} {f1:15.4g} {f2:8.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
