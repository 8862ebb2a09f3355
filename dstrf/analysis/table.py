"""All four nonlinearity measures per channel as one table, and a figure that compares channels.

``nonlinearities(W)`` reads every channel once and computes complexity, gain change, temporal hold and shape
change from it; the result is a small table (a :class:`pandas.DataFrame` inside, with ``to_csv``).
``plot_nonlinearities(table)`` draws complexity against gain change, temporal hold against shape change and,
given each channel's prediction r of a linear and a deep model, the deep model's prediction gain
``r_deep - r_linear`` against complexity, as Keshishian et al. (eLife 2020) relate them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from ..tables import format_table
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

    from .measures import ComplexityDetails, GainChangeDetails, ShapeChangeDetails, TemporalHoldDetails

    _Details = ComplexityDetails | GainChangeDetails | TemporalHoldDetails | ShapeChangeDetails

__all__ = ["NonlinearityTable", "nonlinearities", "plot_nonlinearities", "stack_tables", "by_channel", "MEASURES"]

#: The measure columns, in table order.
MEASURES = ("complexity", "gain_change", "temporal_hold", "shape_change")


class NonlinearityTable:
    """One row per channel: ``channel`` (its number), ``name``, ``frames`` (nonzero frames), the four
    measures and, when given, ``r_linear``, ``r_deep`` and ``prediction_gain = r_deep - r_linear``.

    ``frame`` is the table as a :class:`pandas.DataFrame` (``groupby``, ``merge`` and plotting come with it);
    ``rows`` the same as a list of dicts. ``settings`` records the parameters (gain-change variant, tau_max,
    alpha, max_shift); ``details`` maps each measure to its per-channel details objects when asked for.
    """

    def __init__(
        self,
        rows: pd.DataFrame | Sequence[Mapping] = (),
        settings: dict | None = None,
        details: dict[str, list] | None = None,
    ) -> None:
        self.frame = (
            rows.reset_index(drop=True) if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
        )
        self.settings = dict(settings or {})
        self.details = details

    @property
    def rows(self) -> list[dict]:
        return self.frame.to_dict("records")

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def column(self, name: str) -> np.ndarray:
        """One column as an array (float64 for numbers)."""
        if name not in self.frame.columns:
            raise KeyError(f"no column {name!r}; columns: {self.columns}")
        values = self.frame[name]
        text = values.map(lambda v: isinstance(v, str)).any()
        return values.to_numpy(dtype=object if text else np.float64)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"NonlinearityTable({len(self)} rows, columns {self.columns})"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (a header line, full-precision floats, NaN as ``nan``); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame.to_csv(path, index=False, na_rep="nan")
        return path

    def __str__(self) -> str:
        return format_table(self.frame, float_format=".4g")

    def plot(self, path: str | os.PathLike | None = None) -> Figure:
        """:func:`plot_nonlinearities` of this table."""
        return plot_nonlinearities(self, path=path)


@overload
def _per_channel(values: None, n: int, name: str) -> None: ...
@overload
def _per_channel(values: object, n: int, name: str) -> np.ndarray: ...
def _per_channel(values, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != n:
        raise ValueError(f"{name} must hold one value per chosen channel ({n}); got {len(values)}")
    return values


def nonlinearities(
    W,
    channels: Sequence[int] | None = None,
    *,
    names: Sequence[str] | None = None,
    r_linear=None,
    r_deep=None,
    gain_variant: str = "norm_cv",
    tau_max: int | None = None,
    alpha: float = 0.05,
    max_shift: int | None = None,
    max_iter: int = 20,
    details: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = True,
) -> NonlinearityTable:
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
        rows: list[dict[str, Any]] = []
        found: dict[str, list[_Details]] = {m: [] for m in MEASURES}
        bar = tqdm(chosen, desc="nonlinearities", unit="channel", leave=False, disable=not progress or len(chosen) < 2)
        for i, (channel, position) in enumerate(bar):
            data = source.channel(channel, position, chunk_size)
            complexity = _complexity(data)
            gain_change = _gain_change(data, GAIN_VARIANTS[gain_variant], False)
            results: dict[str, _Details] = {
                "complexity": complexity,
                "gain_change": gain_change,
                "temporal_hold": _temporal_hold(data, tau_max, alpha),
            }
            results["shape_change"] = _shape_change(data, max_shift, max_iter, unaligned=complexity)
            row = {
                "channel": channel,
                "name": str(names[i]) if names is not None else str(channel),
                "frames": int(gain_change.used.sum()),
            }
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
    settings = {
        "gain_variant": GAIN_VARIANTS[gain_variant],
        "tau_max": tau_max,
        "alpha": alpha,
        "max_shift": max_shift,
        "max_iter": max_iter,
    }
    return NonlinearityTable(rows, settings, found if details else None)


def stack_tables(tables: Mapping[int, NonlinearityTable]) -> NonlinearityTable:
    """One table of several trials' tables: their rows, each with a leading ``trial`` column, trial by trial."""
    if not tables:
        raise ValueError("no tables to stack: give at least one trial's table")
    settings = {json.dumps(t.settings, sort_keys=True) for t in tables.values()}
    if len(settings) > 1:
        raise ValueError(f"the tables were computed with different settings: {sorted(settings)}")
    frames = [tables[trial].frame.assign(trial=int(trial)) for trial in sorted(tables)]
    stacked = pd.concat(frames, ignore_index=True)
    stacked = stacked[["trial", *(c for c in stacked.columns if c != "trial")]]
    return NonlinearityTable(stacked, dict(next(iter(tables.values())).settings))


def by_channel(table: NonlinearityTable) -> NonlinearityTable:
    """Per channel, the mean of every numeric column over the table's trials, with ``trials`` (how many).

    A channel's temporal hold is averaged like the rest (a mean number of frames). Rows with NaN in a
    measure (e.g. a channel whose dSTRF is all zeros in a trial) are left out of that measure's mean.
    """
    if not len(table):
        raise ValueError("the table has no rows")
    frame = table.frame.assign(channel=table.frame["channel"].astype(int))
    numeric = [c for c in frame.columns if c not in ("trial", "channel", "name")]
    groups = frame.groupby("channel", sort=True)
    summary = pd.concat(
        [groups["name"].first(), groups.size().rename("trials"), groups[numeric].mean().astype(np.float64)], axis=1
    ).reset_index()
    return NonlinearityTable(summary, dict(table.settings))


def plot_nonlinearities(
    table: NonlinearityTable,
    r_linear=None,
    r_deep=None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Compare channels: complexity vs gain change, temporal hold vs shape change, and (when the table has
    ``prediction_gain`` or ``r_linear``/``r_deep`` are given, one per row) the deep model's prediction gain vs
    complexity with its least-squares line and Pearson r. Channels are labelled by name when there are at
    most 20. ``title`` (what the dSTRFs are: model, trials) heads the figure. Saved as PNG to ``path`` if given
    (Agg, no display needed)."""
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
    panels = [
        ("complexity", "gain_change", "complexity (sum of singular values / largest)", f"gain change ({variant})"),
        ("temporal_hold", "shape_change", "temporal hold (frames)", "shape change (complexity after alignment)"),
    ]
    fig = Figure(figsize=(4.2 * (len(panels) + (gain is not None)), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    names = [row["name"] for row in table.rows]
    axes = fig.subplots(1, len(panels) + (gain is not None), squeeze=False)[0]
    for ax, (x_column, y_column, xlabel, ylabel) in zip(axes, panels):
        _scatter(ax, table.column(x_column), table.column(y_column), names)
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
        ax.set_xlabel("complexity (sum of singular values / largest)")
        ax.set_ylabel("prediction gain: r_deep - r_linear (test r)")
    if title:
        fig.suptitle(title, fontsize=10)
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
