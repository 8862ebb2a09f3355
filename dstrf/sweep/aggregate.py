"""``dstrf-aggregate SWEEP_DIR`` and the Hydra callback that runs it when a multirun ends: the entry points of
the sweep summary. What is computed and written (``summary.csv``, ``summary.json``), which jobs count as done,
and how NaN scores are reported: :mod:`dstrf.sweep.summary`.

Exit status: 0 when every expected job is done and every score is finite, 2 when some jobs are not done (the
summary then covers the done ones) or some scores are NaN, 1 on an error (not a directory, no jobs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from .dashboard import log_summary_run, summary_figures
from .summary import SweepSummary, aggregate

__all__ = ["AggregateCallback", "aggregate", "main"]

log = logging.getLogger(__name__)


def _report(summary: SweepSummary, table: bool = True) -> None:
    """The table on stdout (unless ``table`` is False) and, loudly on stderr, every job that is not done."""
    if table:
        print(summary.format_table(), flush=True)
    problems = summary.format_problems()
    if problems:
        print(problems, file=sys.stderr, flush=True)


def _dashboard(summary: SweepSummary) -> None:
    """The summary figures and, where the jobs logged to wandb, the sweep's summary run
    (:mod:`dstrf.sweep.dashboard`). Never raises: summary.csv/json are written already, and a figure or a
    wandb failure must not make them look failed."""
    try:
        figures = summary_figures(summary)
        run_id = log_summary_run(summary, figures)
        written = ", ".join(str(p.name) for p in figures) or "no figures (no test trials)"
        print(f"dstrf-aggregate: {written}" + (f"; wandb summary run {run_id}" if run_id else ""), file=sys.stderr)
    except Exception as err:  # noqa: BLE001 -- by design, see above
        log.error(f"dstrf: the summary figures or the wandb summary run failed ({type(err).__name__}: {err})")
        print(f"dstrf-aggregate: the summary figures or wandb summary run failed: {err}", file=sys.stderr)


class AggregateCallback(Callback):
    """Hydra callback: aggregate the sweep directory when a multirun ends. Register it as
    ``hydra.callbacks.aggregate._target_: dstrf.sweep.aggregate.AggregateCallback``. It never raises: a failed
    aggregation is logged, and does not make a finished sweep look failed."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            summary = aggregate(sweep_dir)
            _report(summary)
            _dashboard(summary)
        except Exception as err:  # noqa: BLE001 -- by design: aggregation must never fail the sweep
            log.error(
                f"dstrf: aggregating the sweep failed ({type(err).__name__}: {err}); "
                f"run `dstrf-aggregate SWEEP_DIR` to retry"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dstrf-aggregate",
        description="Per-trial, jackknife-aware test scores of a dstrf sweep, from its done jobs: writes "
        "summary.csv and summary.json into the sweep directory. Exit status 0: every job done; "
        "2: some jobs missing or incomplete (summary of the done ones); 1: error.",
    )
    parser.add_argument("sweep_dir", help="the sweep directory (holds sweep.json or one subdirectory per job)")
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print no table (jobs that are not done are still reported on stderr)",
    )
    args = parser.parse_args(argv)
    try:
        summary = aggregate(args.sweep_dir)
    except (OSError, ValueError) as err:
        print(f"dstrf-aggregate: error: {err}", file=sys.stderr)
        return 1
    _report(summary, table=not args.quiet)
    _dashboard(summary)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
