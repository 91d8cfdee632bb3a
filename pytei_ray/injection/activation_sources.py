"""Where the faults of one activation call come from: sampled by an error model (transient or
permanent), with the record each call leaves. Used by :mod:`.activations` and :mod:`.neurons`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..faults.callstream import CallStream
from ..faults.dtypes import dtype_name, layout_of
from ..faults.faultmap import SiteInfo, TensorFaults, sample_fault_map
from ..faults.models import ErrorModel
from ..faults.sampling import stable_seed

MODES = ("transient", "permanent")
WHERE = ("output", "input")


@dataclass
class ActivationCall:
    """What one call of one targeted module got (one record per tensor element).

    Attributes:
        module: the module's name; ``where``: ``"output"`` or ``"input"``.
        call: 0-based index of the call of this module since the injection started.
        element: index of the tensor in a tuple/list output (0 for a plain tensor).
        shape, dtype: of the corrupted tensor.
        n_sampled: faults drawn (before mitigations such as SBP filtered them).
        n_faults: faults that reached the tensor (bits for bit models, words otherwise).
        n_words: words written.
        index: flat word indices (only with ``record_positions=True``): into the whole tensor,
            or into one sample when ``per_sample`` (permanent faults: every sample is hit there).
        per_sample: ``index`` is over the per-sample shape.
    """

    module: str
    where: str
    call: int
    element: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    n_sampled: int
    n_faults: int
    n_words: int
    index: np.ndarray | None = None
    per_sample: bool = False


def _check_choice(arg: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"Expected argument `{arg}` to be one of {list(choices)}, but got "
                         f"{value!r}.")
    return str(value)


class _Source:
    """Where the faults of one call come from: ``(TensorFaults, per_sample)`` or None (none)."""

    unit = "bit"
    error_key = ""

    def faults(self, module: str, where: str, call: int, element: int, shape: tuple[int, ...],
               dtype: torch.dtype) -> tuple[TensorFaults, bool] | None:
        raise NotImplementedError


_EMPTY: dict[torch.dtype, tuple[np.ndarray, np.ndarray]] = {}  # dtype -> (index, mask)


def _no_faults(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> TensorFaults:
    """A call's record when it drew no fault (shared read-only empty arrays)."""
    if dtype not in _EMPTY:
        _EMPTY[dtype] = (np.empty(0, np.int64), np.empty(0, layout_of(dtype).np_int))
    index, mask = _EMPTY[dtype]
    return TensorFaults(name, dtype, shape, index, mask, mask, 0)


class PermanentFaults:
    """Faults fixed over the per-sample shape of a tensor, drawn once per key and reused at
    every call (permanent faults: every sample of every batch is hit at the same positions).

    Args:
        error: the error model that draws them.
        what: how messages name them (``"Permanent activation faults"``).
        fix: what a message suggests instead (``"use mode='transient'"``).
    """

    def __init__(self, error: ErrorModel, what: str, fix: str) -> None:
        self.error, self.what, self.fix = error, what, fix
        self._fixed: dict[object, TensorFaults] = {}

    def get(self, key: object, seed_parts: tuple, name: str, module: str,
            shape: tuple[int, ...], dtype: torch.dtype, where: str = "") -> TensorFaults:
        """The faults of ``key``, drawn over ``shape[1:]`` on first use with the seed
        ``stable_seed(*seed_parts, shape[1:], dtype_name(dtype))`` (hashed then only).

        Raises:
            ValueError: a 0-d tensor (no batch dimension), or a per-sample shape or dtype other
                than the one the faults were drawn for.
        """
        if not shape:
            raise ValueError(f"{self.what} need a batch dimension, but module {module!r} gave a "
                             f"0-d tensor: {self.fix}.")
        tf = self._fixed.get(key)
        if tf is None:
            seed = stable_seed(*seed_parts, shape[1:], dtype_name(dtype))
            tf = sample_fault_map([SiteInfo(name, dtype, tuple(shape[1:]))], self.error,
                                  seed).tensors[0]
            self._fixed[key] = tf
        elif tf.shape != tuple(shape[1:]) or tf.dtype != dtype:
            raise ValueError(
                f"{self.what} of module {module!r}{where} are fixed over its per-sample shape, "
                "which changed between calls.\n"
                f"  expected: {dtype_name(tf.dtype)} (*, {', '.join(map(str, tf.shape))})\n"
                f"  got: {dtype_name(dtype)} {tuple(shape)}\n"
                f"Feed batches of one per-sample shape, or {self.fix}.")
        return tf


class _Sampled(_Source):
    """Faults drawn by an error model: new ones every call, or fixed per-sample positions."""

    def __init__(self, error: ErrorModel, seed: int, mode: str, stream: str = "v1") -> None:
        self.error, self.seed, self.mode = error, seed, mode
        self.unit, self.error_key = error.unit, error.key()
        self._fixed = PermanentFaults(error, "Permanent activation faults",
                                      "use mode='transient'")  # per (module, where, element)
        self._stream = CallStream(error, seed, "activation") if stream == "v2" else None
        self._keys: dict[tuple, int] = {}  # v2: (module, where, element, shape, dtype) -> key

    def faults(self, module, where, call, element, shape, dtype):
        name = f"{module}:{where}" + (f"[{element}]" if element else "")
        if self.mode == "transient" and self._stream is not None:
            site = (module, where, element, shape, dtype)
            key = self._keys.get(site)
            if key is None:
                key = self._keys[site] = self._stream.key(module, where, element, shape,
                                                          dtype_name(dtype))
            tf = self._stream.sample(key, (call,), SiteInfo(name, dtype, shape))
            return (tf or _no_faults(name, dtype, shape)), False
        if self.mode == "transient":
            seed = stable_seed(self.seed, "activation/v1", module, where, call, element, shape,
                               dtype_name(dtype))
            tf = sample_fault_map([SiteInfo(name, dtype, shape)], self.error, seed).tensors[0]
            return tf, False
        parts = (self.seed, "activation-permanent/v1", module, where, element)
        return self._fixed.get((module, where, element), parts, name, module, shape, dtype,
                               f" ({where})"), True
