"""What a job's hooks may know about the run: the :class:`BuildContext` and its artifact cache.

A model factory (or the data hook) that declares a parameter named ``ctx`` receives a
:class:`BuildContext`; plain zero-argument factories are called as before. The context's main
service is :meth:`BuildContext.artifact`: bytes computed once (a trained checkpoint, a
preprocessed split) and cached next to the results, in the results directory's artifacts folder
(:meth:`~pytei_ray.storage.ResultsStore.artifacts_root`), so every worker of the run, a resumed
run, and a later campaign writing to the same directory reuse them.

The store does the I/O: writes are atomic like the result parts (local disk: temporary name +
rename; S3/GCS: a single put), and the same code path serves local paths and ``s3://``/``gs://``
URIs (pyarrow.fs). Two workers producing the same key at once both write the same bytes
(producers must be deterministic), so the race is harmless.

The launcher puts the results location into the :class:`~pytei_ray.campaign.JobRef`; the
campaign built from that JobRef carries it (:func:`~pytei_ray.campaign.jobfile.results_location`),
and :func:`context_for` makes the context a
:class:`~pytei_ray.execution.worker.TrialWorker` uses when it is not given one explicitly.
"""

from __future__ import annotations

import inspect
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from pytei_ray.campaign.jobfile import results_location

__all__ = ["BuildContext", "accepts_ctx", "call_hook", "context_for"]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_memory: dict[str, bytes] = {}  # key -> bytes: artifacts of contexts without a location
_memory_lock = threading.Lock()


class BuildContext:
    """Run information handed to job hooks that ask for it (a ``ctx`` parameter).

    Args:
        results_uri: the results location of the run (local path, ``s3://...``, ``gs://...``);
            None: no location (artifacts are cached in this process only).

    Attributes:
        results_uri: as given.
        produced: keys this context computed (cache misses), in order.
        loaded: keys this context read from the cache (hits), in order.

    Example:
        >>> import tempfile
        >>> ctx = BuildContext(tempfile.mkdtemp())
        >>> ctx.artifact("answer.txt", lambda: b"42")
        b'42'
        >>> ctx.artifact("answer.txt", lambda: b"never called")
        b'42'
        >>> ctx.produced, ctx.loaded
        (['answer.txt'], ['answer.txt'])
    """

    def __init__(self, results_uri: str | os.PathLike[str] | None = None) -> None:
        self.results_uri = None if results_uri is None else os.fspath(results_uri)
        self.produced: list[str] = []
        self.loaded: list[str] = []
        self._store: Any = None  # the ResultsStore of results_uri, made on first use

    def __repr__(self) -> str:
        return f"BuildContext(results_uri={self.results_uri!r})"

    def __getstate__(self) -> dict[str, Any]:  # the store (a pyarrow filesystem) is rebuilt
        return {"results_uri": self.results_uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["results_uri"])

    # ---- locations -------------------------------------------------------------------------
    def _results(self) -> Any:
        if self._store is None:  # resolved once per context (pyarrow is imported only here)
            from pytei_ray.storage.store import ResultsStore

            self._store = ResultsStore(self.results_uri or "")
        return self._store

    def artifact_location(self, key: str) -> str | None:
        """Where ``key`` is (or would be) stored, for messages; None without a results location."""
        _check_key(key)
        if self.results_uri is None:
            return None
        return self._results().artifact_location(key)

    # ---- the cache -------------------------------------------------------------------------
    def artifact(self, key: str, produce: Callable[[], bytes], *, refresh: bool = False) -> bytes:
        """The bytes stored under ``key``, computing and storing them on first use.

        Args:
            key: file name inside the artifacts folder (letters, digits, ``_.+-``); make it a
                hash of everything that determines the bytes, so a changed input gets a new key.
            produce: computes the bytes (deterministically) when they are not stored yet.
            refresh: compute and store again even if stored (e.g. the stored copy is unusable).

        Returns:
            The stored or newly produced bytes.

        Raises:
            ValueError: invalid ``key``.
            TypeError: ``produce`` did not return bytes.
        """
        _check_key(key)
        if self.results_uri is None:
            with _memory_lock:
                data = None if refresh else _memory.get(key)
            if data is None:
                data = _checked(produce(), key)
                with _memory_lock:
                    _memory[key] = data
                self.produced.append(key)
            else:
                self.loaded.append(key)
            return data
        store = self._results()
        data = None if refresh else store.read_artifact(key)
        if data is not None:
            self.loaded.append(key)
            return data
        data = _checked(produce(), key)
        store.write_artifact(key, data)
        self.produced.append(key)
        return data


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"Expected an artifact key of letters, digits and `_.+-` (a file name), "
                         f"but got {key!r}.")


def _checked(data: object, key: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"Expected the producer of artifact {key!r} to return bytes, but got "
                        f"{type(data).__name__}.")
    return bytes(data)


def context_for(campaign: object) -> BuildContext | None:
    """A context for the hooks of ``campaign``, built from a :class:`~pytei_ray.campaign.JobRef`
    (its results location); None for a campaign made by hand."""
    bound, location = results_location(campaign)
    return BuildContext(location) if bound else None


def accepts_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` declares a parameter named ``ctx`` (``**kwargs`` alone does not count).

    Example:
        >>> accepts_ctx(lambda ctx=None: 1), accepts_ctx(lambda: 1)
        (True, False)
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call them plainly
        return False
    return any(p.name == "ctx" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in params)


def call_hook(fn: Callable[..., Any], ctx: BuildContext, *args: Any) -> Any:
    """``fn(*args, ctx=ctx)`` if ``fn`` accepts ``ctx`` (see :func:`accepts_ctx`), else
    ``fn(*args)``."""
    return fn(*args, ctx=ctx) if accepts_ctx(fn) else fn(*args)
