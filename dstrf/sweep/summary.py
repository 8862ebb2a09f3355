"""Per-trial, jackknife-aware test scores of a sweep, from its finished jobs (what ``dstrf-aggregate`` computes).

Jobs are grouped by their overrides other than ``split.fold`` / ``split.jackknife`` (a sweep over two models
and all folds is two cross-validation experiments); each group is summarised on its own, from its *done* jobs
only (``done.json`` present). For every test trial and channel of a group:

- **pred**: Pearson r between the measured response and the mean of the predictions of every job of the group
  that tested the trial (the jackknife-averaged prediction), over frames ``t >= warmup`` (the largest warm-up
  of those jobs);
- **score**: the mean over those M jobs of their own r (each over frames past its own warm-up, as in their
  ``metrics.json``), with the jackknife standard error ``SE = sqrt((M-1)/M * sum_j (r_j - mean r)^2)``
  (NaN when M == 1).

Everything is recomputed in float64 from each job's ``test_predictions.npz`` (prediction and measured
response per test trial, in the data's units). Written into the sweep directory, replacing any earlier
summary (it is derived data): ``summary.csv`` (one row per group, trial and channel) and ``summary.json``
(those rows, per-model rows, per-group means and the jobs that are missing, incomplete or unreadable).

**NaN** scores stay NaN: a job whose prediction is not finite (a diverged fit) or a channel that is constant
in a test trial has a NaN r there, and every mean that includes it is NaN too -- never a finite number quietly
computed from fewer jobs, trials or channels. Each model row and each group report ``n_nan``, the number of
their per-model scores (test trial x channel) that are NaN, and the jobs and reasons behind them; the summary
lists every such job loudly (:meth:`SweepSummary.format_problems`). The only mean that skips NaN is that of
the jackknife SEs over trials, which leaves out trials tested by a single model (their SE is undefined by
construction), not trials whose SE is NaN because a score is. In ``summary.csv`` a NaN is written ``nan``
(read back by ``float``, numpy and pandas); ``summary.json`` has ``null`` (JSON has no NaN).

**Counts**: a job is *done* only when it has ``done.json`` (or, from before the markers, ``metrics.json``)
*and* its outputs were read; a job with done.json whose outputs cannot be read is *unreadable*. Every count
(the sweep's and each group's ``n_done``, the table's header) uses this one definition, so the sweep's n_done
is the sum of its groups' and ``n_jobs = n_done + missing + incomplete + unreadable``.

Exit status: 0 when every expected job is done and every score is finite, 2 when some jobs are not done (the
summary then covers the done ones) or some scores are NaN, 1 on an error (not a directory, no jobs).

A job directory holds ``job.json`` (written when it starts) and ``done.json`` (written last, when it
completed): ``done.json`` -> "done", ``job.json`` alone -> "incomplete" (running, interrupted or failed),
neither -> "missing". The expected jobs are those listed in ``sweep.json`` (written by dstrf's sweeper);
without it, the subdirectories (up to 3 levels deep) that hold ``job.json`` or ``metrics.json``.

Jobs are found by :mod:`dstrf.runs.discovery`, scored by :mod:`dstrf.sweep.scoring`; the entry points are in
:mod:`dstrf.sweep.aggregate`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..runs.discovery import SEARCH_DEPTH, JobEntry, SweepDirectoryError, find_jobs, is_job_dir
from ..runs.job import jsonable, read_json
from ..tables import format_table
from .scoring import jackknife_se, load_test_outputs, scored

__all__ = [
    "CSV_COLUMNS",
    "GroupSummary",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "SweepSummary",
    "aggregate",
    "done_jobs",
    "summarise_group",
]

SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"
CSV_COLUMNS = ("group", "trial", "channel", "n_models", "r_pred", "r_score", "r_score_se")


def done_jobs(jobs: Sequence[JobEntry], unreadable: Sequence[tuple[JobEntry, str]]) -> list[JobEntry]:
    """The one definition of "done" (see the module docstring): jobs with done.json whose outputs were read,
    in ``jobs`` order."""
    unread = {job.name for job, _ in unreadable}
    return [job for job in jobs if job.status == "done" and job.name not in unread]


class _DoneJobs:
    """``done`` and ``n_done`` of a summary with ``jobs`` and ``unreadable`` (see :func:`done_jobs`)."""

    jobs: list[JobEntry]
    unreadable: list[tuple[JobEntry, str]]

    @property
    def done(self) -> list[JobEntry]:
        return done_jobs(self.jobs, self.unreadable)

    @property
    def n_done(self) -> int:
        return len(self.done)


@dataclass
class GroupSummary(_DoneJobs):
    """One group's per-trial scores: arrays ``(n_trials, n_channels)``, rows in ``trials`` order.

    ``unreadable``: its jobs with done.json whose outputs could not be read (and why); ``nan_scores``: per job
    with NaN per-model scores, ``(job, number of NaN scores, number of scores, reasons)``; ``nan_reasons``: why
    a jackknife-averaged r_pred is NaN where no single job's score explains it.
    """

    name: str
    jobs: list[JobEntry]
    channels: list[str] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)
    n_models: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    r_pred: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    r_score: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    r_score_se: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    unreadable: list[tuple[JobEntry, str]] = field(default_factory=list)
    nan_scores: list[tuple[JobEntry, int, int, list[str]]] = field(default_factory=list)
    nan_reasons: list[str] = field(default_factory=list)

    @property
    def n_nan(self) -> int:
        """How many per-model scores (job x test trial x channel) of the group are NaN."""
        return sum(n for _, n, _, _ in self.nan_scores)

    @property
    def r_pred_mean(self) -> float:
        """Mean of r_pred over trials and channels; NaN if any is NaN (see ``n_nan`` for why)."""
        return float(self.r_pred.mean()) if self.r_pred.size else math.nan

    @property
    def r_score_mean(self) -> float:
        """Mean of r_score over trials and channels; NaN if any is NaN."""
        return float(self.r_score.mean()) if self.r_score.size else math.nan

    def per_channel(self) -> dict[str, list]:
        """Per channel, the mean over test trials of r_pred and r_score (NaN if any trial's is NaN), and of the
        jackknife SE over the trials tested by more than one model (NaN when none is, or when one of those SEs
        is NaN)."""
        n = len(self.channels)
        if not self.r_pred.size:
            return {
                "channel": list(self.channels),
                "r_pred": [math.nan] * n,
                "r_score": [math.nan] * n,
                "r_score_se": [math.nan] * n,
            }
        several = self.n_models > 1  # a single model's SE is undefined by construction: not a missing value
        se = self.r_score_se[several].mean(axis=0) if several.any() else np.full(n, math.nan)
        return {
            "channel": list(self.channels),
            "r_pred": self.r_pred.mean(axis=0).tolist(),
            "r_score": self.r_score.mean(axis=0).tolist(),
            "r_score_se": se.tolist(),
        }


@dataclass
class SweepSummary(_DoneJobs):
    """What :func:`aggregate` found and computed; ``to_dict()`` is ``summary.json``."""

    sweep_dir: Path
    jobs: list[JobEntry]
    groups: list[GroupSummary]
    models: list[dict[str, Any]]
    unreadable: list[tuple[JobEntry, str]]

    @property
    def missing(self) -> list[JobEntry]:
        return [job for job in self.jobs if job.status == "missing"]

    @property
    def incomplete(self) -> list[JobEntry]:
        return [job for job in self.jobs if job.status == "incomplete"]

    @property
    def nan_scores(self) -> list[tuple[JobEntry, int, int, list[str]]]:
        """Every job with NaN per-model scores: ``(job, number NaN, number of scores, reasons)``."""
        return [entry for group in self.groups for entry in group.nan_scores]

    @property
    def n_nan(self) -> int:
        return sum(group.n_nan for group in self.groups)

    @property
    def complete(self) -> bool:
        """Every expected job is done and its results were read."""
        return not self.missing and not self.incomplete and not self.unreadable

    @property
    def exit_code(self) -> int:
        """0 when complete and every score is finite, else 2."""
        nan_pred = any(group.nan_reasons for group in self.groups)
        return 0 if self.complete and not self.n_nan and not nan_pred else 2

    def frame(self) -> pd.DataFrame:
        """:meth:`rows` as a DataFrame, in the columns of ``summary.csv``."""
        return pd.DataFrame(self.rows(), columns=list(CSV_COLUMNS))

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, test trial and channel (the columns of ``summary.csv``)."""
        rows = []
        for group in self.groups:
            for t, trial in enumerate(group.trials):
                for n, channel in enumerate(group.channels):
                    rows.append(
                        {
                            "group": group.name,
                            "trial": trial,
                            "channel": channel,
                            "n_models": int(group.n_models[t]),
                            "r_pred": float(group.r_pred[t, n]),
                            "r_score": float(group.r_score[t, n]),
                            "r_score_se": float(group.r_score_se[t, n]),
                        }
                    )
        return rows

    def to_dict(self) -> dict[str, Any]:
        def job_ref(job: JobEntry) -> dict[str, Any]:
            return {
                "dir": job.name,
                "group": job.group,
                "fold": job.fold,
                "jackknife": job.jackknife,
                "status": job.status,
            }

        def nan_ref(entry: tuple[JobEntry, int, int, list[str]]) -> dict[str, Any]:
            job, n_nan, n_scores, reasons = entry
            return {**job_ref(job), "n_nan": n_nan, "n_scores": n_scores, "reasons": reasons}

        return jsonable(
            {
                "created": dt.datetime.now().isoformat(timespec="seconds"),
                "complete": self.complete,
                "n_jobs": len(self.jobs),
                "n_done": self.n_done,
                "n_nan": self.n_nan,
                "groups": [
                    {
                        "group": g.name,
                        "n_jobs": len(g.jobs),
                        "n_done": g.n_done,
                        "n_nan": g.n_nan,
                        "nan_jobs": [job.name for job, _, _, _ in g.nan_scores],
                        "nan_reasons": g.nan_reasons,
                        "channels": g.channels,
                        "trials": g.trials,
                        "r_pred_mean": g.r_pred_mean,
                        "r_score_mean": g.r_score_mean,
                        "per_channel": g.per_channel(),
                    }
                    for g in self.groups
                ],
                "trials": self.rows(),
                "models": self.models,
                "missing": [job_ref(job) for job in self.missing],
                "incomplete": [job_ref(job) for job in self.incomplete],
                "unreadable": [{**job_ref(job), "error": reason} for job, reason in self.unreadable],
                "nan": [nan_ref(entry) for entry in self.nan_scores],
            }
        )

    def write(self) -> None:
        """``summary.csv`` and ``summary.json`` in the sweep directory (each replaced atomically)."""
        csv_tmp = self.sweep_dir / (SUMMARY_CSV + ".tmp")
        self.frame().to_csv(csv_tmp, index=False, na_rep="nan")
        csv_tmp.replace(self.sweep_dir / SUMMARY_CSV)
        json_tmp = self.sweep_dir / (SUMMARY_JSON + ".tmp")
        json_tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        json_tmp.replace(self.sweep_dir / SUMMARY_JSON)

    # -- printing ------------------------------------------------------------------------------------------------
    def format_table(self, max_rows: int = 20) -> str:
        lines = [f"dstrf-aggregate: {self.sweep_dir}: {self.n_done} of {len(self.jobs)} jobs done"]
        for group in self.groups:
            lines.append("")
            nan = ""
            if group.n_nan:
                names = [job.name for job, _, _, _ in group.nan_scores]
                nan = (
                    f", {group.n_nan} NaN scores from {len(names)} job{'s' if len(names) > 1 else ''} "
                    f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): its means are NaN"
                )
            lines.append(
                f"group {_label(group.name)}: {group.n_done} of {len(group.jobs)} jobs done, "
                f"{len(group.trials)} test trials{nan}"
            )
            if not group.trials:
                continue
            per = pd.DataFrame(group.per_channel())
            if not (group.n_models > 1).any():  # every trial has one model: no SE to show, none lacking
                per["r_score_se"] = None
            lines.append(
                format_table(
                    per,
                    {"channel": "channel", "r_pred": "r_pred", "r_score": "r_score", "r_score_se": "SE"},
                    max_rows=max_rows,
                    indent="  ",
                    footer=[{"channel": "mean", "r_pred": group.r_pred_mean, "r_score": group.r_score_mean}],
                )
            )
            models = [m for m in self.models if m["group"] == group.name]
            if models:
                lines.append(
                    format_table(
                        models,
                        {
                            "dir": "model",
                            "fold": "fold",
                            "jackknife": "jk",
                            "epochs": "epochs",
                            "test_r_mean": "test r",
                        },
                        max_rows=max_rows,
                        indent="  ",
                    )
                )
        if self.groups:
            lines.append("")
            lines.append(f"written: {self.sweep_dir / SUMMARY_CSV}, {self.sweep_dir / SUMMARY_JSON}")
        return "\n".join(lines)

    def format_problems(self, max_rows: int = 100) -> str:
        """A loud list of every job that is not done and every job with NaN scores (empty when there is none)."""
        problems = [(job, "MISSING", "never started: no job.json") for job in self.missing]
        problems += [
            (job, "INCOMPLETE", "started but no done.json: still running, interrupted or failed")
            for job in self.incomplete
        ]
        problems += [(job, "UNREADABLE", reason) for job, reason in self.unreadable]
        nan: list[tuple[JobEntry | None, str, str]] = [
            (
                job,
                "NAN",
                f"{n_nan} of its {n_scores} test scores are NaN; {reasons[0] if reasons else ''}"
                + (f" (and {len(reasons) - 1} more reasons in {SUMMARY_JSON})" if len(reasons) > 1 else ""),
            )
            for job, n_nan, n_scores, reasons in self.nan_scores
        ]
        nan += [
            (None, "NAN", f"group {_label(group.name)}: {reason}")
            for group in self.groups
            for reason in group.nan_reasons
        ]
        if not problems and not nan:
            return ""
        bar = "!" * 100
        lines = [bar]
        if problems:
            lines.append(
                f"!!! {len(problems)} of {len(self.jobs)} jobs of {self.sweep_dir} are NOT done; the summary "
                f"covers the {self.n_done} done jobs only:"
            )
            lines += _problem_lines(problems, max_rows)
            lines.append("!!! rerun the same sweep command to run them: done jobs are skipped, interrupted ones resume")
        if nan:
            jobs = len(self.nan_scores)
            lines.append(
                f"!!! {self.n_nan} test scores of {jobs} job{'s' if jobs != 1 else ''} of {self.sweep_dir} are "
                "NaN (non-finite scores): every mean that includes them is NaN. A non-finite prediction is a "
                "diverged fit (rerun it with a lower learning rate); a constant channel has no correlation:"
            )
            lines += _problem_lines(nan, max_rows)
        lines.append(bar)
        return "\n".join(lines)


def _label(group: str) -> str:
    return group or "(no swept settings)"


def _problem_lines(problems: Sequence[tuple[JobEntry | None, str, str]], max_rows: int) -> list[str]:
    lines = [
        f"!!!   {kind:<10}  {job.name + '  ' if job is not None else ''}({why})"
        for job, kind, why in problems[:max_rows]
    ]
    if len(problems) > max_rows:
        lines.append(f"!!!   ... and {len(problems) - max_rows} more (all listed in {SUMMARY_JSON})")
    return lines


def summarise_group(name: str, jobs: list[JobEntry], models: list[dict]) -> GroupSummary:
    """Streams over the group's done jobs, keeping per test trial only the running sum of the predictions, the
    measured response and each model's r (memory: about one copy of the test data, however many models).
    Jobs whose outputs cannot be read go to ``group.unreadable``; NaN scores are kept, counted and explained."""
    group = GroupSummary(name, jobs)
    unreadable = group.unreadable
    pred_sum: dict[int, np.ndarray] = {}
    responses: dict[int, tuple[str, np.ndarray]] = {}  # trial -> (first job that saved it, response)
    warmups: dict[int, list[int]] = {}
    scores: dict[int, list[np.ndarray]] = {}
    for job in jobs:
        if job.status != "done":
            continue
        metrics = read_json(job.dir / "metrics.json") or {}
        model: dict[str, Any] = {
            "group": name,
            "dir": job.name,
            "num": job.num,
            "fold": job.fold,
            "jackknife": job.jackknife,
            "model": metrics.get("model"),
            "epochs": metrics.get("epochs"),
            "left_out": (metrics.get("split") or {}).get("left_out"),
            "val_r_mean": (metrics.get("val") or {}).get("r_mean"),
            "test_trials": [],
            "test_r": None,
            "test_r_mean": None,
            "per_trial": {},
            "n_nan": 0,
            "nan_reasons": [],
        }
        has_test = bool((metrics.get("split") or {}).get("test")) or "test" in metrics
        if not (job.dir / "test_predictions.npz").is_file():
            if has_test or not metrics:
                unreadable.append(
                    (
                        job,
                        "done.json but no test_predictions.npz"
                        if metrics
                        else "done.json but no metrics.json or test_predictions.npz",
                    )
                )
                continue
            models.append(model)  # a job without test trials: nothing to score
            continue
        try:
            out = load_test_outputs(job.dir)
        except (OSError, ValueError, KeyError) as err:
            unreadable.append((job, f"cannot read test_predictions.npz: {err}"))
            continue
        if group.channels and out.channels != group.channels:
            unreadable.append(
                (
                    job,
                    f"its channels {out.channels[:5]}... differ from those of the group's other "
                    f"jobs {group.channels[:5]}...",
                )
            )
            continue
        ids = sorted(out.predictions)
        for i in ids:
            if i in responses:
                first, response = responses[i]
                if out.responses[i].shape != response.shape or not np.allclose(
                    out.responses[i], response, equal_nan=True
                ):
                    raise ValueError(
                        f"group {name!r}: jobs {first} and {job.name} saved different measured responses "
                        f"for trial {i}; are they from the same data?"
                    )
        group.channels = group.channels or out.channels
        w = out.warmup
        per_trial, reasons = {}, []
        for i in ids:
            per_trial[i], why = scored(out.predictions[i][:, w:], out.responses[i][:, w:], f"trial {i}")
            reasons += why
        # the pooled r is NaN only where some trial's is: its reasons would repeat theirs
        pooled = (
            scored(
                np.concatenate([out.predictions[i][:, w:] for i in ids], axis=-1),
                np.concatenate([out.responses[i][:, w:] for i in ids], axis=-1),
                "",
            )[0]
            if ids
            else None
        )
        n_nan = int(sum(np.isnan(r).sum() for r in per_trial.values()))
        if n_nan:
            group.nan_scores.append((job, n_nan, sum(r.size for r in per_trial.values()), reasons))
        for i in ids:
            if i in pred_sum:
                pred_sum[i] += out.predictions[i]
            else:
                pred_sum[i] = out.predictions[i].copy()
                responses[i] = (job.name, out.responses[i])
            warmups.setdefault(i, []).append(w)
            scores.setdefault(i, []).append(per_trial[i])
        model.update(
            test_trials=ids,
            warmup=w,
            per_trial={str(i): r.tolist() for i, r in per_trial.items()},
            test_r=None if pooled is None else pooled.tolist(),
            test_r_mean=None if pooled is None else float(pooled.mean()),
            n_nan=n_nan,
            nan_reasons=reasons,
        )
        models.append(model)

    trials = sorted(pred_sum)
    shape = (len(trials), len(group.channels))
    group.trials = trials
    group.n_models = np.array([len(scores[i]) for i in trials], dtype=int)
    group.r_pred, group.r_score, group.r_score_se = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for t, trial in enumerate(trials):
        w = max(warmups[trial])
        mean_pred = pred_sum[trial] / len(scores[trial])
        response = responses[trial][1]
        per_model = np.stack(scores[trial])
        group.r_pred[t], why = scored(mean_pred[:, w:], response[:, w:], f"trial {trial}, mean prediction")
        if np.isnan(group.r_pred[t]).any() and not np.isnan(per_model).any():  # else a job's NaN explains it
            group.nan_reasons += why
        group.r_score[t] = per_model.mean(axis=0)
        group.r_score_se[t] = jackknife_se(per_model)
    return group


def aggregate(sweep_dir: str | Path, write: bool = True) -> SweepSummary:
    """Summarise the done jobs of ``sweep_dir`` per group (see the module docstring); with ``write``, save
    ``summary.csv`` and ``summary.json`` there. Raises :class:`SweepDirectoryError` when there is nothing to
    summarise (not a directory, no jobs)."""
    sweep_dir = Path(sweep_dir).absolute()
    jobs = find_jobs(sweep_dir)
    if not jobs:
        if is_job_dir(sweep_dir):
            raise SweepDirectoryError(
                f"{sweep_dir} is a single run, not a sweep; dstrf-aggregate summarises a sweep "
                "directory (one subdirectory per job); see `dstrf-inspect` for a single run"
            )
        raise SweepDirectoryError(
            f"{sweep_dir} holds no dstrf jobs: neither a sweep.json nor subdirectories (up to "
            f"{SEARCH_DEPTH} levels deep) with job.json or metrics.json"
        )
    by_group: dict[str, list[JobEntry]] = {}
    for job in jobs:
        by_group.setdefault(job.group, []).append(job)
    models: list[dict] = []
    groups = [summarise_group(name, members, models) for name, members in by_group.items()]
    unreadable = [entry for group in groups for entry in group.unreadable]
    summary = SweepSummary(sweep_dir, jobs, groups, models, unreadable)
    if write:
        summary.write()
    return summary
