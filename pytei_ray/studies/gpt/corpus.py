"""A text corpus that ships with Python: the standard library's own source files, as bytes.

The selection is a pinned list of top-level pure-Python modules present in every CPython from
3.10 to 3.13 (:data:`STDLIB_MODULES`; checked against 3.10.13, 3.11.7, 3.12.1 and 3.13.0), read
in sorted order from the running installation (``sysconfig.get_paths()["stdlib"]``). The files'
contents differ between Python versions, so the corpus carries a fingerprint (SHA-256 of every
file's name and bytes, and of the split): a checkpoint keyed on it is never reused by a
different Python. A pinned module missing from an installation is left out and listed in
:attr:`ByteCorpus.missing` (the fingerprint changes with it).

Files are split into train and validation by file (a seeded ranking of the names, validation
filled up to a fraction of the bytes), so no validation text is ever seen in training. Training
batches are a pure function of ``(seed, step)`` (:meth:`ByteCorpus.batch`): a training window
that starts at step ``s`` sees the same batches whatever ran before it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass

import torch

from pytei_ray.faults.sampling import rng_for, stable_seed

__all__ = ["STDLIB_MODULES", "ByteCorpus", "CorpusSpec", "load_corpus"]

#: Top-level pure-Python modules of the standard library common to CPython 3.10-3.13, minus
#: generated (``_sysconfigdata*``), shim (``sre_*``) and joke (``this``, ``antigravity``) files
#: and the AIX/macOS helpers.
STDLIB_MODULES: tuple[str, ...] = (
    '__future__', '_collections_abc', '_compat_pickle', '_compression', '_markupbase',
    '_py_abc', '_pydecimal', '_pyio', '_sitebuiltins', '_strptime', '_threading_local',
    '_weakrefset', 'abc', 'argparse', 'ast', 'base64', 'bdb', 'bisect', 'bz2', 'cProfile',
    'calendar', 'cmd', 'code', 'codecs', 'codeop', 'colorsys', 'compileall', 'configparser',
    'contextlib', 'contextvars', 'copy', 'copyreg', 'csv', 'dataclasses', 'datetime',
    'decimal', 'difflib', 'dis', 'doctest', 'enum', 'filecmp', 'fileinput', 'fnmatch',
    'fractions', 'ftplib', 'functools', 'genericpath', 'getopt', 'getpass', 'gettext', 'glob',
    'graphlib', 'gzip', 'hashlib', 'heapq', 'hmac', 'imaplib', 'inspect', 'io', 'ipaddress',
    'keyword', 'linecache', 'locale', 'lzma', 'mailbox', 'mimetypes', 'modulefinder', 'netrc',
    'ntpath', 'nturl2path', 'numbers', 'opcode', 'operator', 'optparse', 'os', 'pdb', 'pickle',
    'pickletools', 'pkgutil', 'platform', 'plistlib', 'poplib', 'posixpath', 'pprint',
    'profile', 'pstats', 'pty', 'py_compile', 'pyclbr', 'pydoc', 'queue', 'quopri', 'random',
    'reprlib', 'rlcompleter', 'runpy', 'sched', 'secrets', 'selectors', 'shelve', 'shlex',
    'shutil', 'signal', 'site', 'smtplib', 'socket', 'socketserver', 'ssl', 'stat',
    'statistics', 'string', 'stringprep', 'struct', 'subprocess', 'symtable', 'tabnanny',
    'tarfile', 'tempfile', 'textwrap', 'threading', 'timeit', 'token', 'tokenize', 'trace',
    'traceback', 'tracemalloc', 'tty', 'turtle', 'types', 'typing', 'uuid', 'warnings', 'wave',
    'weakref', 'webbrowser', 'zipapp', 'zipimport'
)

#: Byte written between two files of a split (it never occurs in Python source).
SEPARATOR = b"\x00"


@dataclass(frozen=True)
class CorpusSpec:
    """Which files, and how they are split.

    Args:
        modules: module names (``<name>.py`` under ``root``), read in sorted order.
        val_fraction: share of the bytes that goes to validation (whole files).
        split_seed: seed of the file ranking that decides the split.
        root: folder of the files (None: the running Python's standard library).

    Example:
        >>> spec = CorpusSpec()
        >>> len(spec.modules), spec.val_fraction
        (137, 0.1)
    """

    modules: tuple[str, ...] = STDLIB_MODULES
    val_fraction: float = 0.1
    split_seed: int = 0
    root: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(sorted(set(self.modules))))
        if len(self.modules) < 2:
            raise ValueError(f"Expected at least 2 modules (one for train, one for "
                             f"validation), but got {list(self.modules)}.")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"Expected `val_fraction` in (0, 1), but got "
                             f"{self.val_fraction!r}.")

    def folder(self) -> str:
        """The folder the files are read from."""
        return self.root if self.root is not None else sysconfig.get_paths()["stdlib"]


@dataclass(frozen=True, eq=False)
class ByteCorpus:
    """Train and validation bytes (``uint8`` tensors, files joined by :data:`SEPARATOR`).

    Attributes:
        train, validation: the bytes of each split.
        train_files, val_files: the files of each split (sorted names).
        missing: pinned modules this installation lacks.
        fingerprint: SHA-256 (hex) of the split and every file's name and bytes.
    """

    train: torch.Tensor
    validation: torch.Tensor
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    missing: tuple[str, ...] = ()
    fingerprint: str = ""

    def to(self, device: torch.device | str) -> ByteCorpus:
        """The same corpus with both tensors on ``device``."""
        return ByteCorpus(self.train.to(device), self.validation.to(device), self.train_files,
                          self.val_files, self.missing, self.fingerprint)

    def batch(self, seed: int, step: int, batch_size: int, context: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-byte targets (``(batch_size, context)`` int64 each) of training step
        ``step``: windows at offsets drawn by a generator keyed by ``(seed, step)`` alone."""
        _check_window(len(self.train), context, "train")
        offsets = rng_for("gpt-batch", seed, step).integers(
            0, len(self.train) - context, size=batch_size)
        return self._windows(self.train, torch.from_numpy(offsets), context)

    def eval_windows(self, n: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fixed validation windows, evenly spaced over the split (no randomness)."""
        _check_window(len(self.validation), context, "validation")
        last = len(self.validation) - context - 1
        offsets = torch.tensor([round(i * last / max(n - 1, 1)) for i in range(n)])
        return self._windows(self.validation, offsets, context)

    @staticmethod
    def _windows(data: torch.Tensor, offsets: torch.Tensor, context: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = offsets.to(data.device)[:, None] + torch.arange(context + 1, device=data.device)
        tokens = data[idx].long()
        return tokens[:, :-1], tokens[:, 1:]

    @functools.cached_property
    def unigram(self) -> float:
        """Cross-entropy (nats per byte) of the validation bytes under the train bytes'
        frequencies (add-one smoothed): the loss of a model that ignores context."""
        counts = torch.bincount(self.train.cpu().long(), minlength=256).double() + 1.0
        logp = (counts / counts.sum()).log()
        val = torch.bincount(self.validation.cpu().long(), minlength=256).double()
        return float(-(val * logp).sum() / val.sum())

    def unigram_loss(self) -> float:
        """The :attr:`unigram` baseline (computed once per corpus object)."""
        return self.unigram

    @staticmethod
    def uniform_loss() -> float:
        """``ln 256``: the loss of a model that guesses every byte uniformly."""
        return math.log(256)


def _check_window(n: int, context: int, name: str) -> None:
    if n < context + 2:
        raise ValueError(f"The {name} split has {n} bytes, fewer than a window of context "
                         f"{context} needs ({context + 2}); add files or lower the context.")


def load_corpus(spec: CorpusSpec | None = None) -> ByteCorpus:
    """Read and split the corpus of ``spec`` (cached per process: the files are read once).

    Raises:
        FileNotFoundError: none of the modules exist under the folder.
    """
    return _load(spec or CorpusSpec())


@functools.lru_cache(maxsize=4)
def _load(spec: CorpusSpec) -> ByteCorpus:
    folder = spec.folder()
    texts: dict[str, bytes] = {}
    missing = []
    for name in spec.modules:
        path = os.path.join(folder, f"{name}.py")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                texts[name] = f.read()
        else:
            missing.append(name)
    if len(texts) < 2:
        raise FileNotFoundError(f"Expected the modules' source files under {folder!r} (the "
                                f"standard library of this Python), but found "
                                f"{len(texts)} of {len(spec.modules)}; pass `root` to read "
                                f"another folder.")
    # validation: files in a seeded order of their names until val_fraction of the bytes
    ranked = sorted(texts, key=lambda n: (stable_seed("gpt-corpus-split", spec.split_seed, n),
                                          n))
    target = spec.val_fraction * sum(len(t) for t in texts.values())
    val, val_bytes = set(), 0
    for name in ranked[:-1]:  # at least one file stays in train
        if val_bytes >= target:
            break
        val.add(name)
        val_bytes += len(texts[name])
    train_files = tuple(n for n in texts if n not in val)
    val_files = tuple(n for n in texts if n in val)
    h = hashlib.sha256(f"split {spec.val_fraction!r} {spec.split_seed}\n".encode())
    for name in texts:
        h.update(f"{name} {'val' if name in val else 'train'} {len(texts[name])}\n".encode())
        h.update(texts[name])
    return ByteCorpus(_join(texts, train_files), _join(texts, val_files), train_files,
                      val_files, tuple(missing), h.hexdigest())


def _join(texts: dict[str, bytes], names: tuple[str, ...]) -> torch.Tensor:
    data = bytearray(SEPARATOR.join(texts[n] for n in names))
    if not data:
        return torch.zeros(0, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8).clone()  # owns its memory
