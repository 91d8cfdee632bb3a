"""What every study shares: its eval data, the torch thread setting, checkpoints in the cache.

A study trains its model once and caches the checkpoint as an artifact of the results
directory (:meth:`~pytei_ray.execution.context.BuildContext.artifact`): the key hashes what
determines the weights (:func:`checkpoint_key`), the bytes are ``{"state_dict", "meta"}``
(:func:`checkpoint_bytes`), and whoever builds the model next loads it (:func:`trained_or_cached`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import torch

from pytei_ray.campaign.hashing import stable_sha256

__all__ = ["EvalData", "checkpoint_bytes", "checkpoint_key", "checkpoint_payload",
           "load_checkpoint", "torch_threads", "trained_or_cached"]

Split = TypeVar("Split")
Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class EvalData(Generic[Split]):
    """What each worker holds per model: the test split (metrics) and validation (Ranger).

    Example:
        >>> data = EvalData(torch.zeros(2), torch.ones(1)).to("cpu")
        >>> data.test.shape, data.validation.shape
        (torch.Size([2]), torch.Size([1]))
    """

    test: Split
    validation: Split

    def to(self, device: torch.device | str) -> EvalData[Split]:
        """Both splits on ``device`` (the worker moves the data next to its replica)."""
        return EvalData(self.test.to(device), self.validation.to(device))  # type: ignore[attr-defined]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def checkpoint_key(ident: Mapping[str, Any]) -> str:
    """16 hex digits of the hash of ``ident`` (everything that determines the weights).

    The JSON keeps ``json.dumps``'s default separators: cached checkpoints are named by it.

    Example:
        >>> checkpoint_key({"seed": 0}), len(checkpoint_key({"seed": 1}))
        ('de7d7744ccd7722e', 16)
    """
    return stable_sha256(dict(ident), compact=False).hexdigest()[:16]


def checkpoint_payload(
    state_dict: dict[str, torch.Tensor], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint format, ``{"state_dict", "meta"}`` with CPU tensors, for ``torch.save``."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    }


def checkpoint_bytes(state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """A checkpoint (:func:`checkpoint_payload`) as the bytes of a ``torch.save`` file."""
    buf = io.BytesIO()
    torch.save(checkpoint_payload(state_dict, meta), buf)
    return buf.getvalue()


def load_checkpoint(
    path: str | Path | BinaryIO | bytes, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint (a file, an open binary file, or its bytes) with
    ``torch.load(weights_only=True)``.

    Returns:
        ``(state_dict, meta)``.
    """
    if isinstance(path, bytes):
        path = io.BytesIO(path)
    source = path if hasattr(path, "read") else Path(path)
    payload = torch.load(source, map_location=map_location, weights_only=True)
    return payload["state_dict"], payload["meta"]


@contextmanager
def _one_trainer(ctx: Any, key: str) -> Iterator[None]:
    """An exclusive lock file next to a local artifact while it is looked up or produced (the
    workers of a campaign prepare at once, and would each train the same model); no lock for
    remote locations or platforms without ``fcntl`` (each worker may then train)."""
    locate = getattr(ctx, "artifact_location", None)
    where = locate(key) if callable(locate) else None
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None  # type: ignore[assignment]
    if where is None or "://" in where or fcntl is None:
        yield
        return
    Path(where).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{where}.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def trained_or_cached(ctx: Any, key: str, train_bytes: Callable[[], bytes],
                      load: Callable[[bytes], Loaded]) -> Loaded:
    """What ``load`` makes of artifact ``key`` of ``ctx`` (a model; for the GPT study a model,
    its optimizer state and its step), trained (and stored) first when it is not there;
    ``ctx=None``: trained now, nothing cached. A stored copy that does not load (e.g. torn by
    hand) is trained and stored again."""
    if ctx is None:
        return load(train_bytes())
    with _one_trainer(ctx, key):  # two workers of one machine train once: the second loads
        data = ctx.artifact(key, train_bytes)
    try:
        return load(data)
    except Exception:  # an unusable stored copy: train and store again
        return load(ctx.artifact(key, train_bytes, refresh=True))
