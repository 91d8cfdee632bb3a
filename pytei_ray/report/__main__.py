"""``python -m pytei_ray.report DIR``: write the report of a results dataset and print a summary."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from . import SkippedPartWarning, write_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytei_ray.report",
        description="Summary tables, plots (PNG) and a self-contained HTML page of a campaign's "
        "results dataset (finished or still running).",
    )
    p.add_argument("dataset", help="results dataset: local folder or URI (s3://..., gs://...)")
    p.add_argument("--to", help="output folder (default: DIR/_report; ./<name>_report for URIs)")
    p.add_argument("--metric", action="append",
                   help="metric to report (repeatable; default: every metric)")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="relative drop below golden counted as SDC (default 0.01 = 1%%)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    p.add_argument("--precision", type=float, default=None,
                   help="wanted CI half-width relative to golden (default: the threshold)")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--higher-is-better", dest="higher", action="store_true", default=None,
                     help="treat the metric(s) as higher-is-better (default: guessed by name)")
    way.add_argument("--lower-is-better", dest="higher", action="store_false",
                     help="treat the metric(s) as lower-is-better (loss-like)")
    p.add_argument("--baseline", help="mitigation value meaning 'unmitigated' (default: guess)")
    p.add_argument("--nonfinite-not-sdc", action="store_true",
                   help="do not count non-finite metrics as SDC")
    p.add_argument("--no-plots", action="store_true", help="tables only (faster)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the report path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedPartWarning)  # listed in the summary instead
        try:
            report = write_report(
                args.dataset, args.to, metric=args.metric, threshold=args.threshold,
                confidence=args.confidence, higher_is_better=args.higher,
                baseline=args.baseline, precision=args.precision,
                nonfinite_as_sdc=not args.nonfinite_not_sdc, plots=not args.no_plots,
            )
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(report.html if args.quiet else report.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
