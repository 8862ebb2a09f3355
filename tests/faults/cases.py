"""The bad-input and fault cases the tests run, and the README's reliability table made from them.

``python -m tests.faults.cases`` prints the table; ``tests/faults/test_readme_table.py`` fails when the README's
copy (between the ``reliability-table`` markers) differs from it. Each case here is a parameter of a test in
``tests/faults/``: a case cannot be listed without being run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """A job interrupted or its directory changed on disk, then the same command run again."""

    id: str
    case: str
    kill_at: str | None  # DSTRF_KILL_AT of tests.faults.runner for the first run (None: it completes)
    damage: str | None  # what is done to the job directory before the re-run (see test_faults._damage)
    outcome: str
    action: str  # the re-run's action in metrics.json's job.action


FAULTS = [
    Fault(
        "before-first-checkpoint",
        "killed (SIGKILL-like) before the first checkpoint",
        "batch:0:0",
        None,
        "starts over; results equal an uninterrupted run",
        "start",
    ),
    Fault(
        "mid-epoch",
        "killed mid-epoch",
        "batch:2:1",
        None,
        "resumes from `last.ckpt` with its random state; results and `metrics.csv` equal an uninterrupted run",
        "resume",
    ),
    Fault(
        "checkpoint-write",
        "killed during a checkpoint write",
        "checkpoint:3",
        None,
        "the write went to `last.ckpt.part` (removed); resumes from the whole `last.ckpt`; results equal",
        "resume",
    ),
    Fault(
        "truncated-last",
        "`last.ckpt` truncated (a non-atomic copy cut short)",
        "batch:2:1",
        "truncate-last",
        "set aside as `last.ckpt.unreadable-<time>`, said so; resumes from the best checkpoint; results equal",
        "resume",
    ),
    Fault(
        "between-outputs",
        "killed between `metrics.json` and `test_predictions.npz`",
        "results",
        None,
        "no retraining: results computed again from the best checkpoint; equal",
        "finish",
    ),
    Fault(
        "metrics-deleted",
        "`metrics.json` deleted from a finished job",
        None,
        "delete-metrics",
        "not done: results computed again from the best checkpoint; equal",
        "finish",
    ),
    Fault(
        "predictions-deleted",
        "`test_predictions.npz` deleted from a finished job",
        None,
        "delete-predictions",
        "not done: results computed again from the best checkpoint; equal",
        "finish",
    ),
    Fault(
        "best-truncated",
        "best checkpoint truncated in a finished job",
        None,
        "truncate-best",
        "not done; no readable best model: set aside, starts over; results equal",
        "start",
    ),
]


@dataclass(frozen=True)
class BadConfig:
    """A setting that cannot work: the run stops before training with an error naming the config key."""

    id: str
    overrides: tuple[str, ...]
    message: str  # a regular expression the error must match


BAD_CONFIGS = [
    BadConfig("recurrent-dstrf-without-lags", ("model=statenet", "callbacks=dstrf"), r"callbacks\.dstrf\.lags=None"),
    BadConfig(
        "recurrent-gradmap-without-lags", ("model=statenet", "callbacks=gradmap"), r"callbacks\.gradmap\.lags=None"
    ),
    BadConfig(
        "gradmap-x0-outside-data",
        ("model=linear_strf", "callbacks=gradmap", "callbacks.gradmap.x0=[9,100]"),
        r"callbacks\.gradmap.*trial",
    ),
    BadConfig("negative-warmup", ("module.warmup=-1",), r"module\.warmup=-1"),
    BadConfig("warmup-beyond-trials", ("module.warmup=400",), r"module\.warmup=400 leaves no scored frame"),
    BadConfig("zero-epochs", ("trainer.max_epochs=0",), r"trainer\.max_epochs=0"),
    BadConfig("zero-lr", ("module.lr=0",), r"module\.lr=0"),
    BadConfig("negative-weight-decay", ("module.weight_decay=-0.1",), r"module\.weight_decay=-0\.1"),
    BadConfig("zero-threads", ("threads=0",), r"threads=0"),
    BadConfig("unknown-loss", ("module.loss=l1",), r"module\.loss"),
    BadConfig("duplicate-test-ids", ("split.test=[0,0]", "split.val=[1]"), r"split\.test"),
    BadConfig("test-size-one-float", ("split.test_size=1.0",), r"split\.test_size=1\.0"),
    BadConfig("ridge-alpha-grid-not-positive", ("model=ridge_strf", "model.alphas=[1.0,0.0]"), r"model\.alphas"),
    BadConfig(
        "ridge-one-training-trial",
        ("model=ridge_strf", "split.test_size=3"),
        r"model\.fallback_alpha=None and 1 training trial",
    ),
    BadConfig("missing-data-file", ("data=file", "data.trials.path=no_such_file.h5"), r"data\.trials\.path"),
]


def table() -> str:
    """The README's reliability table (markdown)."""
    lines = ["| case | what happens | tested by |", "|---|---|---|"]
    for fault in FAULTS:
        lines.append(f"| {fault.case} | {fault.outcome} | `test_faults.py::test_rerun_after_fault[{fault.id}]` |")
    for bad in BAD_CONFIGS:
        overrides = " ".join(bad.overrides)
        lines.append(
            f"| `{overrides}` | stops before training; the error names the config key | "
            f"`test_bad_configs.py::test_bad_config_stops_before_training[{bad.id}]` |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
