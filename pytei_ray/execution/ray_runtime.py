"""Starting or joining Ray, quietly, and checking that requested workers can be placed.

* :func:`quiet_env` sets the environment that keeps a Ray started here on 127.0.0.1, without an
  auth token (which breaks ``ray job submit``), usage stats or ANSI colours.
* :class:`RayRuntime` joins a cluster (``--address auto`` / ``ray://...`` / ``RAY_ADDRESS`` set by
  ``ray job submit``) or starts a private local Ray for the run and shuts it down afterwards.
* :class:`RayMessages` keeps the lines Ray's driver prints on its own (``(raylet) ...``: a
  worker died, a task is retried) out of the run's output while it is connected, in a log file
  that a closing note names: the run's summary stays the last thing printed.
* :func:`worker_capacity` / :func:`check_feasible` say how many workers of a given shape fit on
  the live nodes, so an impossible request fails with a clear message instead of an actor that
  waits forever.

Only modules named ``pytei_ray/execution/ray_*.py`` import ray.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import ray

from pytei_ray.errors import ResourcesUnavailableError

# ResourcesUnavailableError is re-exported: it lived here before pytei_ray.errors
__all__ = ["QUIET_ENV", "quiet_env", "RayMessages", "RayRuntime", "worker_capacity",
           "check_feasible", "ResourcesUnavailableError"]

#: Environment for a Ray started by this process (see shared/RAY.md for why each is needed).
QUIET_ENV: Mapping[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind to 127.0.0.1, not the public interface
    "RAY_AUTH_MODE": "disabled",  # no ~/.ray/auth_token (it makes `ray job submit` get 401)
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_COLOR_PREFIX": "0",  # no ANSI codes in logs
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",  # num_gpus=0 workers see no GPU (CPU = CPU)
}

_EPS = 1e-9


def quiet_env() -> None:
    """Set :data:`QUIET_ENV` defaults in ``os.environ`` (values already set are kept)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


#: How the lines that Ray's driver prints on its own begin (its error-message thread prints
#: ``(raylet) ...`` to stdout: worker deaths, retries, out-of-memory kills; the autoscaler's),
#: after a colour code unless ``RAY_COLOR_PREFIX=0``.
RAY_LINE = re.compile(r"(?:\x1b\[[0-9;]*m)*\((?:raylet|autoscaler)\b")


class _Divert(io.TextIOBase):
    """A stdout that sends the lines that match :data:`RAY_LINE` to a sink.

    ``print`` writes a line's text and its newline in two calls, so a diverted line stays
    diverted until its newline; anything else goes to ``stream`` as written (tqdm's ``\r``
    updates included). Ray prints from its own thread, hence the lock.
    """

    def __init__(self, stream: TextIO, sink: RayMessages) -> None:
        self.stream, self.sink = stream, sink
        self._lock = threading.Lock()
        self._line_start = True  # the last character passed on was a newline
        self._diverting = False  # inside a diverted line, until its newline

    def write(self, text: str) -> int:
        with self._lock:
            rest = text
            while rest:
                if self._diverting or (self._line_start and self.sink.active
                                       and RAY_LINE.match(rest)):
                    line, newline, rest = rest.partition("\n")
                    self.sink.write(line + newline)
                    self._diverting, self._line_start = not newline, bool(newline)
                else:
                    self.stream.write(rest)
                    self._line_start = rest.endswith("\n")
                    rest = ""
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # e.g. .buffer: the underlying stream's
        return getattr(self.stream, name)


class RayMessages:
    """While active, Ray's own driver lines go to a log file instead of this process's stdout.

    Args:
        path: the log file (appended to; created at the first line). Default: a file named
            after this process in the temporary folder.

    Example:
        >>> import os, tempfile
        >>> msgs = RayMessages(os.path.join(tempfile.mkdtemp(), "ray.log")).start()
        >>> print("(raylet) A worker died or was killed while executing a task.")
        >>> print("the run's own line")
        the run's own line
        >>> msgs.stop(); msgs.lines
        1
        >>> "A worker died" in open(msgs.path).read()
        True
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.path.join(tempfile.gettempdir(),
                                         f"pytei_ray-ray-messages-{os.getpid()}.log")
        self.lines = 0  # lines diverted so far
        self.active = False
        self._wrapper: _Divert | None = None

    def start(self) -> RayMessages:
        """Divert from now on (idempotent)."""
        if not self.active:
            self.active = True
            self._wrapper = _Divert(sys.stdout, self)
            sys.stdout = self._wrapper
        return self

    def stop(self) -> None:
        """Stop diverting; stdout is restored unless something replaced it meanwhile (then the
        wrapper passes everything on)."""
        self.active = False
        if self._wrapper is not None and sys.stdout is self._wrapper:
            sys.stdout = self._wrapper.stream
        self._wrapper = None

    def write(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(text)
        self.lines += text.endswith("\n")

    def note(self) -> str | None:
        """The line that names the log file, or None when nothing was diverted."""
        if not self.lines:
            return None
        return (f"note: Ray reported {self.lines} message(s) of its own during the run (worker "
                f"failures, retries); the run accounts for them. They are in {self.path}")


class RayRuntime:
    """Owns the connection to Ray for one run.

    Args:
        address: ``None`` joins the cluster named by ``RAY_ADDRESS`` (set inside ``ray job
            submit``) or else starts a private local Ray; ``"auto"``, ``"host:port"`` or
            ``"ray://host:10001"`` join that cluster; ``"local"`` always starts a new one.
        num_cpus: CPUs of a local Ray started here (default: all of this machine's).
        num_gpus: GPUs of a local Ray started here (default: detected; logical GPUs allowed).
        init_kwargs: extra ``ray.init`` keyword arguments.

    If Ray is already initialized in this process (tests, notebooks), it is used as it is and
    left running. Use as a context manager; :meth:`close` shuts down only a Ray started here.

    Example:
        >>> with RayRuntime(num_cpus=1) as rt:  # doctest: +SKIP
        ...     rt.started
        True
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 num_gpus: float | None = None, init_kwargs: Mapping[str, Any] | None = None,
                 ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.init_kwargs = dict(init_kwargs or {})
        self.started = False  # True when this object started (and must stop) a local Ray
        self.joined = False  # True when connected to a cluster that existed before
        self._connected = False  # True when this object called ray.init (and must disconnect)
        self._entered = False
        self.messages = RayMessages()  # Ray's own lines while this object's connection is up

    def __enter__(self) -> RayRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect to (or start) Ray; idempotent."""
        if self._entered:
            return
        self._entered = True
        if ray.is_initialized():
            self.joined = True
            return
        quiet_env()
        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        address = self.address if self.address is not None else os.environ.get("RAY_ADDRESS")
        self.messages.start()  # before ray.init: its threads print from the start
        self._connected = True
        if address and address != "local":
            ray.init(address=address, **quiet, **self.init_kwargs)
            self.joined = True
            return
        kwargs: dict[str, Any] = dict(address="local", include_dashboard=False, **quiet)
        if self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            kwargs["num_gpus"] = self.num_gpus
        kwargs.update(self.init_kwargs)
        ray.init(**kwargs)
        self.started = True

    def describe(self) -> str:
        """``"local Ray"`` or ``"Ray cluster at <address>"`` with its resources."""
        res = ray.cluster_resources()
        where = "local Ray" if self.started else "Ray cluster"
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return (f"{where} ({nodes} node{'s' if nodes != 1 else ''}, "
                f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU)")

    def close(self) -> None:
        """Shut down the local Ray if this object started it, or disconnect from a cluster it
        joined (so that Ray prints nothing after the run); then name the log of Ray's own
        messages, if there were any."""
        if self._connected and ray.is_initialized():
            ray.shutdown()
        self.started = self._connected = False
        self.messages.stop()
        note = self.messages.note()
        if note is not None:
            print(note, file=sys.stderr)
            self.messages.lines = 0


def _alive_node_resources() -> list[dict[str, float]]:
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def worker_capacity(num_cpus: float, num_gpus: float,
                    nodes: list[dict[str, float]] | None = None) -> int:
    """How many workers of ``num_cpus`` CPUs and ``num_gpus`` GPUs fit on the live nodes.

    Counts whole workers per node (a worker cannot span nodes), from the nodes' total resources.

    Example:
        >>> worker_capacity(1, 0.5, nodes=[{"CPU": 4, "GPU": 2}, {"CPU": 1, "GPU": 1}])
        5
    """
    nodes = _alive_node_resources() if nodes is None else nodes
    total = 0
    for res in nodes:
        fits = math.inf
        if num_cpus > 0:
            fits = min(fits, math.floor(res.get("CPU", 0.0) / num_cpus + _EPS))
        if num_gpus > 0:
            fits = min(fits, math.floor(res.get("GPU", 0.0) / num_gpus + _EPS))
        total += 0 if fits is math.inf else int(fits)
    return total


def check_feasible(num_cpus: float, num_gpus: float, num_workers: int | None,
                   *, autoscaling: bool) -> int:
    """Return the number of workers to start, or raise if none can ever be placed.

    Args:
        num_cpus, num_gpus: resources of one worker.
        num_workers: requested count; None = as many as fit now (at least one).
        autoscaling: the cluster may add nodes (a joined cluster): a request that does not fit
            now only warns, because pending workers are what makes the autoscaler add nodes.

    Raises:
        ResourcesUnavailableError: not even one worker fits, and the cluster cannot grow.
    """
    fits = worker_capacity(num_cpus, num_gpus)
    if num_gpus > 1 and abs(num_gpus - round(num_gpus)) > _EPS:
        raise ResourcesUnavailableError(
            f"Expected num_gpus per worker to be a fraction <= 1 or a whole number, but got "
            f"{num_gpus:g}.")
    if fits == 0 and not autoscaling:
        res = ray.cluster_resources()
        raise ResourcesUnavailableError(
            f"No worker can be placed: each needs {num_cpus:g} CPU and {num_gpus:g} GPU, but the "
            f"largest node has {_largest(_alive_node_resources())} (cluster total: "
            f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU).\n"
            "Lower the request (--num-gpus 0 runs CPU workers; --num-gpus 0.5 shares a GPU "
            "between two workers) or run on a cluster with such nodes (--address).")
    if num_workers is None:
        return max(1, fits)
    if num_workers > fits:
        log = logging.getLogger("pytei_ray")
        if not autoscaling:
            log.warning("%d workers requested but only %d fit (%g CPU, %g GPU each); starting %d.",
                        num_workers, fits, num_cpus, num_gpus, fits)
            return fits
        log.warning("%d workers requested but only %d fit on the current nodes (%g CPU, %g GPU "
                    "each); the others start when the cluster adds nodes.",
                    num_workers, fits, num_cpus, num_gpus)
    return num_workers


def _largest(nodes: list[dict[str, float]]) -> str:
    if not nodes:
        return "no live node"
    best = max(nodes, key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)))
    return f"{best.get('CPU', 0):g} CPU, {best.get('GPU', 0):g} GPU"
