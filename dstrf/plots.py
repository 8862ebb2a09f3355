"""Figures of receptive fields: dSTRFs at chosen frames beside the stimulus and the response, and animations.

Axes follow the field's conventions: lag in ms from 0 (the current frame) into the past, frequency bands from
low (bottom) to high, a diverging colour map centred on zero with symmetric limits shared by all panels of a
figure, so that colours compare across time points (red: more energy there raises the response).

Works on tensors or on dSTRF files (:class:`dstrf.estimate.DSTRFFile`); from a file only the frames shown are
read. Figures are pyplot figures (shown inline in notebooks); matplotlib falls back to its Agg canvas where
there is no display, so they also render on cluster nodes.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .estimate.storage import DSTRFFile, GradmapFile
from .metrics import UndefinedCorrelationWarning, pearson_r

__all__ = [
    "plot_dstrf",
    "animate_dstrf",
    "plot_receptive_fields",
    "plot_optimal_stimuli",
    "plot_ridge_cv",
    "plot_prediction",
    "animation_format",
    "default_times",
    "frames_past_warmup",
    "round_frequency_ticks",
    "empty_map_note",
    "MAP_UNIT",
]

CMAP = "RdBu_r"


@overload
def _numpy(a: None) -> None: ...
@overload
def _numpy(a: object) -> np.ndarray: ...
def _numpy(a: object) -> np.ndarray | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float32).numpy()
    return np.asarray(a, dtype=np.float32)


def _frames_of(dstrfs, channel: int, times: Sequence[int]) -> np.ndarray:
    """``(len(times), F, L)``: one channel's dSTRF at the given output frames (frame numbers, not positions)."""
    if isinstance(dstrfs, DSTRFFile):
        return _numpy(dstrfs.read(times=list(times), channels=[channel])[:, 0])
    values = dstrfs if isinstance(dstrfs, torch.Tensor) else torch.as_tensor(np.asarray(dstrfs))
    if values.ndim != 4:
        raise ValueError(f"dstrfs must be (frames, channels, freqs, lags); got shape {tuple(values.shape)}")
    n_frames, n_channels = values.shape[:2]
    if not 0 <= channel < n_channels:
        raise ValueError(f"channel {channel} out of range: the dSTRFs have channels 0..{n_channels - 1}")
    bad = [int(t) for t in times if not 0 <= int(t) < n_frames]
    if bad:
        raise ValueError(f"times {bad[:5]} out of range: the dSTRFs have frames 0..{n_frames - 1}")
    return _numpy(values[torch.as_tensor([int(t) for t in times]), channel])


def _available_times(dstrfs) -> np.ndarray:
    if isinstance(dstrfs, DSTRFFile):
        return np.asarray(dstrfs.times)
    return np.arange(int(dstrfs.shape[0]))


def frames_past_warmup(dstrfs) -> list[int]:
    """The stored output frames whose whole window of L frames lies inside the trial (t >= L - 1); the earlier
    ones see the padding before the trial's start."""
    return [int(t) for t in _available_times(dstrfs) if t >= int(dstrfs.shape[-1]) - 1]


def default_times(dstrfs, n: int = 4) -> list[int]:
    """``n`` evenly spaced output frames past the warm-up (any stored frames if too few are past it)."""
    usable = frames_past_warmup(dstrfs)
    usable = usable if len(usable) >= n else [int(t) for t in _available_times(dstrfs)]
    picks = np.linspace(0, len(usable) - 1, num=min(n, len(usable))).round().astype(int)
    return sorted({usable[i] for i in picks})


def _hz(f: float) -> str:
    """``250``, ``1k``, ``1.5k``, ``12k``."""
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def round_frequency_ticks(freqs: np.ndarray, max_ticks: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Tick positions (in band index, fractional) and values (Hz) at round frequencies for an axis whose
    bands have centre frequencies ``freqs`` ``(F,)`` (increasing): the 1-2-5 series (100, 200, 500, 1k, ...),
    or 1-1.5-2-3-5-7 where that gives too few, placed by interpolating log frequency between band centres.
    Empty when ``freqs`` is not increasing and positive (the caller falls back to band numbers)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    if len(freqs) < 2 or not np.all(np.diff(freqs) > 0) or freqs[0] <= 0:
        return np.zeros(0), np.zeros(0)
    decades = 10.0 ** np.arange(np.floor(np.log10(freqs[0])), np.ceil(np.log10(freqs[-1])) + 1)
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        values = np.array([m * d for d in decades for m in mantissas])
        values = values[(values >= freqs[0]) & (values <= freqs[-1])]
        if len(values) >= 3 or mantissas[-1] == 9:
            break
    while len(values) > max_ticks:
        values = values[::2]
    positions = np.interp(np.log(values), np.log(freqs), np.arange(len(freqs), dtype=np.float64))
    return positions, values


def _freq_ticks(ax, freqs: np.ndarray | None, n_freqs: int) -> None:
    """The frequency axis (bands on y): ticks at round frequencies in Hz, or band numbers without them."""
    positions, values = (np.zeros(0), np.zeros(0))
    if freqs is not None and len(freqs) == n_freqs:
        positions, values = round_frequency_ticks(freqs)
    if not len(values):
        ax.set_ylabel("frequency band (number)")
        return
    ax.set_yticks(positions)
    ax.set_yticklabels([_hz(v) for v in values])
    ax.set_ylabel("frequency (Hz)")


#: The colour bar of every map of derivatives (dSTRFs, gradient maps, STRFs) when no unit is given.
MAP_UNIT = "d response / d stimulus\n(response units per stimulus unit)"


def _receptive_field(ax, w: np.ndarray, sfreq: float, freqs: np.ndarray | None, vmax: float, note: bool = True):
    """One ``(F, L)`` map: lag (ms) on x from 0 at the left (the current frame) to the oldest frame at the
    right, in every figure; band on y from low to high. An all-zero or non-finite map says so on the map."""
    n_freqs, n_lags = w.shape
    if note:
        _note(ax, empty_map_note(w))
    frame_ms = 1000.0 / sfreq
    image = ax.imshow(
        w,
        origin="lower",
        aspect="auto",
        cmap=CMAP,
        vmin=-vmax,
        vmax=vmax,
        interpolation="nearest",
        extent=(-0.5 * frame_ms, (n_lags - 0.5) * frame_ms, -0.5, n_freqs - 0.5),
    )
    ax.set_xlabel("lag (ms)")
    _freq_ticks(ax, freqs, n_freqs)
    return image


def empty_map_note(w: np.ndarray) -> str | None:
    """What to write on a map ``w`` that shows nothing: all zero, or NaN (either would otherwise be a blank
    white panel that reads as 'no structure'); None when it has values."""
    w = np.asarray(w)
    if not np.isfinite(w).all():
        return "NaN: the map is undefined" if np.isnan(w).all() else "some values are NaN (white)"
    if not np.any(w):
        return "all zero\n(the derivative vanishes here)"
    return None


def _note(ax, text: str | None):
    """``text`` in the middle of ``ax``, in a box (hidden while ``text`` is None); the artist."""
    return ax.text(
        0.5,
        0.5,
        text or "",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8,
        color="C3",
        visible=text is not None,
        bbox=dict(boxstyle="round", facecolor="white", edgecolor="C3", alpha=0.9),
    )


def _symmetric_limit(values: np.ndarray) -> float:
    vmax = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return vmax if vmax > 0 else 1.0


def _stimulus_and_response(
    figure: Figure,
    stim_spec,
    resp_spec,
    stimulus: np.ndarray,
    start: int,
    stop: int,
    channel: int,
    response,
    prediction,
    sfreq: float,
    freqs: np.ndarray | None,
):
    """The stimulus spectrogram of frames ``start:stop`` above the measured and predicted response of
    ``channel`` on a shared time axis (s); the two axes."""
    seconds = np.arange(start, stop) / sfreq
    ax_stim = figure.add_subplot(stim_spec)
    ax_stim.imshow(
        stimulus[:, start:stop],
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(seconds[0], seconds[-1] + 1 / sfreq, -0.5, stimulus.shape[0] - 0.5),
    )
    _freq_ticks(ax_stim, freqs, stimulus.shape[0])
    ax_resp = figure.add_subplot(resp_spec, sharex=ax_stim)
    traces: tuple[tuple[Any, str, dict[str, Any]], ...] = (
        (response, "response", dict(color="0.3", lw=1.0)),
        (prediction, "prediction", dict(color="C0", lw=1.2)),
    )
    for trace, label, style in traces:
        trace = _numpy(trace)
        if trace is not None:
            trace = trace[channel] if trace.ndim == 2 else trace
            ax_resp.plot(seconds, trace[start:stop], label=label, **style)
    if response is not None or prediction is not None:
        ax_resp.legend(loc="upper right", fontsize="small", frameon=False)
    ax_resp.set_xlabel("time (s)")
    return ax_stim, ax_resp


def plot_dstrf(
    dstrfs: torch.Tensor | np.ndarray | DSTRFFile,
    stimulus: torch.Tensor | np.ndarray,
    channel: int = 0,
    times: Sequence[int] | None = None,
    response: torch.Tensor | np.ndarray | None = None,
    prediction: torch.Tensor | np.ndarray | None = None,
    sfreq: float = 100.0,
    freqs: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
    channel_name: str | None = None,
    unit: str = MAP_UNIT,
    response_unit: str = "data units",
) -> Figure:
    """The dSTRF of one channel at chosen frames, under the stimulus and the response around them.

    Parameters
    ----------
    dstrfs : ``(T, N, F, L)`` tensor or array, or a :class:`~dstrf.estimate.DSTRFFile`
        With a file, ``channel`` and ``times`` are frame and channel numbers as stored in it.
    stimulus : ``(F, T)``
        The trial's stimulus (the one the dSTRFs were computed on).
    channel : int
        The output channel shown.
    times : frames, optional
        Output frames whose dSTRF is shown (default: 4 evenly spaced past the warm-up).
    response, prediction : ``(T,)`` or ``(N, T)``, optional
        The measured and the predicted response, drawn under the stimulus (row ``channel`` if 2-D).
    sfreq : float
        Frame rate in Hz, for the time and lag axes.
    freqs : ``(F,)``, optional
        Band centre frequencies in Hz, for the frequency axis.
    title : str, optional
        Default: the channel (``channel_name``, else its number) and what is shown.
    unit, response_unit : str
        The colour bar's label (the dSTRF's unit) and the response's unit (y label).

    Returns
    -------
    matplotlib Figure: stimulus on top (the chosen frames marked), response below, one map per chosen frame.
    """
    stimulus = _numpy(stimulus)
    if stimulus.ndim != 2:
        raise ValueError(f"stimulus must be (freqs, frames); got shape {stimulus.shape}")
    times = default_times(dstrfs) if times is None else [int(t) for t in times]
    if not times:
        raise ValueError("times is empty: give at least one output frame to show")
    maps = _frames_of(dstrfs, int(channel), times)
    if maps.shape[1] != stimulus.shape[0]:
        raise ValueError(f"the dSTRFs have {maps.shape[1]} bands but the stimulus has {stimulus.shape[0]}")
    freqs = None if freqs is None else np.asarray(freqs, dtype=np.float64)
    n_lags = maps.shape[-1]
    start = max(0, min(times) - 2 * n_lags)
    stop = min(stimulus.shape[1], max(times) + 2 * n_lags + 1)
    n = len(times)
    figure = plt.figure(figsize=(max(8.0, 2.4 * n), 7.0), layout="constrained")
    grid = figure.add_gridspec(3, n, height_ratios=(1.2, 0.8, 1.4))
    ax_stim, ax_resp = _stimulus_and_response(
        figure, grid[0, :], grid[1, :], stimulus, start, stop, channel, response, prediction, sfreq, freqs
    )
    name = channel_name if channel_name is not None else f"channel {channel}"
    ax_stim.set_title(title or f"{name}: stimulus, response and dSTRF at {n} frames")
    ax_resp.set_ylabel(f"response ({response_unit})")
    for ax in (ax_stim, ax_resp):
        for k, t in enumerate(times):
            ax.axvline((t + 0.5) / sfreq, color=f"C{(k + 1) % 10}", lw=1.0, ls="--")

    vmax = _symmetric_limit(maps)
    image = None
    for k, (t, w) in enumerate(zip(times, maps)):
        ax = figure.add_subplot(grid[2, k])
        image = _receptive_field(ax, w, sfreq, freqs, vmax)
        ax.set_title(f"t = {t / sfreq:.2f} s", color=f"C{(k + 1) % 10}", fontsize="medium")
        if k:
            ax.set_ylabel("")
            ax.set_yticklabels([])
    assert image is not None  # times is not empty
    figure.colorbar(image, ax=figure.axes[-n:], shrink=0.9, label=unit)
    return figure


def animation_format() -> str:
    """``"mp4"`` when matplotlib can find ffmpeg, else ``"gif"`` (Pillow, always available)."""
    return (
        "mp4"
        if animation.writers.is_available("ffmpeg") and shutil.which(matplotlib.rcParams["animation.ffmpeg_path"])
        else "gif"
    )


def animate_dstrf(
    dstrfs: torch.Tensor | np.ndarray | DSTRFFile,
    stimulus: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    channel: int = 0,
    times: Sequence[int] | None = None,
    response: torch.Tensor | np.ndarray | None = None,
    prediction: torch.Tensor | np.ndarray | None = None,
    sfreq: float = 100.0,
    freqs: Sequence[float] | np.ndarray | None = None,
    fps: int = 10,
    format: str = "auto",
    channel_name: str | None = None,
    unit: str = MAP_UNIT,
    response_unit: str = "data units",
) -> Path:
    """An animation of one channel's dSTRF over time, with the stimulus and response scrolling past.

    Parameters
    ----------
    path : path
        Where to write; its suffix is replaced by the format's (``.mp4`` or ``.gif``).
    times : frames, optional
        The frames animated, in order (default: up to 100 consecutive frames past the warm-up).
    format : {"auto", "mp4", "gif"}
        ``"auto"``: mp4 when ffmpeg is available, GIF otherwise. ``"mp4"`` without ffmpeg is an error.
    Other parameters as in :func:`plot_dstrf`.

    Returns
    -------
    The path of the file written.
    """
    if format not in ("auto", "mp4", "gif"):
        raise ValueError(f"format must be 'auto', 'mp4' or 'gif'; got {format!r}")
    resolved = animation_format() if format == "auto" else format
    if resolved == "mp4" and not animation.writers.is_available("ffmpeg"):
        raise RuntimeError("format='mp4' needs ffmpeg on the PATH; install it or use format='gif'")
    stimulus = _numpy(stimulus)
    if times is None:
        times = (frames_past_warmup(dstrfs) or [int(t) for t in _available_times(dstrfs)])[:100]
    times = [int(t) for t in times]
    if not times:
        raise ValueError("times is empty: give at least one output frame to animate")
    maps = _frames_of(dstrfs, int(channel), times)
    freqs = None if freqs is None else np.asarray(freqs, dtype=np.float64)
    n_lags = maps.shape[-1]
    start, stop = max(0, min(times) - n_lags), min(stimulus.shape[1], max(times) + 1)
    figure = plt.figure(figsize=(10.0, 4.5), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(2.2, 1.0), height_ratios=(1.3, 0.8))
    ax_stim, ax_resp = _stimulus_and_response(
        figure, grid[0, 0], grid[1, 0], stimulus, start, stop, channel, response, prediction, sfreq, freqs
    )
    # the window the current dSTRF looks at, and the current frame
    window = Rectangle((0, 0.01), 0, 0.98, transform=ax_stim.get_xaxis_transform(), fill=False, edgecolor="C1", lw=1.5)
    ax_stim.add_patch(window)
    ax_stim.set_xlim(start / sfreq, stop / sfreq)
    cursors = [ax.axvline(0, color="C1", lw=1.2) for ax in (ax_stim, ax_resp)]
    ax_map = figure.add_subplot(grid[:, 1])
    image = _receptive_field(ax_map, maps[0], sfreq, freqs, _symmetric_limit(maps), note=False)
    note = _note(ax_map, None)
    figure.colorbar(image, ax=ax_map, shrink=0.8, label=unit)
    ax_resp.set_ylabel(f"response ({response_unit})")
    name = channel_name if channel_name is not None else f"channel {channel}"

    def draw(i: int) -> None:
        t = times[i]
        now = (t + 0.5) / sfreq
        for cursor in cursors:
            cursor.set_xdata([now, now])
        window.set_x((t - n_lags + 1) / sfreq)
        window.set_width(n_lags / sfreq)
        image.set_data(maps[i])
        text = empty_map_note(maps[i])
        note.set_text(text or "")
        note.set_visible(text is not None)
        ax_map.set_title(f"dSTRF of {name}, t = {t / sfreq:.2f} s")

    draw(0)
    figure.canvas.draw()
    figure.set_layout_engine("none")  # lay out once: re-solving the constrained layout per frame is most of the cost
    target = Path(path).with_suffix("." + resolved)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = animation.FFMpegWriter(fps=fps) if resolved == "mp4" else animation.PillowWriter(fps=fps)
    try:
        # the writer's own loop (FuncAnimation.save) renders every frame twice; one draw per frame suffices
        with writer.saving(figure, str(target), dpi=80):
            for i in range(len(times)):
                draw(i)
                writer.grab_frame()
    except BaseException:
        target.unlink(missing_ok=True)  # a half-written movie is not a result
        raise
    finally:
        plt.close(figure)
    return target


def plot_receptive_fields(
    maps: torch.Tensor | np.ndarray | GradmapFile,
    sfreq: float | None = None,
    freqs: Sequence[float] | np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    columns: int = 8,
    title: str | None = None,
    unit: str = MAP_UNIT,
) -> Figure:
    """A grid of ``(N, F, L)`` receptive fields (STRFs, gradmaps, mean dSTRFs), one panel per channel.

    All panels share one symmetric colour scale centred on zero; lag in ms, frequency in Hz (``sfreq``
    default 100). A :class:`~dstrf.estimate.GradmapFile` (:func:`dstrf.estimate.open_gradmap`) is drawn from
    the file alone: its masked maps, with its sfreq, band frequencies, channel names and reference.
    """
    if isinstance(maps, GradmapFile):
        source = maps
        sfreq = source.sfreq if sfreq is None else sfreq
        freqs = source.freqs if freqs is None else freqs
        labels = source.channel_names if labels is None else labels
        if title is None:
            what = "mean gradient maps (sign-consistent)" if source.mask is not None else "gradient maps"
            where = source.attrs.get("reference")
            title = f"{source.path.name}: {what}{f' at {where}' if where else ''}"
        maps = source.masked
    sfreq = 100.0 if sfreq is None else sfreq
    maps = _numpy(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (channels, freqs, lags); got shape {maps.shape}")
    n = maps.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} maps")
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns + 1, 2.0 * rows + 0.6), squeeze=False, layout="constrained"
    )
    freqs = None if freqs is None else np.asarray(freqs, dtype=np.float64)
    vmax = _symmetric_limit(maps)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        image = _receptive_field(ax, maps[i], sfreq, freqs, vmax)
        ax.set_title(labels[i] if labels is not None else f"channel {i}", fontsize="small")
        if i % columns:
            ax.set_ylabel("")
            ax.set_yticklabels([])
        if i < n - columns:
            ax.set_xlabel("")
    assert image is not None  # n >= 1: plt.subplots refuses 0 rows
    figure.colorbar(image, ax=axes, shrink=0.8, label=unit)
    if title:
        figure.suptitle(title)
    return figure


def plot_optimal_stimuli(
    stimuli: torch.Tensor | np.ndarray,
    responses: np.ndarray | Sequence[np.ndarray],
    sfreq: float = 100.0,
    freqs: Sequence[float] | np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    unit: str = "data units",
    response_unit: str = "data units",
) -> Figure:
    """Optimal stimuli ``(K, F, L)`` (time order: the last column is the frame read out), one row each, beside
    their response over the optimisation steps ``(K, steps + 1)``. Drawn like every map: lag from 0 (the
    read-out frame) at the left."""
    stimuli = _numpy(stimuli)
    if stimuli.ndim != 3:
        raise ValueError(f"stimuli must be (neurons, freqs, frames); got shape {stimuli.shape}")
    n, n_freqs, n_frames = stimuli.shape
    if len(responses) != n:
        raise ValueError(f"{len(responses)} response curves for {n} stimuli")
    freqs = None if freqs is None else np.asarray(freqs, dtype=np.float64)
    figure, axes = plt.subplots(
        n,
        2,
        figsize=(9.0, 2.4 * n + 0.4),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": (1.6, 1.0)},
    )
    frame_ms = 1000.0 / sfreq
    for i in range(n):
        label = labels[i] if labels is not None else f"neuron {i}"
        ax = axes[i, 0]
        image = ax.imshow(  # lag 0 (the read-out frame, the last column) at the left, as in every map
            stimuli[i][:, ::-1],
            origin="lower",
            aspect="auto",
            cmap="magma",
            interpolation="nearest",
            extent=(-0.5 * frame_ms, (n_frames - 0.5) * frame_ms, -0.5, n_freqs - 0.5),
        )
        _freq_ticks(ax, freqs, n_freqs)
        ax.set_xlabel("lag before the read-out frame (ms)")
        ax.set_title(f"optimal stimulus: {label}", fontsize="medium")
        figure.colorbar(image, ax=ax, shrink=0.8, label=f"stimulus ({unit})")
        curve = np.asarray(responses[i])
        axes[i, 1].plot(np.arange(len(curve)), curve, color="C0")
        axes[i, 1].set_xlabel("Adam step")
        axes[i, 1].set_ylabel(f"response ({response_unit})")
        axes[i, 1].set_title(f"{label}: response during the search", fontsize="medium")
    return figure


def plot_ridge_cv(
    alphas: Sequence[float] | np.ndarray,
    cv_r: np.ndarray,
    chosen: Sequence[float] | np.ndarray,
    labels: Sequence[str] | None = None,
    max_lines: int = 20,
) -> Figure:
    """The inner cross-validation curve of a ridge STRF: mean held-out r against alpha (log axis), one line per
    channel (the first ``max_lines``) with its chosen alpha marked, and the median over all channels.

    ``alphas`` ``(A,)``, ``cv_r`` ``(A, N)`` (NaN where undefined), ``chosen`` ``(N,)``.
    """
    alphas, cv_r, chosen = np.asarray(alphas, float), np.asarray(cv_r, float), np.asarray(chosen, float)
    n = cv_r.shape[1]
    labels = list(labels) if labels is not None else [f"ch{c}" for c in range(n)]
    figure, ax = plt.subplots(figsize=(6.5, 4.0), layout="constrained")
    for c in range(min(n, max_lines)):
        (line,) = ax.plot(alphas, cv_r[:, c], lw=1, alpha=0.7, label=labels[c])
        k = int(np.argmin(np.abs(np.log(alphas) - np.log(chosen[c])))) if np.isfinite(chosen[c]) else None
        if k is not None and np.isfinite(cv_r[k, c]):
            ax.plot(alphas[k], cv_r[k, c], "o", color=line.get_color(), ms=5)
    if n > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an alpha where every channel is NaN
            ax.plot(alphas, np.nanmedian(cv_r, axis=1), "k-", lw=2.5, label=f"median of {n} channels")
    ax.set_xscale("log")
    ax.set_xlabel("ridge alpha")
    ax.set_ylabel("inner-CV r (held-out training trials)")
    ax.set_title("alpha per channel (dots: chosen)")
    if n <= max_lines:
        ax.legend(fontsize=7, ncol=2)
    return figure


def plot_prediction(
    measured: np.ndarray | torch.Tensor,
    predicted: np.ndarray | torch.Tensor,
    sfreq: float,
    channel_names: Sequence[str],
    channels: Sequence[int],
    warmup: int = 0,
    unit: str = "response (data units)",
    title: str = "",
) -> Figure:
    """Measured and predicted response of one trial, one panel per channel of ``channels``, against time in s.

    ``measured``, ``predicted`` ``(N, T)`` in the same units (``unit``, the y label). The first ``warmup``
    frames (not scored: the receptive field does not yet see a full window) are shaded, and each panel's
    title gives the channel's name and its r over the frames past them.
    """
    measured, predicted = _numpy(measured), _numpy(predicted)
    if measured.shape != predicted.shape or measured.ndim != 2:
        raise ValueError(f"measured and predicted must both be (N, T); got {measured.shape} and {predicted.shape}")
    t = np.arange(measured.shape[1]) / sfreq
    shown = list(channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedCorrelationWarning)  # NaN, shown as such in the title
        r = pearson_r(torch.as_tensor(predicted[shown, warmup:]), torch.as_tensor(measured[shown, warmup:])).tolist()
    figure, axes = plt.subplots(
        len(shown), 1, figsize=(9, 1.9 * len(shown) + 0.6), sharex=True, layout="constrained", squeeze=False
    )
    for ax, n, r_n in zip(axes[:, 0], shown, r):
        ax.plot(t, measured[n], color="0.45", lw=0.8, label="measured")
        ax.plot(t, predicted[n], color="C3", lw=1.0, label="predicted")
        if warmup:
            ax.axvspan(0, warmup / sfreq, color="0.9", zorder=0, label="warm-up (not scored)")
        ax.set_title(f"{channel_names[n]}: r = {r_n:.2f}", fontsize=9, loc="left")
        ax.set_ylabel(unit, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
