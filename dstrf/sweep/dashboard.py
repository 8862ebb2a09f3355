"""The sweep's own wandb run (``job_type="summary"``, in the sweep's group) and the figures of the sweep summary.

Written by the aggregation when a multirun ends and by ``dstrf-aggregate``, beside ``summary.csv``:

- ``summary_channels.png``: per channel, the mean over test trials of r_score (each model's own r, jackknife
  SE as error bars) and r_pred (the r of the jackknife-averaged prediction), one panel per group;
- ``summary_models.png`` (two or more groups, e.g. ``-m model=linear_strf,deep_encoder``): the per-channel
  r_score of every group against the first's, with the identity line.

When the sweep's jobs logged to wandb (a ``wandb_logger`` among their ``logger`` configs), the same table
(``summary/channels``: group, channel, r_pred, r_score, r_score_se), the figures and the group means go to
one more run of the same project and group, named ``summary``, with an id derived from the sweep so that a
re-aggregation continues it. Its mode follows the jobs' (``auto`` goes offline without a server).
``dstrf-estimate`` adds a run of the same group with ``job_type="estimate"`` (``estimate dstrf`` or
``estimate gradmap``): its figures and nonlinearity tables (:func:`log_estimate_run`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from ..runs.discovery import JobEntry, find_jobs
from .summary import SweepSummary

__all__ = [
    "channels_figure",
    "log_estimate_run",
    "log_summary_run",
    "models_figure",
    "per_channel",
    "summary_figures",
    "wandb_config",
]


def per_channel(summary: SweepSummary) -> pd.DataFrame:
    """One row per group and channel: ``group, channel, r_pred, r_score, r_score_se`` (see
    :meth:`GroupSummary.per_channel`); the ungrouped sweep's group is ``"all jobs"``."""
    frames = [pd.DataFrame(g.per_channel()).assign(group=g.name or "all jobs") for g in summary.groups if g.trials]
    columns = ["group", "channel", "r_pred", "r_score", "r_score_se"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def channels_figure(table: pd.DataFrame) -> Figure:
    """Per channel and group of ``table`` (:func:`per_channel`): r_score with its jackknife SE and r_pred."""
    groups = list(dict.fromkeys(table["group"]))
    figure, axes = plt.subplots(
        len(groups),
        1,
        figsize=(max(6.0, 0.35 * table["channel"].nunique() + 2), 2.6 * len(groups) + 0.6),
        layout="constrained",
        squeeze=False,
    )
    for ax, group in zip(axes[:, 0], groups):
        rows = table[table["group"] == group]
        x = np.arange(len(rows))
        ax.errorbar(
            x,
            rows["r_score"],
            yerr=rows["r_score_se"].fillna(0),
            fmt="o",
            ms=4,
            capsize=2,
            label="r_score: mean of the models' r (error bar: jackknife SE)",
        )
        ax.plot(x, rows["r_pred"], "x", color="C3", label="r_pred: r of the jackknife-mean prediction")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_xticks(x, rows["channel"], rotation=90 if len(rows) > 8 else 0, fontsize=7)
        ax.set_ylabel("test r (Pearson)")
        ax.set_title(f"{group}: per channel, mean over test trials", fontsize=9, loc="left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=2, frameon=False)
    return figure


def models_figure(table: pd.DataFrame) -> Figure:
    """The per-channel r_score of every group of ``table`` against the first group's, with the identity line."""
    groups = list(dict.fromkeys(table["group"]))
    first = table[table["group"] == groups[0]].set_index("channel")["r_score"]
    figure, ax = plt.subplots(figsize=(5.2, 5.0), layout="constrained")
    for group in groups[1:]:
        other = table[table["group"] == group].set_index("channel")["r_score"].reindex(first.index)
        ax.plot(first.values, other.values, "o", ms=4, label=group)
    limits = [float(np.nanmin([table["r_score"].min(), 0])), float(np.nanmax([table["r_score"].max(), 0.1]))]
    ax.plot(limits, limits, color="0.6", lw=0.8, label="equal r")
    ax.set_xlabel(f"test r_score per channel: {groups[0]}")
    ax.set_ylabel("test r_score per channel: the other group")
    ax.set_title("model vs model, per channel", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="upper left")
    return figure


def summary_figures(summary: SweepSummary) -> list[Path]:
    """``summary_channels.png`` and, with two or more groups, ``summary_models.png`` in the sweep directory."""
    table = per_channel(summary)
    if table.empty:
        return []
    figures = {"summary_channels.png": channels_figure(table)}
    if table["group"].nunique() >= 2:
        figures["summary_models.png"] = models_figure(table)
    written = []
    for name, figure in figures.items():
        written.append(summary.sweep_dir / name)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    return written


def wandb_config(jobs: Sequence[JobEntry]) -> dict[str, Any] | None:
    """The wandb logger config of the sweep's ``jobs`` (from the first done job's ``.hydra/config.yaml``), or
    None when they did not log to wandb."""
    for job in jobs:
        path = job.dir / ".hydra" / "config.yaml"
        if job.status != "done" or not path.is_file():
            continue
        composed: Any = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        loggers = composed.get("logger") or {}
        entries = [loggers] if "_target_" in loggers else list(loggers.values())
        for entry in entries:
            if isinstance(entry, dict) and str(entry.get("_target_", "")).endswith("wandb_logger"):
                return {str(k): v for k, v in entry.items()}
        return None
    return None


def _sweep_run(sweep_dir: Path, config: dict[str, Any], name: str, job_type: str):
    """A wandb logger for one more run of the sweep's group, its id derived from the sweep and ``name`` (so a
    second aggregation or estimate continues it)."""
    from ..lit.loggers import wandb_logger

    group = sweep_dir.resolve().name
    return wandb_logger(
        project=str(config.get("project") or "dstrf"),
        save_dir=str(sweep_dir),
        name=name,
        group=group,
        job_type=job_type,
        id=hashlib.sha256(f"{name}:{group}".encode()).hexdigest()[:16],
        mode=str(config.get("mode") or "auto"),
        sync_hint=f"dstrf-sync {sweep_dir}",
    )


def _logged(logger, log) -> str:
    """Run ``log(run)`` in the logger's run and finish it (failed if ``log`` raised); the run's id."""
    try:
        run = logger.experiment
        log(run)
        run.finish(exit_code=0)
    except BaseException:
        if getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish(exit_code=1)
        raise
    return str(run.id)


def log_summary_run(summary: SweepSummary, figures: list[Path]) -> str | None:
    """The sweep's summary run (see the module docstring); its id, or None when the jobs did not use wandb."""
    config = wandb_config(summary.jobs)
    if config is None:
        return None
    import wandb

    def log(run) -> None:
        run.log({"summary/channels": wandb.Table(dataframe=per_channel(summary))})
        for path in figures:
            run.log({f"summary/{path.stem}": wandb.Image(str(path))})
        run.summary.update(
            {
                "n_jobs": len(summary.jobs),
                "n_done": summary.n_done,
                **{f"{g.name or 'sweep'}/r_pred_mean": g.r_pred_mean for g in summary.groups},
                **{f"{g.name or 'sweep'}/r_score_mean": g.r_score_mean for g in summary.groups},
            }
        )

    return _logged(_sweep_run(summary.sweep_dir, config, "summary", "summary"), log)


def log_estimate_run(sweep_dir: str | Path, out: str | Path, kind: str, index: dict[str, Any]) -> str | None:
    """``dstrf-estimate``'s run of the sweep's group (``job_type="estimate"``, named ``estimate <kind>``,
    ``kind`` "dstrf" or "gradmap"): every figure under ``out`` (key ``estimate/<kind>/<path in out>``), every
    ``nonlinearities_by_channel.csv`` as a table, and how many units were written, kept and failed. Its id, or
    None when the sweep's jobs did not log to wandb."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    config = wandb_config(find_jobs(sweep_dir))
    if config is None:
        return None
    import wandb

    written = index.get("trials", index.get("folds", []))

    def log(run) -> None:
        for path in sorted(out.rglob("*.png")):
            run.log({f"estimate/{kind}/{path.relative_to(out).with_suffix('').as_posix()}": wandb.Image(str(path))})
        for path in sorted(out.rglob("nonlinearities_by_channel.csv")):
            key = f"estimate/{kind}/{path.relative_to(out).with_suffix('').as_posix()}"
            run.log({key: wandb.Table(dataframe=pd.read_csv(path))})
        run.summary.update(
            {"n_written": len(written), "n_kept": int(index.get("kept", 0)), "n_failed": len(index.get("failed", []))}
        )

    return _logged(_sweep_run(sweep_dir, config, f"estimate {kind}", "estimate"), log)
