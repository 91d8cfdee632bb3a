"""``python -m pytei_ray.report DIR``: write the report of a results dataset and print a summary."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pytei_ray.errors import ResultsDirError
from pytei_ray.storage.layout import REPORT_DIR

from . import SkippedPartWarning, write_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytei_ray.report",
        description="Summary tables, plots (PNG) and a self-contained HTML page of a campaign's "
        "results dataset (finished or still running).",
    )
    p.add_argument("dataset", nargs="?",
                   help="results dataset: local folder or URI (s3://..., gs://...)")
    p.add_argument("--to", help="output folder (default: the dataset's report folder, "
                   f"DIR/{REPORT_DIR} for a local dataset, ./<name>{REPORT_DIR} for URIs; pass "
                   "it for a read-only dataset)")
    p.add_argument("--metric", action="append",
                   help="metric to report (repeatable; default: every metric)")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="relative drop below golden counted as SDC (default 0.01 = 1%%)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    p.add_argument("--precision", type=float, default=None,
                   help="wanted CI half-width relative to golden (default: the threshold)")
    p.add_argument("--higher-is-better", nargs="*", metavar="METRIC", default=None,
                   help="these metrics are higher-is-better; without a name: every metric "
                   "(default: guessed from the name)")
    p.add_argument("--lower-is-better", nargs="*", metavar="METRIC", default=None,
                   help="these metrics are lower-is-better (loss-like); without a name: every "
                   "metric not named by --higher-is-better")
    p.add_argument("--baseline", help="mitigation value meaning 'unmitigated' (default: guess)")
    p.add_argument("--nonfinite-not-sdc", action="store_true",
                   help="do not count non-finite metrics as SDC")
    p.add_argument("--no-plots", action="store_true", help="tables only (faster)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the report path")
    return p


def _looks_like_dataset(word: str) -> bool:
    return "/" in word or "://" in word or Path(word).exists()


def _directions(p: argparse.ArgumentParser, args: argparse.Namespace) -> bool | dict | None:
    """``{metric: bool}`` (``"*"``: every other metric) from the two direction flags."""
    higher, lower = args.higher_is_better, args.lower_is_better
    if args.dataset is None:  # `--lower-is-better DIR`: the flag swallowed the dataset
        for names in (lower, higher):
            if names and _looks_like_dataset(names[-1]):
                args.dataset = names.pop()
                break
        else:
            p.error("the following arguments are required: dataset")
    if higher == [] and lower == []:
        p.error("--higher-is-better and --lower-is-better without names contradict each other")
    if higher is None and lower is None:
        return None
    both = set(higher or []) & set(lower or [])
    if both:
        p.error(f"metric(s) {sorted(both)} named by both --higher-is-better and --lower-is-better")
    way: dict[str, bool] = {}
    if higher == []:
        way["*"] = True
    if lower == []:
        way["*"] = False
    way.update(dict.fromkeys(higher or [], True))
    way.update(dict.fromkeys(lower or [], False))
    return way


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    direction = _directions(parser, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedPartWarning)  # listed in the summary instead
        try:
            report = write_report(
                args.dataset, args.to, metric=args.metric, threshold=args.threshold,
                confidence=args.confidence, higher_is_better=direction,
                baseline=args.baseline, precision=args.precision,
                nonfinite_as_sdc=not args.nonfinite_not_sdc, plots=not args.no_plots,
            )
        except (FileNotFoundError, ValueError, ResultsDirError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(report.html if args.quiet else report.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
