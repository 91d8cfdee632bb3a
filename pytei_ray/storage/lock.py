"""One launcher per results directory: a kernel lock on local disk, a lease on object stores.

**Local disk** (:class:`LocalLock`): ``DIR/_lock`` is locked with ``fcntl.flock``. The kernel
releases the lock when its holder exits in any way (``kill -9`` included), so a crashed launcher
never blocks the next one, and no "is that pid alive?" guess is involved. The file holds the
holder's host and pid, for the refusal message only. Guarantee: two launchers on hosts that share
the file through a filesystem honouring ``flock`` (local disks; NFSv4 on Linux) never write at once.

**Object stores** (:class:`LeaseLock`, ``s3://``, ``gs://``): ``DIR/_lock`` is a small JSON object
(owner id, host, pid, heartbeat time) that a background thread rewrites every ``ttl / 4`` seconds
while the launcher runs, and that is deleted on exit. A launcher finding a lease whose heartbeat is
younger than ``ttl`` (default 60 s, ``PYTEI_RAY_LEASE_SECONDS``) refuses to start; an older one
belongs to a dead launcher and is taken over. **This is best effort**: pyarrow's S3/GCS API has
no atomic create-if-absent (no conditional put), so two launchers starting within the same
moment can both write a lease. Each reads the lease back after a short settle time and only
the one whose write won proceeds; the loser stops before any work, but a store that serves a
stale read can still let both in. A launcher that finds its lease taken over (e.g. it was
paused past ``ttl``) stops writing parts. Clocks of the hosts must agree to well within
``ttl``. For hard exclusion on an object store, run one launcher per directory by convention.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from pytei_ray.errors import ResultsDirError

__all__ = ["LocalLock", "LeaseLock", "lease_seconds"]


def lease_seconds() -> float:
    """The object-store lease's time to live: ``PYTEI_RAY_LEASE_SECONDS`` or 60."""
    text = os.environ.get("PYTEI_RAY_LEASE_SECONDS", "60")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ResultsDirError(f"Expected PYTEI_RAY_LEASE_SECONDS to be a number of seconds > 0, "
                              f"but got {text!r}.")
    return value


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"


class LocalLock:
    """``flock`` on ``path`` (created if missing), held until :meth:`release` or process exit.

    Args:
        path: the lock file.
        location: the results directory, for messages.
    """

    def __init__(self, path: str, location: str) -> None:
        self.path, self.location = path, location
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ResultsDirError` naming the holder."""
        import fcntl

        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise ResultsDirError(
                    f"Another launcher is writing to {self.location} ({_holder_text(holder)}).\n"
                    "Wait for it to finish, or stop it; its lock is released the moment it "
                    "exits, and then the same command resumes.") from None
            # the file may have been unlinked by a releasing holder between open and flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_me()).encode(), 0)
                self._fd = fd
                return
            os.close(fd)
        raise ResultsDirError(f"Could not take the lock {self.path} (it kept changing); retry.")

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        """Delete the lock file and release the lock (unlink first, so no one locks a file
        that is about to disappear without noticing: see the inode check in :meth:`acquire`)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


class LeaseLock:
    """A heartbeat lease object on a pyarrow filesystem (see the module docstring for what it
    guarantees and what it cannot).

    Args:
        fs: the filesystem.  path: the lease object's path.  location: for messages.
        ttl: seconds after its last heartbeat that a lease counts as abandoned.
        settle: seconds to wait before reading a freshly written lease back.
    """

    def __init__(self, fs: Any, path: str, location: str, ttl: float | None = None,
                 settle: float = 0.5) -> None:
        self.fs, self.path, self.location = fs, path, location
        self.ttl = lease_seconds() if ttl is None else float(ttl)
        self.settle = settle
        self.owner = uuid.uuid4().hex
        self.lost = False  # set when another launcher took the lease over while we held it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(self.path).type != pafs.FileType.File:
            return None
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = json.loads(f.read() or b"null")
        except (OSError, ValueError):
            return {}  # unreadable: treat as a lease of unknown age
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        record = dict(_me(), owner=self.owner, heartbeat=time.time(), ttl=self.ttl)
        with self.fs.open_output_stream(self.path) as out:
            out.write(json.dumps(record).encode())

    def _refuse(self, holder: dict[str, Any], age: float | None) -> ResultsDirError:
        seen = f"last heartbeat {age:.0f} s ago" if age is not None else "heartbeat unknown"
        return ResultsDirError(
            f"Another launcher is writing to {self.location} ({_holder_text(holder)}, {seen}; "
            f"a lease counts as abandoned {self.ttl:.0f} s after its last heartbeat).\n"
            "Wait for it to finish. If it died, run the same command again after that time, or "
            f"delete {self.location.rstrip('/')}/{os.path.basename(self.path)} if you are sure "
            "no launcher is running.")

    def acquire(self) -> None:
        """Take the lease, or raise :class:`ResultsDirError` naming the holder."""
        holder = self._read()
        if holder is not None:
            beat = holder.get("heartbeat")
            age = time.time() - beat if isinstance(beat, (int, float)) else None
            if age is None or age < self.ttl:
                if holder:  # an unreadable/partial lease ({}) is taken over at once
                    raise self._refuse(holder, age)
        try:
            self._write()
        except OSError as exc:
            raise ResultsDirError(f"Cannot write to the results location {self.location}: "
                                  f"{exc}") from exc
        time.sleep(self.settle)
        again = self._read()
        if not again or again.get("owner") != self.owner:  # a concurrent launcher won
            raise self._refuse(again or {}, 0.0)
        self._thread = threading.Thread(target=self._beat, name="pytei-ray-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                current = self._read()
                if current is not None and current.get("owner") not in (None, self.owner):
                    self.lost = True
                    return
                self._write()
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried next period
                continue

    def check(self) -> None:
        """Raise :class:`ResultsDirError` if another launcher took the lease over."""
        if self.lost:
            raise ResultsDirError(
                f"Another launcher took over the lease on {self.location} (this one missed its "
                f"heartbeats for over {self.ttl:.0f} s). Stopped writing; rows written so far "
                "are kept.")

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            current = self._read()
            if current is not None and current.get("owner") == self.owner:
                self.fs.delete_file(self.path)
