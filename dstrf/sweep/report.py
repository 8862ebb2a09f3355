"""``dstrf-report RUN_OR_SWEEP_DIR``: one self-contained HTML page of what a scientist looks at first.

The page (``report.html`` in the directory, or ``--out FILE``) holds, in this order:

- the setup: the data (its config, trials, channels, sampling rate), each group's model, the split scheme with
  its folds and replicates, and how many jobs are done, missing or incomplete (running, interrupted or failed)
  or have outputs that cannot be read;
- per group, the per-channel table: for a sweep ``r_pred`` (r of the jackknife-mean prediction), ``r_score``
  (mean of the models' r) and its jackknife SE, averaged over the test trials; for a single run the test r and,
  where the data have repeats, cc_norm;
- the sweep's figures (per-channel scores, model vs model), and the measured vs predicted response of the
  best and of the worst channel of each group on one of its test trials;
- the figures ``dstrf-estimate`` wrote (gradient maps, dSTRFs, nonlinearities) where it has run;
- one row per job with a link to its directory and its ``metrics.json``.

Figures are embedded as PNG data (``data:`` URIs) and no style or script is fetched, so the file opens
anywhere without a server or network; links to the jobs are relative, so they work as long as the file stays
where it was written relative to the sweep. Nothing in the run or sweep directory is changed except the
report itself. An existing report is replaced: it is derived from the files and is written again from them.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from .. import __version__
from ..plots import plot_prediction
from ..results import Experiment, ResultFileError, load
from .dashboard import channels_figure, models_figure, per_channel
from .summary import aggregate

__all__ = ["write_report", "main"]

#: The most figures of ``dstrf-estimate``'s folders embedded per folder (the rest are listed by name).
MAX_POSTHOC_FIGURES = 12

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.0em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.status-done { color: #176d2a; } .status-missing, .status-incomplete, .status-unreadable { color: #b00020; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
.note { color: #b00020; } table.setup td { text-align: left; }
"""

# Reports on the page itself whether every embedded figure decoded (data-figures-decoded on <html>), which a
# headless browser test reads back from the rendered DOM.
_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.documentElement.setAttribute("data-figures", String(images.length));
  document.documentElement.setAttribute("data-figures-decoded", String(decoded));
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _png(figure: Figure) -> str:
    """The figure as a ``data:`` URI (and closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as an HTML table; NaN shown as ``NaN`` (never blank or 0)."""
    return frame.to_html(index=False, na_rep="NaN", float_format=lambda v: f"{v:.{digits}f}", border=0, escape=True)


def _link(href: str, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


class _Page:
    """The report's sections, in order."""

    def __init__(self, experiment: Experiment, out: Path) -> None:
        self.experiment, self.out = experiment, out
        self.parts: list[str] = []
        self.done = [job for job in experiment.jobs if job.status == "done"]

    def name(self, job) -> str:
        """The job's name; a single run's is its directory's."""
        return self.experiment.dir.name if job.name == "." else job.name

    def href(self, path: Path) -> str:
        """``path`` relative to the report's folder, as a URL path."""
        return Path(os.path.relpath(path, self.out.parent)).as_posix()

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self, unreadable: Sequence[str] = (), notes: Sequence[str] = ()) -> None:
        """Data, channels, split, job counts (``unreadable``: the done jobs whose outputs cannot be read), the
        ``notes`` (shown as warnings) and the model and data configs."""
        exp = self.experiment
        first = self.done[0] if self.done else (exp.jobs[0] if exp.jobs else None)
        parts = ["<h2>Setup</h2>"]
        metrics = _metrics(first)
        config = first.config if first is not None else None
        channels = metrics.get("channels") or []
        rows = [
            ("directory", exp.dir.name),
            ("kind", f"{exp.kind} of {len(exp.jobs)} job{'s' * (len(exp.jobs) != 1)}"),
            ("data", _data_name(config)),
            ("channels", f"{len(channels)}: {', '.join(map(str, channels[:12]))}{' ...' * (len(channels) > 12)}"),
            ("sampling rate", f"{metrics['sfreq']:g} Hz" if metrics.get("sfreq") else "unknown"),
        ]
        split = metrics.get("split") or {}
        if split:
            folds = sorted({job.fold for job in exp.jobs if job.fold is not None})
            replicates = sorted({job.jackknife for job in exp.jobs if job.jackknife is not None})
            left_out = split.get("left_out")
            trials = sorted(
                set(split.get("train", []))
                | set(split.get("val", []))
                | set(split.get("test", []))
                | ({left_out} if left_out is not None else set())
            )
            rows.append(
                (
                    "split",
                    f"scheme {split.get('scheme', 'fixed')}; {len(trials)} trials; "
                    + (f"{len(folds)} fold{'s' * (len(folds) != 1)}" if len(folds) > 1 else "one split")
                    + (f" x {len(replicates)} jackknife replicates" if replicates else "")
                    + (
                        f" (this run: train {split.get('train')}, val {split.get('val')}, test {split.get('test')})"
                        if exp.kind == "run"
                        else ""
                    ),
                )
            )
        counts = {status: sum(job.status == status for job in exp.jobs) for status in ("done", "incomplete", "missing")}
        rows.append(
            (
                "jobs",
                f"{counts['done']} done, {counts['incomplete']} incomplete (running, interrupted or failed), "
                f"{counts['missing']} missing"
                + (f", {len(unreadable)} with outputs that cannot be read" if unreadable else ""),
            )
        )
        parts.append(_table(pd.DataFrame(rows, columns=["", "value"])).replace("<table", '<table class="setup"', 1))
        for line in notes:
            parts.append(f'<p class="note">{_e(line)}</p>')
        for group, job in _first_per_group(self.done).items():
            model = job.config.get("model") if job.config is not None else None
            if model is not None:
                label = group if exp.kind == "sweep" and group else "model"
                parts.append(f"<h3>{_e(label)}</h3><pre>{_e(OmegaConf.to_yaml(model, resolve=False))}</pre>")
        if config is not None and config.get("data") is not None:
            parts.append(f"<h3>data config</h3><pre>{_e(OmegaConf.to_yaml(config.data, resolve=False))}</pre>")
        self.parts.extend(parts)

    # -- scores ----------------------------------------------------------------------------------------------
    def sweep_scores(self, table: pd.DataFrame) -> None:
        parts = ["<h2>Per-channel scores</h2>"]
        if table.empty:
            parts.append('<p class="note">No done job has test scores yet.</p>')
        for group in dict.fromkeys(table["group"]):
            rows = table[table["group"] == group].drop(columns="group")
            parts.append(
                f"<h3>{_e(group)}</h3><p>Means over the test trials: r_pred is the r of the jackknife-mean "
                "prediction, r_score the mean of the models' own r, r_score_se its jackknife SE (NaN where a "
                "trial was tested by one model only).</p>" + _table(rows)
            )
        if not table.empty:
            parts.append(_figure(_png(channels_figure(table)), "Per channel: test r of each group"))
            if table["group"].nunique() >= 2:
                parts.append(_figure(_png(models_figure(table)), "Model vs model: per-channel r_score"))
        self.parts.extend(parts)

    def run_scores(self) -> pd.DataFrame:
        job = self.done[0] if self.done else None
        metrics = _metrics(job)
        parts = ["<h2>Per-channel scores</h2>"]
        test = metrics.get("test") or {}
        frame = pd.DataFrame(columns=["group", "channel", "r_score"])
        if not test.get("r"):
            parts.append('<p class="note">The run has no test scores (not done, or no test trials).</p>')
        else:
            columns: dict[str, Any] = {
                "channel": metrics["channels"],
                "val r": metrics["val"]["r"],
                "test r": test["r"],
            }
            if test.get("cc_norm"):
                columns["test cc_norm"] = test["cc_norm"]
            shown = pd.DataFrame(columns)
            parts.append(_table(shown))
            frame = pd.DataFrame({"group": "", "channel": metrics["channels"], "r_score": test["r"]})
        self.parts.extend(parts)
        return frame

    # -- best and worst channels -----------------------------------------------------------------------------
    def extremes(self, table: pd.DataFrame) -> None:
        parts = ["<h2>Best and worst channels</h2>"]
        shown = 0
        for group in dict.fromkeys(table["group"]):
            rows = table[table["group"] == group].dropna(subset=["r_score"])
            run_job = self.done[0] if self.experiment.kind == "run" and self.done else None
            job = next((j for j in self.done if _group_label(j.group) == group), run_job)
            if rows.empty or job is None:
                continue
            order = rows.sort_values("r_score", ascending=False)
            picks = [order.iloc[0]] + ([order.iloc[-1]] if len(order) > 1 else [])
            figure = _prediction_figure(job, self.name(job), [str(p["channel"]) for p in picks], group)
            if figure is not None:
                score = "test r" if self.experiment.kind == "run" else "r_score"
                best = f"best: {picks[0]['channel']} ({score} {picks[0]['r_score']:.3f})"
                worst = (
                    f"; worst: {picks[-1]['channel']} ({score} {picks[-1]['r_score']:.3f})" if len(picks) > 1 else ""
                )
                parts.append(_figure(_png(figure), f"{group or 'run'}: {best}{worst}; job {self.name(job)}"))
                shown += 1
        if not shown:
            parts.append('<p class="note">No done job has saved test predictions to draw.</p>')
        self.parts.extend(parts)

    # -- post hoc --------------------------------------------------------------------------------------------
    def posthoc(self) -> None:
        parts = []
        for folder, what in (("gradmap", "gradient maps"), ("dstrf", "dSTRFs and nonlinearities")):
            root = self.experiment.dir / folder
            pngs = sorted(root.rglob("*.png")) if root.is_dir() else []
            if not pngs:
                continue
            parts.append(f"<h3>{_e(what)} (dstrf-estimate, {_e(folder)}/)</h3>")
            for path in pngs[:MAX_POSTHOC_FIGURES]:
                parts.append(_figure(_file_png(path), path.relative_to(self.experiment.dir).as_posix()))
            if len(pngs) > MAX_POSTHOC_FIGURES:
                rest = [_link(self.href(p), p.relative_to(root).as_posix()) for p in pngs[MAX_POSTHOC_FIGURES:]]
                parts.append(f"<p>{len(rest)} more: {', '.join(rest)}</p>")
            csv = root.rglob("nonlinearities_by_channel.csv")
            for path in sorted(csv):
                parts.append(
                    f"<p>{_e(path.relative_to(self.experiment.dir).as_posix())}</p>" + _table(pd.read_csv(path))
                )
        if parts:
            self.parts.append("<h2>Post-hoc estimates</h2>" + "".join(parts))

    # -- jobs ------------------------------------------------------------------------------------------------
    def jobs(self) -> None:
        rows = []
        for job in self.experiment.jobs:
            row = job.row()
            status = "unreadable" if row["problem"] else row["status"]
            link = _link(self.href(job.dir) + "/", self.name(job)) if job.dir.is_dir() else _e(self.name(job))
            if (job.dir / "metrics.json").is_file():
                link += " (" + _link(self.href(job.dir / "metrics.json"), "metrics.json") + ")"
            cells = [
                link,
                f'<span class="status-{status}">{_e(status)}</span>',
                *(
                    _e("" if row[k] is None else f"{row[k]:.3f}" if isinstance(row[k], float) else row[k])
                    for k in ("fold", "jackknife", "epochs", "val_r", "test_r")
                ),
                _e(row["problem"] or ""),
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("job", "status", "fold", "jk", "epochs", "val r", "test r", "problem"))
        self.parts.append(f"<h2>Jobs</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def html(self) -> str:
        title = f"dstrf report: {self.experiment.dir.name}"
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style><script>{_CHECK}</script></head><body>"
            f"<h1>{_e(title)}</h1><p>Written {stamp} by dstrf {_e(__version__)} from {_e(self.experiment.dir)}.</p>"
            + "\n".join(self.parts)
            + "</body></html>\n"
        )


def _group_label(group: str) -> str:
    return group or "all jobs"


def _metrics(job) -> dict:
    if job is None:
        return {}
    try:
        return job.metrics or {}
    except ResultFileError:
        return {}


def _first_per_group(jobs) -> dict[str, Any]:
    first: dict[str, Any] = {}
    for job in jobs:
        first.setdefault(job.group, job)
    return first


def _data_name(config) -> str:
    if config is None or config.get("data") is None:
        return "unknown"
    trials = config.data.get("trials") or {}
    path = trials.get("path") if hasattr(trials, "get") else None
    target = (trials.get("_target_") if hasattr(trials, "get") else None) or config.data.get("_target_")
    return f"{path} ({target})" if path else str(target)


def _prediction_figure(job, name: str, channels: list[str], group: str) -> Figure | None:
    """Measured vs predicted response of ``channels`` on the job's first test trial, from its saved test
    predictions (in the data's units); None when the job saved none."""
    path = job.dir / "test_predictions.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as saved:
            names = [str(n) for n in saved["channel_names"]]
            trial = min(int(k.split("_", 1)[1]) for k in saved.files if k.startswith("trial_"))
            predicted, measured = saved[f"trial_{trial}"], saved[f"response_{trial}"]
            warmup = int(saved["warmup"])
    except (OSError, ValueError, KeyError):
        return None
    sfreq = float(_metrics(job).get("sfreq") or 1.0)
    rows = [names.index(c) for c in channels if c in names]
    model = _metrics(job).get("model", "model")
    return plot_prediction(
        measured,
        predicted,
        sfreq,
        names,
        rows,
        warmup=warmup,
        title=f"{model}{f' ({group})' if group else ''}, test trial {trial}: measured vs predicted (job {name})",
    )


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of the run or sweep directory ``path`` (see the module docstring); its path."""
    experiment = load(path)
    target = Path(out).absolute() if out is not None else experiment.dir / "report.html"
    page = _Page(experiment, target)
    if experiment.kind == "sweep" and experiment.jobs:
        summary = aggregate(experiment.dir, write=False)
        notes = [f"{job.name}: {reason}" for job, reason in summary.unreadable]
        if not summary.complete:
            notes.insert(0, "The sweep is not complete: its scores cover the done jobs only.")
        page.setup([job.name for job, _ in summary.unreadable], notes)
        table = per_channel(summary)
        page.sweep_scores(table)
    else:
        page.setup()
        table = page.run_scores()
    page.extremes(table)
    page.posthoc()
    page.jobs()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(page.html(), encoding="utf-8")
    tmp.replace(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstrf-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a dstrf run directory or sweep directory")
    parser.add_argument("--out", type=Path, help="the HTML file to write (default PATH/report.html)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.path, args.out)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"dstrf-report: error: {error}", file=sys.stderr)
        return 1
    print(f"dstrf-report: {written} ({written.stat().st_size / 1e6:.1f} MB, self-contained; open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
