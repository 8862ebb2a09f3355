"""What a run or a sweep does with fitted models: the post-fit steps, written once.

Both the Lightning callbacks (:mod:`dstrf.lit.callbacks`, after one run's fit) and ``dstrf-estimate``
(:mod:`dstrf.sweep.posthoc`, over a finished sweep) call these functions; they only choose the models, the
trials and the folders, handle ranks or failures, and log what is returned. Everything here works on plain
``nn.Module``s (an encoder between the data's units, :class:`dstrf.lit.DataUnitsEncoder`, or the standardized
one), tensors, arrays and a trials container (:class:`dstrf.data.Trials`: ``[id].stimulus`` ``(F, T)``,
``.response`` ``(N, T)``, ``.window``, ``.channel_names``, ``.sfreq``, ``.freqs``): no Lightning, Hydra or
wandb.

Files (every function returns the paths it wrote):

- per trial, a chunked dSTRF file ``trial_<id>.h5`` (:func:`write_dstrfs`, read with
  :func:`dstrf.estimate.open_dstrf`), or a jackknife file with datasets ``mean``, ``se``, ``mask``
  (:func:`write_jackknife_file`), and ``index.json`` (:func:`write_index`);
- figures of dSTRFs per trial and channel (:func:`dstrf_figures`);
- ``gradmaps.npz`` + ``gradmaps.png`` (:func:`write_gradmaps`), ``optimal_stimuli.npz`` + ``.png``
  (:func:`write_optimal_stimuli`);
- the nonlinearity analysis: ``nonlinearities.csv`` (one row per trial and channel),
  ``nonlinearities_by_channel.csv`` (their mean per channel) and ``nonlinearities.png``
  (:func:`analyze_dstrfs`, or :func:`nonlinearity_table` per trial and :func:`write_nonlinearities`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .analysis.inputs import FrameView
from .analysis.table import NonlinearityTable, by_channel, nonlinearities, plot_nonlinearities, stack_tables
from .estimate import dstrf
from .estimate.gradmap import InactiveGradmapWarning, gradmap, optimal_stimulus
from .estimate.jacobian import eval_mode
from .estimate.storage import DSTRFFile
from .models import encoder_capabilities
from .plots import animate_dstrf, frames_past_warmup, plot_dstrf, plot_optimal_stimuli, plot_receptive_fields
from .validation import dtype_named

__all__ = [
    "trial_file",
    "save_figure",
    "write_index",
    "write_dstrfs",
    "dstrf_figures",
    "write_jackknife_file",
    "gradmap_figure",
    "REFERENCES",
    "reference_windows",
    "gradmap_reference",
    "reissue_inactive",
    "write_gradmaps",
    "write_optimal_stimuli",
    "warmup_start",
    "nonlinearity_table",
    "write_nonlinearities",
    "analyze_dstrfs",
    "NONLINEARITY_FILES",
]

#: The files of the nonlinearity analysis, by key of :func:`write_nonlinearities`'s result.
NONLINEARITY_FILES = {
    "per_trial": "nonlinearities.csv",
    "by_channel": "nonlinearities_by_channel.csv",
    "figure": "nonlinearities.png",
}


def _device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or buffers) are; the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def trial_file(folder: str | os.PathLike, trial: int) -> Path:
    """``<folder>/trial_<id>.h5``: the name of a trial's dSTRF file (single model or jackknife)."""
    return Path(folder) / f"trial_{int(trial)}.h5"


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a pyplot ``figure`` as ``path`` (PNG at ``dpi``) and close it; the path."""
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def write_index(out: str | os.PathLike, index: dict) -> Path:
    """``<out>/index.json`` (indented JSON of ``index``), creating ``out``; the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.json"
    path.write_text(json.dumps(index, indent=2))
    return path


# ------------------------------------------------------------------------------------------------ dSTRFs


def write_dstrfs(
    model: nn.Module,
    stimuli: Mapping[int, torch.Tensor],
    out: str | os.PathLike,
    *,
    lags: int | None = None,
    channels: Sequence[int] | None = None,
    times: slice | None = None,
    chunk_size: int | None = None,
    dtype: str = "float32",
    rank: int = 0,
    world_size: int = 1,
) -> list[int]:
    """The dSTRF ``(T, N, F, L)`` (:func:`dstrf.estimate.dstrf`) of ``model`` for this rank's share of
    ``stimuli`` (trial id -> stimulus ``(F, T)`` in ``model``'s input units), one chunked file per trial,
    :func:`trial_file` in ``out``: every ``world_size``-th trial in id order from position ``rank``, so that the
    ranks' shares are disjoint and cover every trial. A finished file of the same computation is reused
    (:func:`dstrf.estimate.dstrf`'s ``out``). Returns the trial ids of the share."""
    out = Path(out)
    device = _device(model)
    mine = sorted(stimuli)[rank::world_size]
    for trial in mine:
        dstrf(
            model,
            stimuli[trial].to(device),
            lags=lags,
            channels=channels,
            times=times,
            chunk_size=chunk_size,
            dtype=dtype_named(dtype)[0],
            out=trial_file(out, trial),
        ).close()
    return mine


def dstrf_figures(
    model: nn.Module | None,
    trials,
    trial_ids: Sequence[int],
    out: str | os.PathLike,
    *,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | None = None,
    animation: bool = False,
    animation_frames: int = 100,
    sfreq: float | None = None,
    label: str | None = None,
) -> list[Path]:
    """Per trial and channel, the dSTRF file ``trial_<id>.h5`` in ``out`` drawn at ``times`` under the trial's
    stimulus, response and ``model``'s prediction (:func:`dstrf.plots.plot_dstrf`): ``trial_<id>_channel_<n>.png``;
    with ``animation`` also :func:`dstrf.plots.animate_dstrf` over the first ``animation_frames`` frames past
    the warm-up (``trial_<id>_channel_<n>.mp4`` or ``.gif``). ``channels`` default to the file's first channel;
    ``sfreq`` to ``trials.sfreq``. Without a ``model`` (a jackknife file of several) no prediction is drawn.
    ``label`` (the model, e.g. ``"DeepEncoder"`` or ``"jackknife mean of 7 models"``) starts each title.
    Returns the paths written, in order."""
    out = Path(out)
    sfreq = sfreq or trials.sfreq
    written = []
    for trial in trial_ids:
        stimulus, response = trials[trial].stimulus, trials[trial].response
        prediction = None
        if model is not None:
            with torch.no_grad():
                prediction = model(stimulus[None].to(_device(model)))[0].cpu()
        with DSTRFFile(trial_file(out, trial)) as dstrfs:
            for channel in channels or [int(dstrfs.channels[0])]:
                name = f"trial_{trial}_channel_{channel}"
                figure = plot_dstrf(
                    dstrfs,
                    stimulus,
                    channel=channel,
                    times=times,
                    response=response,
                    prediction=prediction,
                    sfreq=sfreq,
                    freqs=trials.freqs,
                    channel_name=trials.channel_names[channel],
                    title=f"{label + ': ' if label else ''}dSTRF of {trials.channel_names[channel]} on trial {trial}, "
                    f"under its stimulus and response",
                )
                written.append(save_figure(figure, out / f"{name}.png"))
                if animation:
                    past = frames_past_warmup(dstrfs) or list(map(int, dstrfs.times))
                    written.append(
                        animate_dstrf(
                            dstrfs,
                            stimulus,
                            out / name,
                            channel=channel,
                            times=past[:animation_frames],
                            response=response,
                            prediction=prediction,
                            sfreq=sfreq,
                            freqs=trials.freqs,
                            channel_name=trials.channel_names[channel],
                        )
                    )
    return written


def write_jackknife_file(
    path: str | os.PathLike,
    mean: np.ndarray,
    se: np.ndarray,
    mask: np.ndarray,
    *,
    channels: Sequence[int] | np.ndarray,
    attrs: Mapping,
    times: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """A jackknife result as HDF5 at ``path``: datasets ``mean``, ``se``, ``mask`` (dSTRFs ``(T, N, F, L)``, then
    also ``times``, chunked per 64 frames of one channel; or gradient maps ``(N, F, L)``), ``channels`` and the
    attributes ``attrs``. Every dataset has a checksum per chunk (fletcher32), so a file damaged later is an
    error when read, not wrong numbers. Written as ``<path>.partial`` and renamed when complete, so a file at
    ``path`` is always whole. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    chunks = (min(64, mean.shape[0]), 1, *mean.shape[2:]) if mean.ndim == 4 else None
    with h5py.File(partial, "w") as f:
        for name, data in (("mean", mean), ("se", se), ("mask", mask)):
            f.create_dataset(name, data=data, chunks=chunks, fletcher32=True)
        if times is not None:
            f.create_dataset("times", data=np.asarray(times))
        f.create_dataset("channels", data=np.asarray(channels))
        f.attrs.update(dict(attrs))
    partial.replace(path)
    return path


# ------------------------------------------------------------------------------------------- gradient maps


def gradmap_figure(
    maps,
    path: str | os.PathLike,
    *,
    sfreq: float,
    freqs=None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Gradient maps ``(N, F, L)`` as one panel per output (:func:`dstrf.plots.plot_receptive_fields`), saved
    as PNG at ``path``; the path."""
    figure = plot_receptive_fields(maps, sfreq=sfreq, freqs=freqs, labels=labels, title=title)
    return save_figure(figure, path)


#: The gradient maps' reference stimuli: the mean over windows of the data (the default) or the null stimulus.
REFERENCES = ("data", "null")


def reference_windows(
    trials, trial_ids: Sequence[int], n_frames: int, count: int = 64
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(K, F, n_frames)``: ``count`` windows of ``trials``' stimuli (their own units), ending at frames evenly
    spaced over all the frames of ``trial_ids`` that can end one (trials pooled, so a longer trial gives more);
    and their ``(trial, frame)``. Fewer than ``count`` where the trials hold fewer such frames; an error
    naming the trials where they hold none."""
    count = int(count)
    if count < 1:
        raise ValueError(f"the gradient maps' reference needs at least one window; got windows={count}")
    ids = [int(t) for t in trial_ids]
    ends = [(t, f) for t in ids for f in range(n_frames - 1, trials.lengths[t])]
    if not ends:
        raise ValueError(
            f"trials {ids} hold no window of {n_frames} frames for the gradient maps' reference "
            f"(lengths {[trials.lengths[t] for t in ids]}): use longer trials, fewer lags, or reference=null"
        )
    picked = [ends[i] for i in np.unique(np.linspace(0, len(ends) - 1, min(count, len(ends))).round().astype(int))]
    return torch.stack([trials.window(t, f, n_frames) for t, f in picked]), picked


def gradmap_reference(
    trials,
    *,
    lags: int,
    receptive_field: int | None,
    readout: str = "last",
    reference: str = "data",
    x0: tuple[int, int] | None = None,
    trial_ids: Sequence[int] | None = None,
    windows: int = 64,
) -> tuple[torch.Tensor | None, str, list[tuple[int, int]]]:
    """The reference stimulus of the gradient maps, in ``trials``' units, for :func:`dstrf.estimate.gradmap`:
    ``(x0, what it is, the (trial, frame) it ends at)``.

    - ``x0=(trial, frame)``: the ``lags`` frames of that trial ending at that frame.
    - ``reference="data"`` (the default): ``windows`` windows evenly spaced over ``trial_ids`` (default all
      trials), so the map is their mean, i.e. the mean dSTRF over those frames: informative for every
      encoder. Each window holds the frames the readout depends on (``lags`` plus the receptive field's
      reach before them; a recurrent model gets ``lags`` more frames to set its state).
    - ``reference="null"``: the null stimulus (the training mean of each band for a model in the data's
      units), ``x0=None``. A bias-free ReLU network is entirely off there: its map is all zeros.
    """
    if reference not in REFERENCES:
        raise ValueError(
            f"reference must be one of {REFERENCES} ('data': the mean map over windows of the data; 'null': the "
            f"null stimulus); got {reference!r}"
        )
    if x0 is not None:
        return (
            trials.window(*x0, lags),
            f"the window of trial {x0[0]} ending at frame {x0[1]}",
            [(int(x0[0]), int(x0[1]))],
        )
    if reference == "null":
        return None, "the null stimulus (the training mean of each band)", []
    if receptive_field is None:
        n_frames = 2 * lags
    else:
        n_frames = max(lags, receptive_field) if readout == "last" else lags + receptive_field - 1
    ids = list(range(len(trials))) if trial_ids is None else [int(t) for t in trial_ids]
    stack, ends = reference_windows(trials, ids, n_frames, windows)
    return stack, f"the mean over {len(ends)} windows of trial{'s' if len(ids) > 1 else ''} {_ids(ids)}", ends


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids[:8])) + (f", ... ({len(ids)} trials)" if len(ids) > 8 else "")


@contextmanager
def reissue_inactive(fix: str | None) -> Iterator[None]:
    """Within: an :class:`dstrf.estimate.InactiveGradmapWarning` is issued again with ``fix`` (the option names
    of the command or config that made the call) in place of the Python API's advice; other warnings pass."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InactiveGradmapWarning)
            yield
    finally:  # also when the computation failed: what it warned about before still reaches the user
        for record in caught:
            message = record.message
            if isinstance(message, InactiveGradmapWarning) and fix is not None:
                warnings.warn(InactiveGradmapWarning(message.finding, f" Fix: {fix}"), stacklevel=3)
            else:
                warnings.warn_explicit(message, record.category, record.filename, record.lineno)


def write_gradmaps(
    model: nn.Module,
    trials,
    out: str | os.PathLike,
    *,
    lags: int,
    reference: str = "data",
    x0: tuple[int, int] | None = None,
    trial_ids: Sequence[int] | None = None,
    windows: int = 64,
    readout: str = "last",
    convention: str = "excitatory",
    channel_names: Sequence[str] | None = None,
    sfreq: float | None = None,
    fix: str | None = None,
) -> dict[str, Path]:
    """The gradient map of every output of ``model`` (:func:`dstrf.estimate.gradmap`, ``(N, F, L)`` in
    ``model``'s units) over ``lags`` frames at the reference of :func:`gradmap_reference` (default the mean over
    windows of ``trial_ids``). Writes ``<out>/gradmaps.npz`` (``maps``, ``channels``, ``channel_names``,
    ``sfreq``, ``freqs``, ``lags``, ``readout``, ``convention``, ``reference`` (what it is, in words),
    ``reference_frames`` ``(K, 2)`` (the trial and last frame of each window; empty for the null stimulus),
    ``x0`` (``[-1, -1]`` unless given)) and ``gradmaps.png``; returns them as ``{"gradmaps": ...,
    "gradmaps_figure": ...}``. ``channel_names`` and ``sfreq`` default to the trials'. ``fix``: what an
    :class:`dstrf.estimate.InactiveGradmapWarning` tells the user to do, in the caller's option names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stimulus, where, ends = gradmap_reference(
        trials,
        lags=lags,
        receptive_field=encoder_capabilities(model).receptive_field,
        readout=readout,
        reference=reference,
        x0=x0,
        trial_ids=trial_ids,
        windows=windows,
    )
    with reissue_inactive(fix):
        maps = gradmap(
            model,
            lags=lags,
            x0=None if stimulus is None else stimulus.to(_device(model)),
            readout=readout,
            convention=convention,
        )
    names = list(channel_names or trials.channel_names)
    sfreq = sfreq or trials.sfreq
    written = {"gradmaps": out / "gradmaps.npz"}
    np.savez(
        written["gradmaps"],
        maps=maps.numpy(),
        channels=np.arange(maps.shape[0]),
        channel_names=names,
        sfreq=sfreq,
        freqs=trials.freqs,
        lags=lags,
        readout=readout,
        convention=convention,
        reference=where,
        reference_frames=np.asarray(ends, dtype=np.int64).reshape(-1, 2),
        x0=np.asarray(x0 if x0 else [-1, -1]),
    )
    written["gradmaps_figure"] = gradmap_figure(
        maps,
        out / "gradmaps.png",
        sfreq=sfreq,
        freqs=trials.freqs,
        labels=names,
        title=f"gradient maps at {where} (readout {readout})",
    )
    return written


def write_optimal_stimuli(
    encoder: nn.Module,
    neurons: Sequence[int],
    trials,
    out: str | os.PathLike,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    lags: int,
    reference: str = "data",
    x0: tuple[int, int] | None = None,
    trial_ids: Sequence[int] | None = None,
    windows: int = 64,
    readout: str = "last",
    steps: int = 1500,
    lr: float = 0.05,
    constraint: tuple | None = ("range", -3.0, 3.0),
    channel_names: Sequence[str] | None = None,
    sfreq: float | None = None,
    fix: str | None = None,
) -> dict[str, Path]:
    """The stimulus ``(F, lags)`` that drives each of ``neurons`` most (:func:`dstrf.estimate.optimal_stimulus`)
    of the standardized ``encoder`` (``constraint`` is in standard deviations), standardized with ``mean``,
    ``std`` ``(F,)``. It starts from the reference of :func:`gradmap_reference`: for ``reference="data"`` the
    one of its windows that drives the neuron most (a bias-free ReLU network cannot move from the null
    stimulus); the null stimulus; or the window of ``trials`` ending at ``x0=(trial, frame)``.
    Writes ``<out>/optimal_stimuli.npz`` (``stimuli`` ``(K, F, L)`` in the data's units, ``standardized`` in
    the encoder's, ``responses`` ``(K, steps + 1)``, ``neurons``, ``starts`` ``(K, 2)`` (the trial and last
    frame of each start window; ``-1`` for the null stimulus), ``sfreq``, ``freqs``) and
    ``optimal_stimuli.png``; returns them as ``{"optimal_stimuli": ..., "optimal_stimuli_figure": ...}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    neurons = [int(n) for n in neurons]
    names = list(channel_names or trials.channel_names)
    sfreq = sfreq or trials.sfreq
    stimulus, _, ends = gradmap_reference(
        trials,
        lags=lags,
        receptive_field=encoder_capabilities(encoder).receptive_field,
        readout=readout,
        reference=reference,
        x0=x0,
        trial_ids=trial_ids,
        windows=windows,
    )
    starts: list[torch.Tensor | None] = [None] * len(neurons)
    start_ends = [(-1, -1)] * len(neurons)
    if stimulus is not None:
        z = (stimulus.to(mean.device) - mean[:, None]) / std[:, None]
        z = z if z.ndim == 3 else z[None]
        with torch.no_grad(), eval_mode(encoder):
            response = encoder(z)  # (K, N, T), causal
        drive = response[:, :, -1] if readout == "last" else response[:, :, -lags:].mean(-1)
        best = drive[:, neurons].argmax(0).tolist()
        starts = [z[k] for k in best]
        start_ends = [ends[k] for k in best]
    with reissue_inactive(fix):
        results = [
            optimal_stimulus(
                encoder, n, steps=steps, lr=lr, x0=z0, constraint=constraint, lags=lags, readout=readout, progress=False
            )
            for n, z0 in zip(neurons, starts, strict=True)
        ]
    standardized = torch.stack([r.stimulus for r in results])
    stimuli = standardized * std.cpu()[:, None] + mean.cpu()[:, None]
    responses = np.stack([r.response for r in results])
    written = {"optimal_stimuli": out / "optimal_stimuli.npz"}
    np.savez(
        written["optimal_stimuli"],
        stimuli=stimuli.numpy(),
        standardized=standardized.numpy(),
        responses=responses,
        neurons=np.asarray(neurons),
        starts=np.asarray(start_ends, dtype=np.int64).reshape(-1, 2),
        sfreq=sfreq,
        freqs=trials.freqs,
    )
    figure = plot_optimal_stimuli(
        stimuli,
        responses,
        sfreq=sfreq,
        freqs=trials.freqs,
        labels=[names[n] for n in neurons],
        response_unit="standardised",  # the standardized encoder's output, the one the search maximised
    )
    written["optimal_stimuli_figure"] = save_figure(figure, out / "optimal_stimuli.png")
    return written


# -------------------------------------------------------------------------------------- nonlinearity analysis


def warmup_start(times: Sequence[int], lags: int) -> int:
    """How many of the (increasing) output frames ``times`` come before the warm-up ends: frame t's window of
    ``lags`` frames lies inside the trial from t = lags - 1 on; the earlier ones see the padding."""
    return int(np.searchsorted(np.asarray(times), int(lags) - 1))


def nonlinearity_table(
    W,
    channel_names: Sequence[str] | None = None,
    *,
    lags: int | None = None,
    times=None,
    channels=None,
    mask=None,
    label: str = "dSTRF:",
    remedy: str = "compute more frames",
    **measures,
) -> NonlinearityTable:
    """The nonlinearity measures (:func:`dstrf.analysis.nonlinearities`) of one trial's dSTRFs ``W``
    ``(T, N, F, L)`` (an array, a tensor, a :class:`~dstrf.estimate.DSTRFFile` or an ``h5py.Dataset``; times
    ``mask`` of the same shape if given) over its frames past the warm-up (:func:`warmup_start`).

    ``times`` (the output frame of each row) and ``channels`` (the channel number of each column) default to the
    file's own, else ``0..T-1`` and ``0..N-1``; ``lags`` to ``L``. Rows are named ``channel_names[channel]``.
    Fewer than 3 frames past the warm-up is a ``ValueError``: ``"<label> <n> frames past the warm-up (<lags - 1>
    frames); <remedy>"``. ``measures`` go to :func:`dstrf.analysis.nonlinearities` (``tau_max``, ``alpha``,
    ``gain_variant``, ...)."""
    n_frames, n_channels = int(W.shape[0]), int(W.shape[1])
    lags = int(W.shape[-1] if lags is None else lags)
    if times is None:
        times = getattr(W, "times", None)
    times = np.arange(n_frames) if times is None else np.asarray(times)
    if channels is None:
        channels = getattr(W, "channels", None)
    channels = np.arange(n_channels) if channels is None else np.asarray(channels)
    start = warmup_start(times, lags)
    if len(times) - start < 3:
        raise ValueError(f"{label} {len(times) - start} frames past the warm-up ({lags - 1} frames); {remedy}")
    names = None if channel_names is None else [channel_names[int(c)] for c in channels]
    return nonlinearities(FrameView(W, start, mask=mask, times=times, channels=channels), names=names, **measures)


def write_nonlinearities(
    tables: Mapping[int, NonlinearityTable],
    folder: str | os.PathLike,
    *,
    r_baseline=None,
    r_model=None,
    label: str | None = None,
) -> dict[str, Path]:
    """The nonlinearity tables of several trials (trial id -> :func:`nonlinearity_table`) into ``folder``:
    ``nonlinearities.csv`` (:func:`dstrf.analysis.stack_tables`: one row per trial and channel, a leading
    ``trial`` column), ``nonlinearities_by_channel.csv`` (:func:`dstrf.analysis.by_channel`: the mean per
    channel over the trials) and ``nonlinearities.png`` (:func:`dstrf.analysis.plot_nonlinearities`). With
    ``r_baseline`` and ``r_model`` (test r per channel number, e.g. of a linear model and of this one), the
    figure adds the prediction gain against complexity. ``label`` (the model) starts the figure's title. Returns
    the paths by key of
    :data:`NONLINEARITY_FILES` (``per_trial``, ``by_channel``, ``figure``)."""
    folder = Path(folder)
    paths = {key: folder / name for key, name in NONLINEARITY_FILES.items()}
    per_trial = stack_tables(tables)
    per_trial.to_csv(paths["per_trial"])
    summary = by_channel(per_trial)
    summary.to_csv(paths["by_channel"])
    gain = {}
    if r_baseline is not None and r_model is not None:
        channels = summary.column("channel").astype(int)
        gain = {"r_linear": np.asarray(r_baseline)[channels], "r_deep": np.asarray(r_model)[channels]}
    trials = sorted(tables)
    title = (
        f"{label + ': ' if label else ''}nonlinearity measures of the dSTRFs per channel, mean over "
        f"{len(trials)} trial{'s' * (len(trials) != 1)} ({', '.join(map(str, trials[:8]))}{' ...' * (len(trials) > 8)})"
    )
    plot_nonlinearities(summary, path=paths["figure"], title=title, **gain)
    return paths


def analyze_dstrfs(
    dstrfs: Mapping[int, object],
    folder: str | os.PathLike,
    channel_names: Sequence[str] | None = None,
    *,
    label: str = "trial {trial}:",
    remedy: str = "compute more frames",
    r_baseline=None,
    r_model=None,
    **measures,
) -> dict[str, Path]:
    """The nonlinearity analysis of one or several trials' dSTRFs (trial id -> a dSTRF file's path, a
    :class:`~dstrf.estimate.DSTRFFile`, or an array ``(T, N, F, L)`` whose rows are frames ``0..T-1``):
    :func:`nonlinearity_table` of each (``label`` may name ``{trial}``), then :func:`write_nonlinearities`
    into ``folder``. Returns the paths written by key (``per_trial``, ``by_channel``, ``figure``)."""
    tables = {}
    for trial, W in dstrfs.items():
        what = label.format(trial=trial)
        if isinstance(W, (str, os.PathLike)):
            with DSTRFFile(W) as stored:
                tables[trial] = nonlinearity_table(stored, channel_names, label=what, remedy=remedy, **measures)
        else:
            tables[trial] = nonlinearity_table(W, channel_names, label=what, remedy=remedy, **measures)
    return write_nonlinearities(tables, folder, r_baseline=r_baseline, r_model=r_model)
