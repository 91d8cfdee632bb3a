"""The state of one application of a fault map: what was written, how to undo it, what changed.

:class:`InjectionHandle` is what :func:`~pytei_ray.injection.apply.apply_faults` returns (a
context manager; ``restore()`` writes the original words back), :class:`AppliedFaults` what it
gives inside ``with`` (reads like the applied :class:`~pytei_ray.faults.FaultMap`, plus the
words that changed and the NaN/Inf produced). A ``FaultMap`` keeps no state of its
applications (DESIGN decision 10): it lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..faults.dtypes import layout_of
from ..faults.faultmap import FaultMap, FaultSummary, TensorFaults
from .targets import Site

__all__ = ["AppliedFaults", "InjectionHandle"]


class _Write:
    """One tensor's applied faults: enough to restore it and to report what changed.

    ``flat``/``old``/``new``/``idx`` are numpy arrays for CPU tensors (``flat`` is a zero-copy
    numpy view of the words) and torch tensors on the tensor's device otherwise.
    """

    def __init__(
        self,
        site: Site,
        faults: TensorFaults,
        flat: Any,
        old: Any,
        new: Any,
        idx: Any,
        original: torch.Tensor | None,
    ) -> None:
        self.site = site
        self.faults = faults
        self.flat = flat  # the flat integer view written through (None for quantized sites)
        self.old = old  # original words at idx
        self.new = new  # faulty words written
        self.idx = idx  # flat indices
        self.original = original  # quantized sites: the original quantized weight object
        self._nonfinite: int | None = None

    def restore(self) -> None:
        if self.original is not None:
            _set_quantized(self.site, self.original)
        elif isinstance(self.flat, np.ndarray):
            self.flat[self.idx] = self.old
        else:
            self.flat.index_copy_(0, self.idx, self.old)

    @property
    def nonfinite(self) -> int | None:
        """NaN/Inf values among the written words (computed on first use; None for integers)."""
        dtype = self.faults.dtype
        if not dtype.is_floating_point:
            return None
        if self._nonfinite is None:
            new = torch.from_numpy(self.new) if isinstance(self.new, np.ndarray) else self.new
            values = new.view(dtype)
            if values.element_size() == 1:  # float8: isfinite has no kernel; the cast keeps NaN/Inf
                values = values.float()
            self._nonfinite = int((~torch.isfinite(values)).sum())
        return self._nonfinite

    def changed(self) -> int | torch.Tensor:
        """Words whose new value differs from the old one, compared as integers (so exact, NaN
        payloads included): an int for numpy words, a 0-d tensor on the device otherwise (no
        synchronization here; the caller sums and reads them once)."""
        if isinstance(self.old, np.ndarray):
            return int(np.count_nonzero(self.old != self.new))
        return (self.old != self.new).sum()

    def words(self) -> tuple[np.ndarray, np.ndarray]:
        """(old, new) words as numpy arrays."""
        if isinstance(self.old, np.ndarray):
            return self.old, self.new
        return self.old.cpu().numpy(), self.new.cpu().numpy()


def _set_quantized(site: Site, weight: torch.Tensor) -> None:
    mod = site.module
    assert mod is not None
    if hasattr(mod, "set_weight_bias"):
        bias = mod.bias() if callable(getattr(mod, "bias", None)) else None
        mod.set_weight_bias(weight, bias)
    else:
        mod.set_weight(weight)
    site.tensor = weight


class AppliedWrites:
    """The words one application wrote, and the statistics computed from them.

    It holds no reference to the map or the handle, so nothing forms a reference cycle and the
    arrays are freed as soon as the caller drops them (not at the next garbage collection).
    """

    def __init__(self, writes: list[_Write]) -> None:
        self.writes = writes
        self._n_words_changed: int | None = None  # cache of n_words_changed

    @property
    def n_nonfinite(self) -> int:
        """NaN/Inf words produced (floating-point tensors only)."""
        return sum(w.nonfinite or 0 for w in self.writes)

    @property
    def n_words_changed(self) -> int:
        """Written words whose value actually changed (computed on first use, then cached).

        A write can leave a word as it was: a stuck-at bit that already holds its value, a
        random value equal to the old one. When this is 0 the model is bit-identical to the
        fault-free one, so evaluating it would only reproduce the golden run. Exact (the words
        are compared as integers) and cheap: O(words written), one synchronization per
        accelerator at most.
        """
        if self._n_words_changed is None:
            host = 0
            on_device: dict[torch.device, list[torch.Tensor]] = {}  # device -> 0-d counts
            for w in self.writes:
                c = w.changed()
                if isinstance(c, int):
                    host += c
                else:
                    on_device.setdefault(c.device, []).append(c)
            for counts in on_device.values():
                host += int(torch.stack(counts).sum())  # the one sync of this device
            self._n_words_changed = host
        return self._n_words_changed

    def per_tensor_stats(self) -> dict[str, dict[str, int]]:
        """Bits actually changed and NaN/Inf produced, per tensor (synchronizes with the device)."""
        stats = {}
        for w in self.writes:
            lay = layout_of(w.faults.dtype)
            old, new = w.words()
            stats[w.faults.name] = {
                "n_bits_changed": int(np.bitwise_count((old ^ new).view(lay.np_uint)).sum()),
                "n_nonfinite": w.nonfinite or 0,
            }
        return stats


class AppliedFaults:
    """The faults of one application: the applied :class:`FaultMap` plus what writing it did.

    What ``with injector.inject(model) as faults:`` (and ``with fmap.apply(model) as faults:``)
    gives: it reads like the map (``n_faults``, ``n_words``, ``n_targeted``, ``tensors``,
    ``save`` ... are the map's, after mitigations filtered it), and adds the statistics of the
    application, which stay valid after the ``with`` block: ``n_nonfinite``,
    ``n_words_changed``, ``per_tensor_stats()`` and a :meth:`summary` with bits changed and
    NaN/Inf per tensor. The map itself (:attr:`map`) keeps no state of it.

    Example:
        >>> import torch
        >>> from pytei_ray import BitFlip, Injector
        >>> with Injector(error=BitFlip(n=3), seed=1).inject(torch.nn.Linear(8, 8)) as faults:
        ...     pass
        >>> faults.n_faults, faults.summary().totals["n_bits_changed"]
        (3, 3)
    """

    __slots__ = ("map", "_applied", "__weakref__")

    def __init__(self, faults: FaultMap, applied: AppliedWrites) -> None:
        self.map = faults  # the applied (mitigation-filtered) map
        self._applied = applied

    def __getattr__(self, name: str) -> Any:
        if name in AppliedFaults.__slots__:  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.map, name)

    @property
    def n_nonfinite(self) -> int:
        """NaN/Inf words produced by this application (floating-point tensors only)."""
        return self._applied.n_nonfinite

    @property
    def n_words_changed(self) -> int:
        """Written words whose value changed (see :attr:`InjectionHandle.n_words_changed`)."""
        return self._applied.n_words_changed

    def per_tensor_stats(self) -> dict[str, dict[str, int]]:
        """Bits actually changed and NaN/Inf produced, per tensor (synchronizes with the device)."""
        return self._applied.per_tensor_stats()

    def summary(self) -> FaultSummary:
        """Per-tensor faults, words hit, bits changed and NaN/Inf produced; ``str()`` is a table."""
        return self.map.summary(applied=self._applied.per_tensor_stats())

    def __repr__(self) -> str:
        return (f"AppliedFaults(n_faults={self.map.n_faults}, n_words={self.map.n_words}, "
                f"error={self.map.error!r})")


class InjectionHandle:
    """Faults written into a model; ``restore()`` (or leaving the ``with`` block) undoes them.

    Entering the context returns the :class:`AppliedFaults` (the applied map and the
    statistics of this application); :attr:`faults` is the applied :class:`FaultMap` itself.
    """

    def __init__(self, faults: FaultMap, writes: list[_Write], hooks: list[Any]) -> None:
        self.faults = faults
        self._applied = AppliedWrites(writes)
        self._hooks = hooks  # handles of mitigation hooks, removed on restore
        self.restored = False

    def restore(self) -> None:
        """Write back every original word and remove mitigation hooks (idempotent)."""
        if self.restored:
            return
        errors = []
        for h in reversed(self._hooks):
            try:
                h.remove()
            except Exception as e:  # keep restoring the weights regardless
                errors.append(e)
        with torch.no_grad():
            for w in reversed(self._applied.writes):
                w.restore()
        self.restored = True
        if errors:
            raise errors[0]

    remove = restore  # RemovableHandle-style alias

    def __enter__(self) -> AppliedFaults:
        return self.applied

    @property
    def applied(self) -> AppliedFaults:
        """The applied map with the statistics of this application."""
        return AppliedFaults(self.faults, self._applied)

    def summary(self) -> FaultSummary:
        """Per-tensor statistics of this application (see :meth:`AppliedFaults.summary`)."""
        return self.applied.summary()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    @property
    def n_nonfinite(self) -> int:
        """NaN/Inf words produced by this application (floating-point tensors only)."""
        return self._applied.n_nonfinite

    @property
    def n_words_changed(self) -> int:
        """Words this application actually changed (0: the model holds its original values).

        Example:
            >>> import torch
            >>> from pytei_ray import FaultMap, Injector, StuckAt
            >>> lin = torch.nn.Linear(4, 4)
            >>> with torch.no_grad():
            ...     _ = lin.weight.fill_(-1.0)  # sign bit already 1 in every word
            >>> h = Injector(["weight"], StuckAt(n=3, value=1, bits="sign")).inject(lin)
            >>> h.faults.n_faults, h.n_words_changed
            (3, 0)
            >>> h.restore()
        """
        return self._applied.n_words_changed

    def per_tensor_stats(self) -> dict[str, dict[str, int]]:
        """Bits actually changed and NaN/Inf produced, per tensor (synchronizes with the device)."""
        return self._applied.per_tensor_stats()
