"""Extra time per forward of activation faults, on a ResNet-18-shaped CNN and an MLP.

    python -m benchmarks.activations                 # batch 8, 224 px, 2 threads
    python -m benchmarks.activations --toy           # a few seconds (the smoke test runs this)
    python -m benchmarks.activations --json out.json

Targets: the ``nn.Conv2d`` layers of the CNN (20, as PyTorchFI's default ``layer_types``) and the
``nn.Linear`` layers of the MLP. Per configuration, each repetition times one clean forward and
one forward with the faults (interleaved, so a load change hits both alike) and the figure is the
median of the paired differences ("extra"), beside the median clean forward:

* ``ber=p``: ``ActivationInjector(layers, BitFlip(p))``, transient: new faults over all output
  bits of every targeted layer at every forward (the hooks are installed once);
* ``1/layer``: ``ActivationInjector(layers, BitFlip(n=1))``: one new bit flip per layer per forward;
* ``... v1``: the same with ``stream="v1"`` (a hash and a NumPy generator per call, the stream
  of campaigns stored before ``"v2"``), to compare the fixed cost per call of the two streams;
* ``pfi-per-layer``: :func:`pytei_ray.random_fault_per_layer` (PyTorchFI's
  ``random_inj_per_layer``: one fixed random value per layer), declared anew for every forward as
  a PyTorchFI campaign does: declare + forward + remove;
* ``pytorchfi``: PyTorchFI 0.6.0's ``random_inj_per_layer`` + forward of its corrupted model
  (``declare_neuron_fi`` deep-copies the model each time; ``reset_current_layer()`` before the
  forward), when ``pytorchfi`` can be imported (``pip install --no-deps pytorchfi==0.6.0``).

"hooks ms" is the time spent inside the fault hooks alone per forward (timed by hooks around
them), a figure that does not drown in the noise of a shared machine as the difference does.

Checked: faults are counted (``faults/fwd``), and after all runs the model has no hook left and
its state checksum is unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytei_ray import ActivationInjector, BitFlip, random_fault_per_layer, state_checksum

BERS = [1e-7, 1e-5, 1e-3]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def resnet18(width: int = 64, classes: int = 1000) -> nn.Sequential:
    """torchvision's ResNet-18 layout (20 Conv2d, 1 Linear), built with torch.nn."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, mult in enumerate((1, 2, 4, 8)):
        cout = width * mult
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def mlp(width: int, depth: int = 4, d_in: int = 1024, classes: int = 1000) -> nn.Sequential:
    dims = [d_in] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _paired(model: nn.Module, x: torch.Tensor, faulty: Callable[[], Any], reps: int
            ) -> tuple[float, float]:
    """(median clean ms, median of paired faulty-minus-clean ms)."""
    clean, extra = [], []
    faulty()  # warm-up (first-call allocations, lazy sampling)
    for _ in range(reps):
        c = _time(lambda: model(x))
        f = _time(faulty)
        clean.append(c)
        extra.append(f - c)
    return statistics.median(clean), statistics.median(extra)


def _hook_ms(model: nn.Module, x: torch.Tensor, layers: type, reps: int) -> float:
    """Median time per forward spent in the fault hooks alone: a hook prepended now runs just
    before the fault hook (itself prepended earlier), one appended runs just after it."""
    spent: list[float] = []
    starts: list[float] = []
    handles = []
    for m in model.modules():
        if isinstance(m, layers):
            handles.append(m.register_forward_hook(
                lambda *a: starts.append(time.perf_counter()), prepend=True))
            handles.append(m.register_forward_hook(
                lambda *a: spent.append(time.perf_counter() - starts.pop())))
    per_forward = []
    for _ in range(reps):
        spent.clear()
        model(x)
        per_forward.append(sum(spent) * 1e3)
    for hd in handles:
        hd.remove()
    return statistics.median(per_forward)


def bench_model(name: str, model: nn.Module, x: torch.Tensor, layers: type, reps: int,
                pfi_layer_types: list[type] | None) -> list[dict[str, Any]]:
    model.eval()
    before = state_checksum(model)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for _ in range(2):
            model(x)
        configs: list[tuple[str, Any, str]] = [(f"ber={b:g}", BitFlip(b), "v2") for b in BERS]
        configs.append(("1/layer", BitFlip(n=1), "v2"))
        configs += [(f"{label} v1", error, "v1") for label, error, _ in configs]
        for label, error, stream in configs:
            inj = ActivationInjector(layers, error, seed=1, stream=stream)
            with inj.inject(model) as h:
                clean, extra = _paired(model, x, lambda: model(x), reps)
                hook_ms = _hook_ms(model, x, layers, reps)
            rows.append({"model": name, "config": label, "clean_ms": clean, "extra_ms": extra,
                         "hook_ms": hook_ms,
                         "faults_per_forward": h.n_faults / max(1, h.n_calls // _n_modules(h))})

        def ours_per_layer() -> None:
            with random_fault_per_layer(model, x.shape[0], layer_types=(layers,), seed=3):
                model(x)

        clean, extra = _paired(model, x, ours_per_layer, reps)
        rows.append({"model": name, "config": "pfi-per-layer", "clean_ms": clean,
                     "extra_ms": extra, "faults_per_forward": float(_count_layers(model, layers))})
        if pfi_layer_types is not None:
            rows.append(_bench_pytorchfi(name, model, x, pfi_layer_types, reps))
    if state_checksum(model) != before or any(
            m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        raise SystemExit(f"{name}: the model was not left as it was (hooks or weights changed)")
    return rows


def _n_modules(h: Any) -> int:
    return max(1, len(h.modules))


def _count_layers(model: nn.Module, layers: type) -> int:
    return sum(isinstance(m, layers) for m in model.modules())


def _bench_pytorchfi(name: str, model: nn.Module, x: torch.Tensor, layer_types: list[type],
                     reps: int) -> dict[str, Any]:
    from pytorchfi.core import fault_injection
    from pytorchfi.neuron_error_models import random_inj_per_layer

    shape = list(x.shape[1:])
    pfi = fault_injection(model, x.shape[0], input_shape=shape, layer_types=layer_types)

    def inject_and_run() -> None:
        corrupted = random_inj_per_layer(pfi)  # deep-copies the model
        pfi.reset_current_layer()
        corrupted(x)

    clean, extra = _paired(model, x, inject_and_run, reps)
    declare = statistics.median(_time(lambda: random_inj_per_layer(pfi)) for _ in range(3))
    return {"model": name, "config": "pytorchfi", "clean_ms": clean, "extra_ms": extra,
            "faults_per_forward": float(len(pfi.corrupt_layer)), "declare_ms": declare}


def _pytorchfi_status() -> str | None:
    try:
        import pytorchfi  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"pytorchfi not importable ({type(e).__name__}: {e})"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pixels", type=int, default=224)
    ap.add_argument("--mlp-width", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--no-pytorchfi", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.toy:
        args.batch, args.pixels, args.mlp_width, args.reps, args.threads = 2, 32, 64, 3, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pfi_note = None if not args.no_pytorchfi else "pytorchfi skipped (--no-pytorchfi)"
    pfi_note = pfi_note or _pytorchfi_status()
    cnn = resnet18(width=8 if args.toy else 64)
    x_cnn = torch.randn(args.batch, 3, args.pixels, args.pixels)
    net = mlp(args.mlp_width, d_in=1024)
    x_mlp = torch.randn(args.batch, 1024)
    rows = bench_model("resnet18", cnn, x_cnn, nn.Conv2d, args.reps,
                       None if pfi_note else [nn.Conv2d])
    rows += bench_model(f"mlp{args.mlp_width}", net, x_mlp, nn.Linear, args.reps,
                        None if pfi_note else [nn.Linear])
    print(f"batch {args.batch}, {args.pixels} px, {args.threads} threads, torch "
          f"{torch.__version__}, median of {args.reps} paired repetitions")
    print(f"{'model':<10} {'config':<14} {'clean ms':>9} {'extra ms':>9} {'extra %':>8} "
          f"{'hooks ms':>9} {'hooks %':>8} {'faults/fwd':>10}")
    for r in rows:
        pct = 100 * r["extra_ms"] / r["clean_ms"]
        hook = r.get("hook_ms")
        hooks = f"{hook:9.2f} {100 * hook / r['clean_ms']:7.2f}%" if hook is not None else \
            f"{'-':>9} {'-':>8}"
        print(f"{r['model']:<10} {r['config']:<14} {r['clean_ms']:9.2f} {r['extra_ms']:9.2f} "
              f"{pct:7.1f}% {hooks} {r['faults_per_forward']:10.1f}"
              + (f"  (declare {r['declare_ms']:.1f} ms)" if "declare_ms" in r else ""))
    if pfi_note:
        print(f"PyTorchFI: {pfi_note}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "pytorchfi": pfi_note}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
