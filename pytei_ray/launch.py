"""``python -m pytei_ray.launch JOB.py [--out DIR]``: run a campaign into a Parquet dataset.

Running the same command again resumes: only trials without a stored row run. A changed campaign
is refused (``--extend`` accepts one that only adds trials). See docs/campaign.md. The work is
done by :func:`pytei_ray.driver.run`; this module is the command line around it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from pytei_ray.campaign.jobfile import parse_params
from pytei_ray.driver import RunSummary, default_out, run
from pytei_ray.errors import ExecutorOptionError, PyteiRayError, TrialSetupError, TrialsLostError
from pytei_ray.execution import ExecutorConfig, available_executors, default_executor
from pytei_ray.execution.ray_options import parse_options

__all__ = ["RunSummary", "run", "main", "default_out", "cli_text"]

EXIT_OK, EXIT_SETUP, EXIT_INPUT, EXIT_LOST, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The flag of each ``run()`` argument the launcher sets. Library messages name the argument to
#: change as Python (```extend=True```, ```out=DIR```, ```precision='auc=0.01'```); the launcher
#: prints the flag instead (``--extend``, ``--out DIR``, ``--precision auc=0.01``).
FLAGS = {"out": "--out", "extend": "--extend", "retry_failed": "--retry-failed",
         "dry_run": "--dry-run", "repetitions": "--repetitions", "precision": "--precision",
         "max_reps": "--max-reps", "confidence": "--confidence", "growth": "--growth",
         "params": "--set",
         "chunk_size": "--chunk-size", "executor": "--executor", "options": "--executor-opt",
         "address": "--address", "num_gpus": "--num-gpus", "num_cpus": "--num-cpus"}
_ARGUMENT = re.compile(r"`(\w+)=([^`]*)`")


def cli_text(text: str) -> str:
    """``text`` with each ```argument=value``` of :data:`FLAGS` written as its flag.

    Example:
        >>> cli_text("Run again with `extend=True`, or use a new `out=DIR`.")
        'Run again with --extend, or use a new --out DIR.'
        >>> cli_text("Pass `out=...` with a new directory.")
        'Pass --out with a new directory.'
        >>> cli_text("e.g. `precision='auc=0.01'`; `seed=1` is not a flag")
        'e.g. --precision auc=0.01; `seed=1` is not a flag'
    """
    def flag(match: re.Match[str]) -> str:
        name, value = match.groups()
        if name not in FLAGS:
            return match.group(0)
        if value in ("True", "..."):  # `extend=True`, `out=...`: the flag alone
            return FLAGS[name]
        return f"{FLAGS[name]} {value.strip(chr(39) + chr(34))}"

    return _ARGUMENT.sub(flag, text)


def _echo(text: str) -> None:
    print(cli_text(text))

_EPILOG = """\
exit status:
  0    done: every trial has a row (failed trials are results too)
  1    a job hook failed before its trials could run (model factory, data,
       calibration, golden run); stored rows are kept
  2    bad input (job file, campaign, options), a refused results directory,
       or workers that cannot be placed
  3    trials lost: their worker process died every time they ran; every
       other trial is stored, run the same command to retry only them
  130  interrupted; stored rows are kept, run the same command to resume
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytei_ray.launch",
        description="Run a fault-injection campaign (a job file defining `campaign`) into a\n"
                    "Parquet results directory. Rerun the same command to resume.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", help="job file: a Python module defining `campaign = Campaign(...)`")
    p.add_argument("--out", help="results directory or URI (s3://..., gs://...); default "
                                 "results/<campaign name>")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="job parameter passed to the job's make_campaign(**params) (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trial count per factor and the output location; run nothing")
    p.add_argument("--extend", action="store_true",
                   help="accept a changed campaign that only adds trials (BERs, repetitions, "
                        "levels); stored trials are kept, not rerun")
    p.add_argument("--repetitions", type=int, metavar="N",
                   help="run N repetitions instead of the job's (its params unchanged); with "
                        "--extend it adds repetitions to a stored campaign. Recorded in the "
                        "results: a later run without the flag keeps the larger count")
    p.add_argument("--precision", metavar="SPEC",
                   help="repeat until every cell is conclusive (an adaptive campaign): "
                        "METRIC=H (half-width H of the mean, e.g. auc=0.005), METRIC=H%% "
                        "(relative to |golden|, auc=1%%) or METRIC.sdc_rate=H (of the SDC rate); "
                        "the first round runs the job's repetitions, open points get more, "
                        "doubling (see --growth), up to --max-reps; the job's confidence and "
                        "look factor are kept. Recorded: a later run keeps it")
    p.add_argument("--max-reps", type=int, metavar="N",
                   help="most repetitions per point of an adaptive campaign (default 160)")
    p.add_argument("--confidence", type=float, metavar="C",
                   help="confidence level of a precision target (default: the job's, else "
                        "0.95)")
    p.add_argument("--growth", type=float, metavar="G",
                   help="factor between the looks of a precision target (default: the job's, "
                        "else 2: double the repetitions of open points; 1.5 overshoots their "
                        "need by less, in more rounds)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run trials whose stored status is 'failed' again")
    p.add_argument("--executor", choices=available_executors(), default=default_executor(),
                   help="where trials run (default: %(default)s); 'local' runs in this process")
    p.add_argument("--device", help="device for model replicas, local and ray executors (cpu, "
                                    "cuda); default: cuda when available (on Ray: when Ray "
                                    "gave the worker a GPU), else cpu")
    p.add_argument("--address", help="Ray cluster address (ray executor); default: start a "
                                     "local Ray")
    p.add_argument("--workers", type=int, help="number of Ray workers (ray executor)")
    p.add_argument("--num-gpus", type=float, metavar="N",
                   help="GPUs per Ray worker, fractions allowed (0.5: two workers share a "
                        "GPU; 0: CPU workers); default: the campaign's num_gpus_per_worker, else 1 "
                        "when the cluster has GPUs (one worker per GPU), else 0")
    p.add_argument("--num-cpus", type=float, metavar="N",
                   help="CPUs per Ray worker, fractions allowed; default: the campaign's "
                        "num_cpus_per_worker")
    p.add_argument("--executor-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="executor-specific option (repeatable); ray: max_restarts, "
                        "max_attempts, resource_timeout, spread, local_num_cpus, "
                        "local_num_gpus (see docs/ray.md)")
    p.add_argument("--chunk-size", type=int, help="trials per chunk (default: the campaign's)")
    p.add_argument("--flush-every", type=float, default=10.0, metavar="SECONDS",
                   help="write buffered rows at least this often (default: %(default)s)")
    p.add_argument("--part-rows", type=int, default=10_000,
                   help="rows per part file at most (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--executor-opt`` plus ``--num-gpus`` / ``--num-cpus``, checked before any work."""
    options = parse_params(args.executor_opt)
    for flag, key in (("--num-gpus", "num_gpus"), ("--num-cpus", "num_cpus")):
        value = getattr(args, key)
        if value is None:
            continue
        if not (0 <= value < float("inf")):
            raise ExecutorOptionError(f"Expected {flag} to be a number >= 0 (per worker; "
                                      f"fractions allowed), but got {value:g}.")
        if key in options:
            raise ExecutorOptionError(f"Expected {key} once, but got both {flag} {value:g} and "
                                      f"--executor-opt {key}={options[key]}.")
        options[key] = value
    if args.executor == "ray":
        parse_options(options)
    return options


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def _plain_warnings() -> Iterator[None]:
    """Print pytei_ray's own warnings as ``warning: ...`` lines (no ``file:line:`` prefix,
    no source line), like the launcher's other messages; others keep Python's format."""
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if not os.path.abspath(filename).startswith(_PACKAGE + os.sep):
            original(message, category, filename, lineno, file, line)
            return
        try:
            print(f"warning: {cli_text(str(message))}",
                  file=file if file is not None else sys.stderr)
        except OSError:  # stderr gone: a warning must not end the run
            pass

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 setup failure, 2 bad input, 3 trials
    lost, 130 interrupted; see ``--help``)."""
    args = _parser().parse_args(argv)
    with _plain_warnings():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        if args.repetitions is not None and args.repetitions < 1:
            raise PyteiRayError(f"Expected --repetitions to be an integer >= 1, but got "
                                f"{args.repetitions}.")
        if args.chunk_size is not None and args.chunk_size < 1:
            raise PyteiRayError(f"Expected --chunk-size >= 1, but got {args.chunk_size}.")
        if args.part_rows < 1:
            raise PyteiRayError(f"Expected --part-rows (rows per part file at most) to be an "
                                f"integer >= 1, but got {args.part_rows}.")
        if not 0 <= args.flush_every < float("inf"):
            raise PyteiRayError(f"Expected --flush-every to be a number of seconds >= 0, but "
                                f"got {args.flush_every:g}.")
        config = ExecutorConfig(device=args.device, address=args.address,
                                num_workers=args.workers, options=_executor_options(args))
        run(args.job, args.out, params=parse_params(args.params), executor=args.executor,
            config=config, extend=args.extend, retry_failed=args.retry_failed,
            dry_run=args.dry_run, repetitions=args.repetitions, precision=args.precision,
            max_reps=args.max_reps, confidence=args.confidence, growth=args.growth,
            chunk_size=args.chunk_size,
            flush_seconds=args.flush_every, rows_per_part=args.part_rows,
            progress=not args.no_progress, echo=_echo)
    except TrialSetupError as exc:
        print(f"error: {cli_text(str(exc))}", file=sys.stderr)
        return EXIT_SETUP
    except TrialsLostError as exc:
        print(f"error: {cli_text(str(exc))}", file=sys.stderr)
        return EXIT_LOST
    except PyteiRayError as exc:
        print(f"error: {cli_text(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted: stored rows are kept; run the same command to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
