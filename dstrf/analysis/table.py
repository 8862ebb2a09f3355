"""All four nonlinearity measures per channel as one table, and a figure that compares channels.

``nonlinearities(W)`` reads every channel once and computes complexity, gain change, temporal hold and shape
change from it; the result is a small table (a list of dict rows, no pandas) with ``to_csv``.
``plot_nonlinearities(table)`` draws complexity against gain change, temporal hold against shape change and,
given each channel's prediction r of a linear and a deep model, the deep model's prediction gain
``r_deep - r_linear`` against complexity, as Keshishian et al. (eLife 2020) relate them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..validation import positive_int
from .inputs import DEFAULT_CHUNK, check_alpha
from .measures import (
    GAIN_VARIANTS,
    _check_max_shift,
    _check_tau_max,
    _complexity,
    _gain_change,
    _opened,
    _shape_change,
    _temporal_hold,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NonlinearityTable", "nonlinearities", "plot_nonlinearities", "stack_tables", "by_channel", "MEASURES"]

#: The measure columns, in table order.
MEASURES = ("complexity", "gain_change", "temporal_hold", "shape_change")


@dataclass
class NonlinearityTable:
    """One row per channel: ``channel`` (its number), ``name``, ``frames`` (nonzero frames), the four
    measures and, when given, ``r_linear``, ``r_deep`` and ``prediction_gain = r_deep - r_linear``.

    ``settings`` records the parameters (gain-change variant, tau_max, alpha, max_shift); ``details`` maps each
    measure to its per-channel details objects when asked for.
    """

    rows: list[dict]
    settings: dict = field(default_factory=dict)
    details: dict[str, list] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    def column(self, name: str) -> np.ndarray:
        """One column as an array (float64 for numbers)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {self.columns}")
        values = [row[name] for row in self.rows]
        return np.asarray(values, dtype=object if isinstance(values[0], str) else np.float64)

    def __len__(self) -> int:
        return len(self.rows)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (a header line, full-precision floats); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def __str__(self) -> str:
        cells = [[_fmt(row[c]) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None) -> Figure:
        """:func:`plot_nonlinearities` of this table."""
        return plot_nonlinearities(self, path=path)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _per_channel(values, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != n:
        raise ValueError(f"{name} must hold one value per chosen channel ({n}); got {len(values)}")
    return values


def nonlinearities(W, channels: Sequence[int] | None = None, *, names: Sequence[str] | None = None,
                   r_linear=None, r_deep=None, gain_variant: str = "norm_cv", tau_max: int | None = None,
                   alpha: float = 0.05, max_shift: int | None = None, max_iter: int = 20, details: bool = False,
                   chunk_size: int = DEFAULT_CHUNK, progress: bool = True) -> NonlinearityTable:
    """Complexity, gain change, temporal hold and shape change of every chosen channel, as one table.

    Each channel is read once (kept in memory while its four measures run, when it fits; see
    :mod:`dstrf.analysis.inputs`), so a dSTRF file is read one channel at a time.

    Parameters
    ----------
    W : ``(T, N, F, L)``
        dSTRFs: tensor, array, dSTRF file or its path.
    channels : sequence of int, optional
        Channel numbers (default all).
    names : sequence of str, optional
        A name per chosen channel (e.g. ``trials.channel_names``), for the table and the figure.
    r_linear, r_deep : array-like, optional
        Prediction accuracy (e.g. test Pearson r) of a linear and a deep model per chosen channel; adds
        ``r_linear``, ``r_deep`` and ``prediction_gain = r_deep - r_linear``.
    gain_variant, tau_max, alpha, max_shift, max_iter
        As in :func:`~dstrf.analysis.gain_change`, :func:`~dstrf.analysis.temporal_hold` and
        :func:`~dstrf.analysis.shape_change`.
    details : bool
        Keep every measure's per-channel details in ``table.details``.
    chunk_size : int
        Frames per block for channels read block by block.
    progress : bool
        A progress bar over the channels (a long trial takes seconds per channel).
    """
    from tqdm.auto import tqdm

    if gain_variant not in GAIN_VARIANTS:
        raise ValueError(f"unknown gain-change variant {gain_variant!r}; valid: {sorted(GAIN_VARIANTS)}")
    alpha = check_alpha(alpha)
    max_iter = positive_int(max_iter, "max_iter")
    chunk_size = positive_int(chunk_size, "chunk_size")
    with _opened(W) as source:
        source.require_consecutive_frames("temporal hold")
        tau_max, max_shift = _check_tau_max(tau_max, source.n_lags), _check_max_shift(max_shift, source.n_lags)
        chosen = source.select(channels)
        if names is not None and len(names) != len(chosen):
            raise ValueError(f"names must hold one name per chosen channel ({len(chosen)}); got {len(names)}")
        r_linear, r_deep = _per_channel(r_linear, len(chosen), "r_linear"), _per_channel(r_deep, len(chosen), "r_deep")
        rows, found = [], {m: [] for m in MEASURES}
        bar = tqdm(chosen, desc="nonlinearities", unit="channel", leave=False, disable=not progress or len(chosen) < 2)
        for i, (channel, position) in enumerate(bar):
            data = source.channel(channel, position, chunk_size)
            results = {"complexity": _complexity(data),
                       "gain_change": _gain_change(data, GAIN_VARIANTS[gain_variant], False),
                       "temporal_hold": _temporal_hold(data, tau_max, alpha)}
            results["shape_change"] = _shape_change(data, max_shift, max_iter, unaligned=results["complexity"])
            row = {"channel": channel, "name": str(names[i]) if names is not None else str(channel),
                   "frames": int(results["gain_change"].used.sum())}
            row.update({m: results[m].value for m in MEASURES})
            if r_linear is not None:
                row["r_linear"] = float(r_linear[i])
            if r_deep is not None:
                row["r_deep"] = float(r_deep[i])
            if r_linear is not None and r_deep is not None:
                row["prediction_gain"] = float(r_deep[i] - r_linear[i])
            rows.append(row)
            for m in MEASURES:
                found[m].append(results[m])
            del data  # the cached channel goes before the next one is read
    settings = {"gain_variant": GAIN_VARIANTS[gain_variant], "tau_max": tau_max, "alpha": alpha,
                "max_shift": max_shift, "max_iter": max_iter}
    return NonlinearityTable(rows, settings, found if details else None)


def stack_tables(tables: Mapping[int, NonlinearityTable]) -> NonlinearityTable:
    """One table of several trials' tables: their rows, each with a leading ``trial`` column, trial by trial."""
    if not tables:
        raise ValueError("no tables to stack: give at least one trial's table")
    settings = {json.dumps(t.settings, sort_keys=True) for t in tables.values()}
    if len(settings) > 1:
        raise ValueError(f"the tables were computed with different settings: {sorted(settings)}")
    rows = [{"trial": int(trial), **row} for trial in sorted(tables) for row in tables[trial].rows]
    return NonlinearityTable(rows, dict(next(iter(tables.values())).settings))


def by_channel(table: NonlinearityTable) -> NonlinearityTable:
    """Per channel, the mean of every numeric column over the table's trials, with ``trials`` (how many).

    A channel's temporal hold is averaged like the rest (a mean number of frames). Rows with NaN in a
    measure (e.g. a channel whose dSTRF is all zeros in a trial) are left out of that measure's mean.
    """
    if not len(table):
        raise ValueError("the table has no rows")
    groups: dict[int, list[dict]] = {}
    for row in table.rows:
        groups.setdefault(int(row["channel"]), []).append(row)
    numeric = [c for c in table.columns if c not in ("trial", "channel", "name")]
    rows = []
    for channel in sorted(groups):
        members = groups[channel]
        row = {"channel": channel, "name": members[0]["name"], "trials": len(members)}
        for column in numeric:
            values = np.asarray([m[column] for m in members], dtype=np.float64)
            finite = values[np.isfinite(values)]
            row[column] = float(finite.mean()) if finite.size else math.nan
        rows.append(row)
    return NonlinearityTable(rows, dict(table.settings))


def plot_nonlinearities(table: NonlinearityTable, r_linear=None, r_deep=None,
                        path: str | os.PathLike | None = None) -> Figure:
    """Compare channels: complexity vs gain change, temporal hold vs shape change, and (when the table has
    ``prediction_gain`` or ``r_linear``/``r_deep`` are given, one per row) the deep model's prediction gain vs
    complexity with its least-squares line and Pearson r. Channels are labelled by name when there are at
    most 20. Saved as PNG to ``path`` if given (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: matplotlib only for figures
    from matplotlib.figure import Figure

    if not len(table):
        raise ValueError("the table has no rows to plot")
    gain = None
    if r_linear is not None or r_deep is not None:
        if r_linear is None or r_deep is None:
            raise ValueError("pass both r_linear and r_deep (one per row), or neither")
        gain = _per_channel(r_deep, len(table), "r_deep") - _per_channel(r_linear, len(table), "r_linear")
    elif "prediction_gain" in table.columns:
        gain = table.column("prediction_gain")
    variant = table.settings.get("gain_variant", "norm_cv")
    panels = [("complexity", "gain_change", "complexity", f"gain change ({variant})"),
              ("temporal_hold", "shape_change", "temporal hold (frames)", "shape change")]
    fig = Figure(figsize=(4.2 * (len(panels) + (gain is not None)), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    names = [row["name"] for row in table.rows]
    axes = fig.subplots(1, len(panels) + (gain is not None), squeeze=False)[0]
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        _scatter(ax, table.column(x), table.column(y), names)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if gain is not None:
        ax = axes[-1]
        x = table.column("complexity")
        _scatter(ax, x, gain, names)
        ok = np.isfinite(x) & np.isfinite(gain)
        if ok.sum() >= 3 and np.ptp(x[ok]) > 0:
            slope, intercept = np.polyfit(x[ok], gain[ok], 1)
            grid = np.linspace(x[ok].min(), x[ok].max(), 2)
            ax.plot(grid, slope * grid + intercept, color="0.3", lw=1)
            r = np.corrcoef(x[ok], gain[ok])[0, 1]
            ax.set_title(f"Pearson r = {r:.2f} (n = {int(ok.sum())})", fontsize=9)
        ax.axhline(0, color="0.7", lw=0.8, zorder=0)
        ax.set_xlabel("complexity")
        ax.set_ylabel("prediction gain  r_deep - r_linear")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def _scatter(ax, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    ax.scatter(x, y, s=22, alpha=0.8)
    if len(names) <= 20:
        for xi, yi, name in zip(x, y, names):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.grid(alpha=0.3)
