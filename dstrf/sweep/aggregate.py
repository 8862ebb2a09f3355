"""``dstrf-aggregate SWEEP_DIR``: per-trial, jackknife-aware test scores of a sweep, from its finished jobs.

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

Jobs are found by :mod:`dstrf.runs.discovery`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from ..runs.discovery import SEARCH_DEPTH, JobEntry, SweepDirectoryError, find_jobs, is_job_dir
from ..runs.job import jsonable, read_json

__all__ = [
    "AggregateCallback",
    "GroupSummary",
    "SweepSummary",
    "aggregate",
    "main",
    "pearson_r",
]

log = logging.getLogger(__name__)

SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"
CSV_COLUMNS = ("group", "trial", "channel", "n_models", "r_pred", "r_score", "r_score_se")


# ------------------------------------------------------------------------------------------------------- numbers


def pearson_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`dstrf.metrics.pearson_r` on ``(N, T)`` numpy arrays, in float64: NaN, with an
    :class:`~dstrf.metrics.UndefinedCorrelationWarning` naming the channel, where r is undefined (a constant or
    non-finite series)."""
    import torch  # here, not at the top: listing a sweep (dstrf-inspect) should not pay for importing torch

    from ..metrics import pearson_r as torch_pearson_r

    p = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"prediction and response shapes differ: {p.shape} and {y.shape}")
    return torch_pearson_r(torch.from_numpy(p), torch.from_numpy(y)).numpy()


def _scored(pred: np.ndarray, target: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """:func:`pearson_r`, and why some of its values are NaN: the warnings it gave, each prefixed with
    ``where`` (the trial), to be reported with the job in the summary rather than as warnings without context.
    Channels in them are numbered as in the group's ``channels``, from 0."""
    from ..metrics import UndefinedCorrelationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedCorrelationWarning)
        r = pearson_r(pred, target)
    reasons = []
    for w in caught:
        if issubclass(w.category, UndefinedCorrelationWarning):
            reasons.append(f"{where}: {w.message}")
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return r, reasons


def jackknife_se(values: np.ndarray) -> np.ndarray:
    """:func:`dstrf.estimate.jackknife_se` over axis 0 of a numpy ``(M, ...)`` array; NaN when M == 1."""
    import torch

    from ..estimate.jackknife import jackknife_se as torch_jackknife_se

    return torch_jackknife_se(torch.from_numpy(np.asarray(values, dtype=np.float64))).numpy()


@dataclass
class _TestOutputs:
    warmup: int
    channels: list[str]
    predictions: dict[int, np.ndarray]
    responses: dict[int, np.ndarray]


def _load_test_outputs(job: JobEntry) -> _TestOutputs:
    path = job.dir / "test_predictions.npz"
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        ids = sorted(int(k[len("trial_"):]) for k in files if re.fullmatch(r"trial_\d+", k))
        lacking = [k for k in ("warmup", "channel_names", *(f"response_{i}" for i in ids)) if k not in files]
        if lacking:
            raise ValueError(f"{path} lacks {lacking[:3]} (written by an older dstrf?); rerun the job to rescore it")
        out = _TestOutputs(int(data["warmup"]), [str(c) for c in data["channel_names"]],
                           {i: data[f"trial_{i}"].astype(np.float64) for i in ids},
                           {i: data[f"response_{i}"].astype(np.float64) for i in ids})
    for i in ids:
        if out.predictions[i].shape != out.responses[i].shape or out.predictions[i].shape[0] != len(out.channels):
            raise ValueError(f"{path}: trial {i} has prediction {out.predictions[i].shape}, response "
                             f"{out.responses[i].shape} and {len(out.channels)} channels")
    return out


# -------------------------------------------------------------------------------------------------------- summary


def done_jobs(jobs: Sequence[JobEntry], unreadable: Sequence[tuple[JobEntry, str]]) -> list[JobEntry]:
    """The one definition of "done" (see the module docstring): jobs with done.json whose outputs were read,
    in ``jobs`` order."""
    unread = {job.name for job, _ in unreadable}
    return [job for job in jobs if job.status == "done" and job.name not in unread]


@dataclass
class GroupSummary:
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
    def done(self) -> list[JobEntry]:
        return done_jobs(self.jobs, self.unreadable)

    @property
    def n_done(self) -> int:
        return len(self.done)

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
            return {"channel": list(self.channels), "r_pred": [math.nan] * n, "r_score": [math.nan] * n,
                    "r_score_se": [math.nan] * n}
        several = self.n_models > 1  # a single model's SE is undefined by construction: not a missing value
        se = self.r_score_se[several].mean(axis=0) if several.any() else np.full(n, math.nan)
        return {"channel": list(self.channels), "r_pred": self.r_pred.mean(axis=0).tolist(),
                "r_score": self.r_score.mean(axis=0).tolist(), "r_score_se": se.tolist()}


@dataclass
class SweepSummary:
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
    def done(self) -> list[JobEntry]:
        return done_jobs(self.jobs, self.unreadable)

    @property
    def n_done(self) -> int:
        return len(self.done)

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

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, test trial and channel (the columns of ``summary.csv``)."""
        rows = []
        for group in self.groups:
            for t, trial in enumerate(group.trials):
                for n, channel in enumerate(group.channels):
                    rows.append({"group": group.name, "trial": trial, "channel": channel,
                                 "n_models": int(group.n_models[t]), "r_pred": float(group.r_pred[t, n]),
                                 "r_score": float(group.r_score[t, n]), "r_score_se": float(group.r_score_se[t, n])})
        return rows

    def to_dict(self) -> dict[str, Any]:
        def job_ref(job: JobEntry) -> dict[str, Any]:
            return {"dir": job.name, "group": job.group, "fold": job.fold, "jackknife": job.jackknife,
                    "status": job.status}

        def nan_ref(entry: tuple[JobEntry, int, int, list[str]]) -> dict[str, Any]:
            job, n_nan, n_scores, reasons = entry
            return {**job_ref(job), "n_nan": n_nan, "n_scores": n_scores, "reasons": reasons}

        return jsonable({
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "complete": self.complete,
            "n_jobs": len(self.jobs),
            "n_done": self.n_done,
            "n_nan": self.n_nan,
            "groups": [
                {"group": g.name, "n_jobs": len(g.jobs), "n_done": g.n_done, "n_nan": g.n_nan,
                 "nan_jobs": [job.name for job, _, _, _ in g.nan_scores], "nan_reasons": g.nan_reasons,
                 "channels": g.channels, "trials": g.trials, "r_pred_mean": g.r_pred_mean,
                 "r_score_mean": g.r_score_mean, "per_channel": g.per_channel()}
                for g in self.groups
            ],
            "trials": self.rows(),
            "models": self.models,
            "missing": [job_ref(job) for job in self.missing],
            "incomplete": [job_ref(job) for job in self.incomplete],
            "unreadable": [{**job_ref(job), "error": reason} for job, reason in self.unreadable],
            "nan": [nan_ref(entry) for entry in self.nan_scores],
        })

    def write(self) -> None:
        """``summary.csv`` and ``summary.json`` in the sweep directory (each replaced atomically)."""
        csv_tmp = self.sweep_dir / (SUMMARY_CSV + ".tmp")
        with csv_tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows())
        csv_tmp.replace(self.sweep_dir / SUMMARY_CSV)
        json_tmp = self.sweep_dir / (SUMMARY_JSON + ".tmp")
        json_tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        json_tmp.replace(self.sweep_dir / SUMMARY_JSON)

    # -- printing ------------------------------------------------------------------------------------------------
    def format_table(self, max_rows: int = 20) -> str:
        lines = [f"dstrf-aggregate: {self.sweep_dir}: {self.n_done} of {len(self.jobs)} jobs done"]
        for group in self.groups:
            label = group.name or "(no swept settings)"
            lines.append("")
            nan = ""
            if group.n_nan:
                names = [job.name for job, _, _, _ in group.nan_scores]
                nan = (f", {group.n_nan} NaN scores from {len(names)} job{'s' if len(names) > 1 else ''} "
                       f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): its means are NaN")
            lines.append(f"group {label}: {group.n_done} of {len(group.jobs)} jobs done, "
                         f"{len(group.trials)} test trials{nan}")
            if not group.trials:
                continue
            per = group.per_channel()
            if not (group.n_models > 1).any():  # every trial has one model: no SE to show, none lacking
                per["r_score_se"] = [None] * len(group.channels)
            width = max(8, *(len(c) for c in group.channels))
            lines.append(f"  {'channel':<{width}}  {'r_pred':>7}  {'r_score':>7} ± {'SE':<6}")
            for n in _elide(len(group.channels), max_rows):
                if n < 0:
                    lines.append(f"  {'...':<{width}}")
                    continue
                lines.append(f"  {group.channels[n]:<{width}}  {_fmt(per['r_pred'][n])}  "
                             f"{_fmt(per['r_score'][n])} ± {_fmt(per['r_score_se'][n], 6).strip():<6}")
            lines.append(f"  {'mean':<{width}}  {_fmt(group.r_pred_mean)}  {_fmt(group.r_score_mean)}")
            models = [m for m in self.models if m["group"] == group.name]
            if models:
                mwidth = max(8, *(len(m["dir"]) for m in models))
                lines.append(f"  {'model':<{mwidth}}  {'fold':>4}  {'jk':>4}  {'epochs':>6}  {'test r':>7}")
                for k in _elide(len(models), max_rows):
                    if k < 0:
                        lines.append(f"  {'...':<{mwidth}}")
                        continue
                    m = models[k]
                    lines.append(f"  {m['dir']:<{mwidth}}  {_fmt_int(m['fold']):>4}  {_fmt_int(m['jackknife']):>4}  "
                                 f"{_fmt_int(m['epochs']):>6}  {_fmt(m['test_r_mean'])}")
        if self.groups:
            lines.append("")
            lines.append(f"written: {self.sweep_dir / SUMMARY_CSV}, {self.sweep_dir / SUMMARY_JSON}")
        return "\n".join(lines)

    def format_problems(self, max_rows: int = 100) -> str:
        """A loud list of every job that is not done and every job with NaN scores (empty when there is none)."""
        problems = [(job, "MISSING", "never started: no job.json") for job in self.missing]
        problems += [(job, "INCOMPLETE", "started but no done.json: still running, interrupted or failed")
                     for job in self.incomplete]
        problems += [(job, "UNREADABLE", reason) for job, reason in self.unreadable]
        nan = [(job, "NAN", f"{n_nan} of its {n_scores} test scores are NaN; {reasons[0] if reasons else ''}"
                + (f" (and {len(reasons) - 1} more reasons in {SUMMARY_JSON})" if len(reasons) > 1 else ""))
               for job, n_nan, n_scores, reasons in self.nan_scores]
        nan += [(None, "NAN", f"group {group.name or '(no swept settings)'}: {reason}")
                for group in self.groups for reason in group.nan_reasons]
        if not problems and not nan:
            return ""
        bar = "!" * 100
        lines = [bar]
        if problems:
            lines.append(f"!!! {len(problems)} of {len(self.jobs)} jobs of {self.sweep_dir} are NOT done; the summary "
                         f"covers the {self.n_done} done jobs only:")
            lines += _problem_lines(problems, max_rows)
            lines.append("!!! rerun the same sweep command to run them: done jobs are skipped, interrupted ones resume")
        if nan:
            jobs = len(self.nan_scores)
            lines.append(f"!!! {self.n_nan} test scores of {jobs} job{'s' if jobs != 1 else ''} of {self.sweep_dir} are "
                         "NaN (non-finite scores): every mean that includes them is NaN. A non-finite prediction is a "
                         "diverged fit (rerun it with a lower learning rate); a constant channel has no correlation:")
            lines += _problem_lines(nan, max_rows)
        lines.append(bar)
        return "\n".join(lines)


def _problem_lines(problems: list[tuple[JobEntry | None, str, str]], max_rows: int) -> list[str]:
    lines = [f"!!!   {kind:<10}  {job.name + '  ' if job is not None else ''}({why})"
             for job, kind, why in problems[:max_rows]]
    if len(problems) > max_rows:
        lines.append(f"!!!   ... and {len(problems) - max_rows} more (all listed in {SUMMARY_JSON})")
    return lines


def _elide(n: int, max_rows: int) -> list[int]:
    if n <= max_rows:
        return list(range(n))
    return list(range(max_rows // 2)) + [-1] + list(range(n - max_rows // 4, n))


def _fmt(value: Any, width: int = 7) -> str:
    """``-`` for a value that does not apply (None), ``nan`` for a NaN score (it must show), else 3 decimals."""
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:{width}.3f}"  # NaN prints as "nan"


def _fmt_int(value: Any) -> str:
    return "-" if value is None else str(value)


def _summarise_group(name: str, jobs: list[JobEntry], models: list[dict]) -> GroupSummary:
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
        model = {
            "group": name, "dir": job.name, "num": job.num, "fold": job.fold, "jackknife": job.jackknife,
            "model": metrics.get("model"), "epochs": metrics.get("epochs"),
            "left_out": (metrics.get("split") or {}).get("left_out"),
            "val_r_mean": (metrics.get("val") or {}).get("r_mean"),
            "test_trials": [], "test_r": None, "test_r_mean": None, "per_trial": {}, "n_nan": 0, "nan_reasons": [],
        }
        has_test = bool((metrics.get("split") or {}).get("test")) or "test" in metrics
        if not (job.dir / "test_predictions.npz").is_file():
            if has_test or not metrics:
                unreadable.append((job, "done.json but no test_predictions.npz" if metrics else
                                   "done.json but no metrics.json or test_predictions.npz"))
                continue
            models.append(model)  # a job without test trials: nothing to score
            continue
        try:
            out = _load_test_outputs(job)
        except (OSError, ValueError, KeyError) as err:
            unreadable.append((job, f"cannot read test_predictions.npz: {err}"))
            continue
        if group.channels and out.channels != group.channels:
            unreadable.append((job, f"its channels {out.channels[:5]}... differ from those of the group's other "
                                    f"jobs {group.channels[:5]}..."))
            continue
        ids = sorted(out.predictions)
        for i in ids:
            if i in responses:
                first, response = responses[i]
                if out.responses[i].shape != response.shape or not np.allclose(out.responses[i], response,
                                                                               equal_nan=True):
                    raise ValueError(f"group {name!r}: jobs {first} and {job.name} saved different measured responses "
                                     f"for trial {i}; are they from the same data?")
        group.channels = group.channels or out.channels
        w = out.warmup
        per_trial, reasons = {}, []
        for i in ids:
            per_trial[i], why = _scored(out.predictions[i][:, w:], out.responses[i][:, w:], f"trial {i}")
            reasons += why
        # the pooled r is NaN only where some trial's is: its reasons would repeat theirs
        pooled = _scored(np.concatenate([out.predictions[i][:, w:] for i in ids], axis=-1),
                         np.concatenate([out.responses[i][:, w:] for i in ids], axis=-1), "")[0] if ids else None
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
        model.update(test_trials=ids, warmup=w, per_trial={str(i): r.tolist() for i, r in per_trial.items()},
                     test_r=None if pooled is None else pooled.tolist(),
                     test_r_mean=None if pooled is None else float(pooled.mean()), n_nan=n_nan,
                     nan_reasons=reasons)
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
        group.r_pred[t], why = _scored(mean_pred[:, w:], response[:, w:], f"trial {trial}, mean prediction")
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
            raise SweepDirectoryError(f"{sweep_dir} is a single run, not a sweep; dstrf-aggregate summarises a sweep "
                                 "directory (one subdirectory per job); see `dstrf-inspect` for a single run")
        raise SweepDirectoryError(f"{sweep_dir} holds no dstrf jobs: neither a sweep.json nor subdirectories (up to "
                             f"{SEARCH_DEPTH} levels deep) with job.json or metrics.json")
    by_group: dict[str, list[JobEntry]] = {}
    for job in jobs:
        by_group.setdefault(job.group, []).append(job)
    models: list[dict] = []
    groups = [_summarise_group(name, members, models) for name, members in by_group.items()]
    unreadable = [entry for group in groups for entry in group.unreadable]
    summary = SweepSummary(sweep_dir, jobs, groups, models, unreadable)
    if write:
        summary.write()
    return summary


# ---------------------------------------------------------------------------------------------------- entry points


class AggregateCallback(Callback):
    """Hydra callback: aggregate the sweep directory when a multirun ends. Register it as
    ``hydra.callbacks.aggregate._target_: dstrf.sweep.aggregate.AggregateCallback``. It never raises: a failed
    aggregation is logged, and does not make a finished sweep look failed."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            summary = aggregate(sweep_dir)
            print(summary.format_table(), flush=True)
            problems = summary.format_problems()
            if problems:
                print(problems, file=sys.stderr, flush=True)
        except Exception as err:  # noqa: BLE001 -- by design: aggregation must never fail the sweep
            log.error(f"dstrf: aggregating the sweep failed ({type(err).__name__}: {err}); "
                      f"run `dstrf-aggregate SWEEP_DIR` to retry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dstrf-aggregate",
        description="Per-trial, jackknife-aware test scores of a dstrf sweep, from its done jobs: writes "
                    "summary.csv and summary.json into the sweep directory. Exit status 0: every job done; "
                    "2: some jobs missing or incomplete (summary of the done ones); 1: error.",
    )
    parser.add_argument("sweep_dir", help="the sweep directory (holds sweep.json or one subdirectory per job)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print no table (jobs that are not done are still reported on stderr)")
    args = parser.parse_args(argv)
    try:
        summary = aggregate(args.sweep_dir)
    except (OSError, ValueError) as err:
        print(f"dstrf-aggregate: error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary.format_table(), flush=True)
    problems = summary.format_problems()
    if problems:
        print(problems, file=sys.stderr, flush=True)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
