"""PyTorchFI-style neuron faults: a given value or bit at a given (layer, batch, c, h, w).

One-line equivalents of PyTorchFI's ``declare_neuron_fi`` and its random-neuron helpers
(``random_neuron_inj``, ``random_neuron_inj_batched``, ``random_inj_per_layer``), on the same
forward-hook machinery as :class:`~pytei_ray.ActivationInjector`: no model copy, every hook
removed on exit, the same record of what was injected, SBP / Clip / Ranger as mitigations.
A layer is a module name, or an int indexing the modules of ``layer_types`` in
``named_modules()`` order (PyTorchFI's ``layer_num``; default ``(nn.Conv2d,)`` as PyTorchFI's).
A fault is fixed: it hits the same word in every call, as PyTorchFI's do.
See docs/activations.md for the migration table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..faults.dtypes import dtype_name, layout_of
from ..faults.faultmap import TensorFaults
from ..faults.sampling import check_seed, rng_for
from .activations import ActivationHandle, _Source

__all__ = ["NeuronFault", "neuron_faults", "random_fault_per_layer", "random_neuron_fault",
           "random_neuron_fault_batched", "single_neuron_fault"]

Layer = str | int


@dataclass(frozen=True)
class NeuronFault:
    """One fixed fault in a layer's output.

    Attributes:
        layer: module name, or index into the modules of ``layer_types``.
        index: the full index into the output, batch first (e.g. ``(b, c, h, w)``); or
            ``(b, None)``: batch ``b`` at a position drawn (seeded, uniform) at the layer's first
            call; ``batch=None`` in place of ``b`` hits every sample.
        value: the new value of the word, or None.
        bit: the bit to flip (0 = least significant), or None. Exactly one of value / bit.
        location: faults with the same ``location`` key and a drawn position share it.
    """

    layer: Layer
    index: tuple[int | None, ...]
    value: float | None = None
    bit: int | None = None
    location: int = 0

    def __post_init__(self) -> None:
        if (self.value is None) == (self.bit is None):
            raise ValueError("Expected exactly one of `value` (new value) or `bit` (bit to "
                             f"flip), but got value={self.value!r}, bit={self.bit!r}.")
        if self.bit is not None and (isinstance(self.bit, bool) or not 0 <= self.bit < 64):
            raise ValueError(f"Expected argument `bit` to be an int in [0, 64), got {self.bit!r}.")
        if not self.index:
            raise ValueError("Expected `index` to hold at least the batch index, got ().")


def _layers(model: nn.Module, layer_types: tuple[type, ...]) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, layer_types)]
    if not names:
        raise ValueError(f"The model has no layer of types {[t.__name__ for t in layer_types]}.")
    return names


def _layer_name(model: nn.Module, layer: Layer, layer_types: tuple[type, ...]) -> str:
    if isinstance(layer, str):
        return layer
    names = _layers(model, layer_types)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(names):
        raise ValueError(
            f"Expected `layer` to be a module name or an int in [0, {len(names)}) (the "
            f"{[t.__name__ for t in layer_types]} layers), but got {layer!r}."
        )
    return names[layer]


class _Fixed(_Source):
    """Fixed faults per module; drawn positions are chosen at the module's first call."""

    def __init__(self, faults: dict[str, list[NeuronFault]], seed: int) -> None:
        self.by_module = faults
        self.seed = seed
        values = any(f.value is not None for fs in faults.values() for f in fs)
        self.unit = "element" if values else "bit"
        self.error_key = "NeuronFault"
        self._drawn: dict[tuple[str, int], tuple[int, ...]] = {}  # (module, location) -> pos

    def _position(self, module: str, f: NeuronFault, shape: tuple[int, ...]) -> tuple[int, ...]:
        per_sample = shape[1:]
        if f.index[1:] != (None,):
            if len(f.index) != len(shape):
                raise ValueError(
                    f"Neuron fault index {f.index} does not fit the output of module {module!r}."
                    f"\n  expected: {len(shape)} indices for shape {shape}\n  got: {len(f.index)}"
                )
            return tuple(int(i) for i in f.index[1:])  # type: ignore[arg-type]
        key = (module, f.location)
        if key not in self._drawn:
            rng = rng_for(self.seed, "neuron/v1", module, f.location, per_sample)
            self._drawn[key] = tuple(int(rng.integers(0, s)) for s in per_sample)
        return self._drawn[key]

    def faults(self, module, where, call, element, shape, dtype):
        fs = self.by_module.get(module, [])
        if element or not fs:
            return None
        lay = layout_of(dtype)
        per = int(np.prod(shape[1:], dtype=np.int64))
        entries: dict[int, tuple[int, int]] = {}  # flat word -> (and, xor); a later fault wins
        all_samples = None
        for f in fs:
            pos = self._position(module, f, shape)
            batch = f.index[0]
            if batch is not None and not 0 <= batch < shape[0]:
                raise ValueError(
                    f"Neuron fault batch index {batch} is out of range for the output of module "
                    f"{module!r} of shape {shape}."
                )
            if any(not 0 <= p < s for p, s in zip(pos, shape[1:])):
                raise ValueError(f"Neuron fault index {pos} is out of range for the output of "
                                 f"module {module!r} of shape {shape}.")
            if all_samples is None:
                all_samples = batch is None
            elif all_samples != (batch is None):
                raise ValueError(f"Faults of module {module!r} mix batch=None with batch indices;"
                                 " give all samples or one batch index each.")
            flat = int(np.ravel_multi_index(pos, shape[1:])) if shape[1:] else 0
            if batch is not None:
                flat += batch * per
            if f.bit is not None:
                if f.bit >= lay.width:
                    raise ValueError(f"Bit {f.bit} does not exist in the {dtype_name(dtype)} "
                                     f"output of module {module!r} ({lay.width} bits).")
                entries[flat] = (-1, lay.mask([f.bit]))
            else:
                word = torch.tensor([f.value], dtype=torch.float64).to(dtype)
                entries[flat] = (0, int(word.view(lay.int_dtype).item()))
        order = sorted(entries)
        index = np.asarray(order, dtype=np.int64)
        and_mask = np.asarray([entries[i][0] for i in order], dtype=lay.np_int)
        xor_mask = np.asarray([entries[i][1] for i in order], dtype=lay.np_int)
        tf = TensorFaults(f"{module}:{where}", dtype, shape[1:] if all_samples else shape, index,
                          and_mask, xor_mask, len(order))
        return tf, bool(all_samples)


def neuron_faults(model: nn.Module, faults: Iterable[NeuronFault], *,
                  layer_types: Sequence[type] = (nn.Conv2d,), mitigations: Sequence[Any] = (),
                  seed: int = 0) -> ActivationHandle:
    """Install fixed faults in layer outputs (PyTorchFI's ``declare_neuron_fi``).

    Returns the :class:`~pytei_ray.ActivationHandle` (a context manager removing the hooks).

    Example:
        >>> import torch
        >>> conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
        >>> with neuron_faults(conv, [NeuronFault(0, (0, 1, 2, 2), value=1e4)]), torch.no_grad():
        ...     float(conv(torch.zeros(1, 1, 8, 8))[0, 1, 2, 2])
        10000.0
    """
    types = tuple(layer_types)
    faults = list(faults)
    by_module: dict[str, list[NeuronFault]] = {}
    for f in faults:
        if not isinstance(f, NeuronFault):
            raise TypeError(f"Expected NeuronFault items, but got {f!r}.")
        by_module.setdefault(_layer_name(model, f.layer, types), []).append(f)
    if not by_module:
        raise ValueError("Expected at least one NeuronFault, but got none.")
    from .targets import resolve_modules

    modules = resolve_modules(model, sorted(by_module))
    return ActivationHandle(_Fixed(by_module, check_seed(seed)), model, modules, "output",
                            mitigations, record_positions=True)


def single_neuron_fault(model: nn.Module, layer: Layer, index: Sequence[int | None], *,
                        value: float | None = None, bit: int | None = None,
                        layer_types: Sequence[type] = (nn.Conv2d,),
                        mitigations: Sequence[Any] = ()) -> ActivationHandle:
    """One fault at ``index`` = ``(batch, c, h, w)`` of ``layer``'s output: a new ``value`` or
    a flipped ``bit``. ``batch=None`` hits every sample.

    Example:
        >>> import torch
        >>> lin, x = torch.nn.Sequential(torch.nn.Linear(4, 4)), torch.ones(2, 4)
        >>> clean = lin(x).detach()
        >>> with single_neuron_fault(lin, "0", (1, 2), bit=31) as h:  # flip the sign
        ...     out = lin(x).detach()
        >>> bool(out[1, 2] == -clean[1, 2]), int((out != clean).sum()), h.n_faults
        (True, 1, 1)
    """
    return neuron_faults(model, [NeuronFault(layer, tuple(index), value, bit)],
                         layer_types=layer_types, mitigations=mitigations)


def _draw(model: nn.Module, layer_types: Sequence[type], seed: int, what: str):
    names = _layers(model, tuple(layer_types))
    return names, rng_for(check_seed(seed), what, tuple(names))


def random_neuron_fault(model: nn.Module, *, batch_size: int = 1, low: float = -1.0,
                        high: float = 1.0, layer_types: Sequence[type] = (nn.Conv2d,),
                        seed: int = 0) -> ActivationHandle:
    """PyTorchFI's ``random_neuron_inj``: one random layer, batch element and position, set to
    a uniform value in ``[low, high)``."""
    names, rng = _draw(model, layer_types, seed, "random_neuron/v1")
    layer = names[int(rng.integers(len(names)))]
    fault = NeuronFault(layer, (int(rng.integers(batch_size)), None), float(rng.uniform(low, high)))
    return neuron_faults(model, [fault], seed=seed)


def random_neuron_fault_batched(model: nn.Module, batch_size: int, *, low: float = -1.0,
                                high: float = 1.0, random_location: bool = True,
                                layer_types: Sequence[type] = (nn.Conv2d,),
                                seed: int = 0) -> ActivationHandle:
    """PyTorchFI's ``random_neuron_inj_batched``: one fault per batch element, each with its own
    value; each at its own random layer and position (``random_location``, PyTorchFI's
    ``rand_loc``) or all at one random layer and position."""
    names, rng = _draw(model, layer_types, seed, "random_neuron_batched/v1")
    shared = names[int(rng.integers(len(names)))]
    faults = []
    for b in range(batch_size):
        layer = names[int(rng.integers(len(names)))] if random_location else shared
        faults.append(NeuronFault(layer, (b, None), float(rng.uniform(low, high)),
                                  location=b if random_location else 0))
    return neuron_faults(model, faults, seed=seed)


def random_fault_per_layer(model: nn.Module, batch_size: int = 1, *, low: float = -1.0,
                           high: float = 1.0, layer_types: Sequence[type] = (nn.Conv2d,),
                           seed: int = 0) -> ActivationHandle:
    """PyTorchFI's ``random_inj_per_layer``: in every layer one fault at a random position, all
    in one random batch element, each set to a uniform value in ``[low, high)``."""
    names, rng = _draw(model, layer_types, seed, "random_per_layer/v1")
    b = int(rng.integers(batch_size))
    faults = [NeuronFault(n, (b, None), float(rng.uniform(low, high))) for n in names]
    return neuron_faults(model, faults, seed=seed)
