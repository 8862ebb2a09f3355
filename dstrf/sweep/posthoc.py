"""``dstrf-estimate SWEEP_DIR``: per trial, the jackknife-aggregated dSTRF of the models that never saw it.

For every trial that some finished job tested, the models are exactly the jobs (of one group) whose test
trials include it. Test trials are never used for training or validation, so none of these models saw the
trial: the cross-validation rule. For a K-fold x jackknife sweep, they are the M jackknife replicates of the
trial's fold. Each model's dSTRF is taken in the data's units (raw stimulus in, response out; see
:class:`dstrf.lit.DataUnitsEncoder`), so replicates with different standardization statistics are comparable.
Their mean, jackknife standard error and sign-consistency mask (:mod:`dstrf.estimate.jackknife`) go to
``<out>/<group>/trial_<id>.h5`` (datasets ``mean``, ``se``, ``mask``, ``times``, ``channels``). ``index.json``
lists every file with the models it came from.

With ``--gradmap``, per fold instead: the gradient maps (:func:`dstrf.estimate.gradmap`, in the data's units;
by default the mean map over 64 windows of the fold's test trials, i.e. their mean dSTRF: ``--reference
null`` for the null stimulus, ``--x0`` for one window) of the fold's models, averaged with the same jackknife standard error and
sign-consistency mask, in ``<out>/<group>/fold_<k>.h5`` (datasets ``mean``, ``se``, ``mask`` ``(N, F, L)``,
``channels``) with a figure of the masked mean, ``fold_<k>.png``. A fold is the set of models that held the
same trials out; under the pairs scheme, where every trial has its own set, the files are ``trial_<id>``.

With ``--analyze``, after the dSTRFs: the nonlinearity measures (:func:`dstrf.analysis.nonlinearities`) of
every trial's sign-consistent mean dSTRF, over its frames past the warm-up, in
``<out>/<group>/nonlinearities.csv`` (one row per trial and channel), their mean per channel over the trials in
``nonlinearities_by_channel.csv``, and a figure comparing the channels, ``nonlinearities.png``. With
``--baseline GROUP`` (the group of a linear model in the same sweep, e.g. ``model=linear_strf``), the figure
of every other group adds its prediction gain over the baseline (test r per channel, averaged over the
group's jobs) against complexity, as in Keshishian et al. (2020).

A finished file made from the same models and options is kept as it is; one made otherwise is an error,
never overwritten. "The same models" means the same checkpoint contents (SHA-256 of their bytes), not their
file times, so a copied or moved sweep (``cp -r``, an archive) keeps its finished files. Every path written
(``index.json``, the files' attributes) is relative to the output folder or the sweep.

A job whose files cannot give its model (a truncated or damaged checkpoint, unreadable metrics, weights with
NaN from a diverged fit) fails every trial (or fold) that needs it: the jackknife mean of the other M-1 models
is not the result asked for, so nothing is written for it. The other trials go on; ``index.json`` lists what
was written and, under ``failed``, each failed trial with the job, the file and why. The exit status is then 2
(0: all written; 1: a usage error, e.g. options that differ from those of the finished files).

This module chooses the models (the cross-validation rule), fingerprints and keeps finished files, and records
failures; the files, figures and nonlinearity tables are written by :mod:`dstrf.postfit`, the same steps the
run callbacks (:mod:`dstrf.lit.callbacks`) take after one fit. (``dstrf.estimate`` is the estimation core;
this module is what runs post hoc over a sweep.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import postfit
from ..estimate.checks import check_finite_parameters
from ..estimate.gradmap import CONVENTIONS, READOUTS, gradmap
from ..estimate.jackknife import (
    DEFAULT_MEMORY,
    jackknife_dstrf,
    jackknife_se,
    jackknife_seconds,
    sign_consistency_mask,
)
from ..estimate.storage import MASK_MEANING
from ..runs.job import file_digest
from ..validation import DTYPES, dtype_named, memory_bytes

__all__ = ["estimate_sweep", "estimate_gradmaps", "analyze_sweep", "main"]

#: What an all-zero gradient map's warning tells the user to do, in dstrf-estimate's options.
GRADMAP_FIX = (
    "take the reference from the data: --reference data (the mean map over windows of each fold's test trials, "
    "the default) or --x0 TRIAL:FRAME (one window)"
)


class _Failed(Exception):
    """One trial (or fold) cannot be written: which job (None when it is not a job's fault), which file (relative
    to the sweep for a job's file, to the output folder for an output file), and the message that says why.
    ``record()`` is the entry of ``index.json``'s ``failed`` list."""

    def __init__(self, message: str, file: str | None, job: str | None = None) -> None:
        super().__init__(message)
        self.file, self.job = file, job

    def record(self, entry: dict) -> dict:
        return {**entry, "job": self.job, "failed_file": self.file, "error": str(self)}


class _Jobs:
    """The jobs' checkpoints within one run: the SHA-256 of each (read once per path) and the models, with the
    failure of a job remembered, so a broken checkpoint is read once and every trial that needs it fails
    with the same message."""

    def __init__(self, root: Path, device: str) -> None:
        self.root, self.device = root, device
        self.digests: dict[Path, str] = {}
        self.failed: dict[str, _Failed] = {}

    def relative(self, path: Path | None) -> str | None:
        """``path`` relative to the sweep (paths in ``index.json`` stay valid when the sweep moves)."""
        if path is None:
            return None
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def fail(self, job, error: BaseException, path: Path | None) -> _Failed:
        from ..results import ResultFileError

        if isinstance(error, ResultFileError):  # its message names the file and the job already
            failure = _Failed(str(error), self.relative(error.path), job.name)
        else:  # a missing checkpoint's message names the job already
            message = f"{path} (job {job.name}): {error}" if path is not None else str(error)
            failure = _Failed(message, self.relative(path), job.name)
        self.failed[job.name] = failure
        return failure

    def checkpoint(self, job) -> Path | None:
        if job.name in self.failed:
            raise self.failed[job.name]
        try:
            return job.checkpoint
        except OSError as err:  # metrics.json unreadable, or naming a checkpoint that is gone
            raise self.fail(job, err, getattr(err, "path", None)) from err

    def digest(self, job) -> str:
        """SHA-256 of the job's checkpoint bytes ("none" without one): what the finished files are made from."""
        path = self.checkpoint(job)
        if path is None:
            return "none"
        if path not in self.digests:
            try:
                self.digests[path] = file_digest(path)
            except OSError as err:
                raise self.fail(job, err, path) from err
        return self.digests[path]

    def load(self, job) -> torch.nn.Module:
        """The job's encoder between the data's units on the device; :class:`_Failed` if its checkpoint cannot
        be loaded or its weights are not finite."""
        path = self.checkpoint(job)
        try:
            model = job.load_module(self.device).data_units().to(self.device)
        except Exception as err:  # noqa: BLE001 -- CheckpointError, or whatever a damaged file raises
            raise self.fail(job, err, path) from err
        try:
            check_finite_parameters(model)
        except ValueError as err:
            raise self.fail(job, err, path) from err
        return model


def _fingerprint(jobs, options: dict, digest: Callable[[object], str]) -> str:
    """A hash of the options and of every job's name and checkpoint content (``digest(job)``): file times do
    not enter, so a copied sweep finds its finished files again."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for job in jobs:
        h.update(str(job.name).encode())
        h.update(digest(job).encode())
    return h.hexdigest()[:32]


def _models_unless_finished(
    jobs_, jobs, options: dict, target: Path, what: str, entry: dict, index: dict, listing: str
) -> tuple[list, str] | None:
    """Every model of the set and the fingerprint of what they make, to compute ``target``; None when ``target`` is already finished from the same
    models and options (recorded under ``index[listing]`` as kept) or a model cannot be had (recorded under
    ``index["failed"]``: the whole set fails, never a mean of fewer models)."""
    try:
        digest = _fingerprint(jobs, options, jobs_.digest)
        if _finished(target, digest, what, lambda: [jobs_.load(job) for job in jobs], entry["file"]):
            index[listing].append(entry)
            index["kept"] += 1
            return None
        return [jobs_.load(job) for job in jobs], digest
    except _Failed as failure:
        index["failed"].append(failure.record(entry))
        return None


def estimate_sweep(
    sweep_dir: str | Path,
    trials: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    times: slice | None = None,
    q: float = 0.95,
    lags: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    memory: int | str = DEFAULT_MEMORY,
    figures: Sequence[int] | None = None,
    animation: bool = False,
    animation_frames: int = 100,
) -> dict:
    """Write the per-trial jackknife dSTRFs of a finished sweep; returns the index (also ``index.json``).

    ``figures``: channels whose jackknife-mean dSTRF is drawn per trial, from the file alone
    (:func:`dstrf.postfit.dstrf_figures`); with ``animation`` also animated over ``animation_frames`` frames
    past the warm-up (MP4 where ffmpeg is installed, else GIF).

    Each trial's mean, SE and mask are computed and written block by block (:func:`dstrf.estimate.jackknife_dstrf`
    with ``out=``): peak memory is set by ``memory`` (bytes or ``"2GB"``), not by the trial's length, the
    number of channels or of models.

    ``index["trials"]`` lists the files written or kept (``index["kept"]`` counts the kept ones),
    ``index["failed"]`` the trials that could not be written, each with the job, the file and the reason (see
    the module docstring); the other trials are written all the same.
    """
    dtype_named(dtype)
    if animation and not figures:
        raise ValueError("--animation animates the channels of --figures: give --figures CHANNEL ...")
    if animation_frames < 2:
        raise ValueError(f"--animation-frames must be >= 2; got {animation_frames}")
    if figures and channels is not None and set(figures) - set(channels):
        raise ValueError(f"--figures {sorted(set(figures) - set(channels))} are not among --channels {list(channels)}")
    experiment, plan, broken = _held_out_models(sweep_dir, trials)
    out = Path(out) if out is not None else experiment.dir / "dstrf"
    jobs_ = _Jobs(experiment.dir, device)
    for job, error in broken:
        jobs_.fail(job, error, getattr(error, "path", None))

    options = {
        "channels": None if channels is None else list(map(int, channels)),
        "q": q,
        "lags": lags,
        "dtype": dtype,
        # the step only where there is one, so that files finished before strides existed are still recognized
        "times": None
        if times is None
        else [times.start, times.stop] + ([times.step] if times.step not in (None, 1) else []),
    }
    index: dict[str, Any] = {
        "sweep": str(experiment.dir.name),
        "q": q,
        "units": "response units per stimulus unit",
        "trials": [],
        "kept": 0,
        "failed": [],
    }
    if progress and plan:
        print(_size_estimate(experiment, plan, channels, times, lags, dtype), file=sys.stderr, flush=True)
    timed = not progress  # the time estimate: once, before the first trial that is computed
    items = sorted(plan.items())
    for position, ((group, trial), jobs) in enumerate(tqdm(items, desc="dSTRFs", unit="trial", disable=not progress)):
        target = postfit.trial_file(out / (group or "."), trial)
        entry = {
            "group": group,
            "trial": trial,
            "file": str(target.relative_to(out).as_posix()),
            "models": [j.name for j in jobs],
        }
        todo = _models_unless_finished(
            jobs_, jobs, {**options, "trial": trial}, target, "dSTRFs", entry, index, "trials"
        )
        if todo is None:
            if figures and target.is_file():  # a kept file: its figures are drawn all the same
                entry["figures"] = _figures(
                    out, target, experiment.trials(jobs[0]), trial, figures, animation, animation_frames
                )
            continue
        models, digest = todo
        data = experiment.trials(jobs[0])
        stimulus = data[trial].stimulus  # the raw stimulus, in the data's units
        if not timed:
            timed = True
            tqdm.write(
                _time_estimate(
                    experiment,
                    items[position:],
                    models,
                    stimulus.to(device),
                    lags,
                    channels,
                    times,
                    dtype,
                    memory,
                    target,
                ),
                file=sys.stderr,
            )
        try:
            jackknife_dstrf(
                models,
                stimulus.to(device),
                lags=lags,
                q=q,
                channels=channels,
                times=times,
                dtype=dtype_named(dtype)[0],
                out=target,
                memory=memory,
                progress=progress,
                attrs={
                    "fingerprint": digest,
                    "trial": trial,
                    "models": json.dumps(entry["models"]),
                    "sfreq": float(data.sfreq),
                    "freqs": np.asarray(data.freqs if data.freqs is not None else [], dtype=np.float64),
                    "channel_names": json.dumps(list(data.channel_names)),
                    "units": "response units per stimulus unit (the data's units)",
                },
            )
        except ValueError as err:  # the options or the data: the same for every trial, a usage error
            raise ValueError(f"trial {trial}{f' of group {group}' if group else ''}: {err}") from err
        if figures:
            entry["figures"] = _figures(out, target, data, trial, figures, animation, animation_frames)
        index["trials"].append(entry)
    postfit.write_index(out, index)
    return index


def _figures(
    out: Path,
    target: Path,
    data,
    trial: int,
    channels: Sequence[int],
    animation: bool = False,
    animation_frames: int = 100,
) -> list[str]:
    """The jackknife-mean dSTRF figures (and animations) of ``channels`` of one trial's file, drawn from the
    file; their paths relative to ``out``."""
    drawn = postfit.dstrf_figures(
        None,
        data,
        [trial],
        target.parent,
        channels=channels,
        animation=animation,
        animation_frames=animation_frames,
        label=f"{target.parent.name if target.parent != out else 'sweep'}, jackknife mean",
    )
    return [str(path.relative_to(out).as_posix()) for path in drawn]


def _output_frames(data, trial: int, times: slice | None) -> int:
    """How many output frames of ``trial`` the ``times`` selection (``--times START:STOP:STEP``) keeps."""
    return len(range(data[trial].stimulus.shape[-1])[times if times is not None else slice(None)])


def _size_estimate(experiment, plan: dict, channels, times: slice | None, lags: int | None, dtype: str) -> str:
    """What the trials' files will hold, said before the work starts: frames x channels x bands x lags, twice
    in ``dtype`` (mean, SE) and once as bytes (mask), per trial, summed."""
    itemsize = int(np.dtype(dtype_named(dtype)[1]).itemsize)
    total, frames = 0, 0
    for (_, trial), jobs in plan.items():
        data = experiment.trials(jobs[0])
        n_frames = _output_frames(data, trial, times)
        n_channels = len(channels) if channels is not None else data.n_channels
        n_lags = lags or ((jobs[0].metrics or {}).get("receptive_field") or 0)
        total += n_frames * n_channels * data.n_freqs * n_lags * (2 * itemsize + 1)
        frames += n_frames
    return (
        f"dstrf-estimate: {len(plan)} trial dSTRFs, {frames} output frames in all; the files will hold about "
        f"{total / 1e9:.2f} GB ({dtype}; --dtype float16 halves it, --channels / --times START:STOP:STEP "
        "select less)"
    )


def _finished(
    target: Path, digest: str, what: str, load: Callable[[], object] | None = None, name: str | None = None
) -> bool:
    """True if ``target`` already holds this very result (same fingerprint): it is kept. A file there with a
    different result is an error (never overwritten); so is one that cannot be read (:class:`_Failed`; ``name``
    is the file relative to the output folder, for ``index.json``). ``load()``, if given, loads the models
    before a mismatch is reported: when a checkpoint changed because it is damaged, that (a :class:`_Failed`
    naming it) is the error, not the mismatch."""
    if not target.exists():
        return False
    try:
        with h5py.File(target, "r") as existing:
            if existing.attrs.get("fingerprint") == digest:
                return True
    except OSError as err:
        raise _Failed(f"cannot read {target}: {err}; remove it to compute it again", name or target.name) from err
    if load is not None:
        load()
    raise FileExistsError(f"{target} holds {what} from other models or options; refusing to overwrite it")


def _time_estimate(
    experiment, items: list, models, stimulus, lags, channels, times, dtype: str, memory, target: Path
) -> str:
    """How long the trials still to compute will take, said before the first of them starts: the first one's
    time measured on a few of its frames (:func:`dstrf.estimate.jackknife.jackknife_seconds`), scaled by
    output frames x models to the others (an upper bound when some of them turn out to be finished)."""
    kind = dtype_named(dtype)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    seconds = jackknife_seconds(models, stimulus, lags, channels, times, kind, memory, out=target)

    def work(item) -> int:
        (_, trial), jobs = item
        return _output_frames(experiment.trials(jobs[0]), trial, times) * len(jobs)

    total = seconds * sum(map(work, items)) / work(items[0])
    rest = (
        f"; about {_duration(total)} for the {len(items)} trials still to compute (at most: finished files are kept)"
        if len(items) > 1
        else ""
    )
    return f"dstrf-estimate: about {_duration(seconds)} for the first trial (timed on a few of its frames){rest}"


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _held_out_models(sweep_dir, trials: Sequence[int] | None):
    """The experiment, per (group, trial) the finished jobs that tested that trial (the CV rule), and the
    ``(job, error)`` of finished jobs whose metrics cannot be read: their split is recomputed from their config
    so that the trials they tested fail rather than lose a model."""
    # the results reader (dstrf.inspect) reads the sweep layout; imported here to keep start-up light
    from ..results import ResultFileError, load

    experiment = load(sweep_dir)
    done, broken = [], []
    for job in experiment.jobs:
        if job.status != "done":
            continue
        try:
            split = job.split
        except ResultFileError as err:
            try:
                split = job.configured_split()
            except Exception as second:  # noqa: BLE001 -- then nobody can tell which trials lose a model
                raise ValueError(
                    f"{err}; and its split cannot be recomputed from its config ({second}), so the "
                    "trials it tested are unknown"
                ) from second
            broken.append((job, err))
        if split is not None:
            done.append((job, split))
    if not done:
        raise ValueError(f"{experiment.dir} has no finished jobs to estimate from")
    plan: dict[tuple[str, int], list] = {}
    for job, split in done:
        for trial in split.test:
            if trials is None or trial in set(trials):
                plan.setdefault((job.group, int(trial)), []).append(job)
    missing = sorted(set(trials or []) - {trial for _, trial in plan})
    if missing:
        raise ValueError(f"no finished job tested trials {missing}: nothing in this sweep held them out")
    return experiment, plan, broken


def _model_sets(plan: dict[tuple[str, int], list]) -> list[tuple[str, str, list, list[int]]]:
    """``(group, file stem, jobs, test trials)`` per distinct set of held-out models in ``plan`` ((group, trial)
    -> jobs). A set whose jobs share one fold is ``fold_<k>``; otherwise (the pairs scheme, where each trial's
    models are the pairs that contain it) ``trial_<id>`` of its first trial. Trials are in one set each, so
    the stems never collide."""
    sets: dict[tuple[str, tuple[str, ...]], tuple[list, list[int]]] = {}
    for (group, trial), jobs in sorted(plan.items()):
        key = (group, tuple(sorted(job.name for job in jobs)))
        sets.setdefault(key, (sorted(jobs, key=lambda job: job.name), []))[1].append(trial)
    result = []
    for (group, _), (jobs, tested) in sorted(sets.items()):
        folds = {job.fold for job in jobs}
        stem = f"fold_{folds.pop()}" if len(folds) == 1 else f"trial_{tested[0]}"
        result.append((group, stem, jobs, tested))
    return result


def estimate_gradmaps(
    sweep_dir: str | Path,
    q: float = 0.95,
    lags: int | None = None,
    readout: str = "last",
    convention: str = "excitatory",
    x0: tuple[int, int] | None = None,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    reference: str = "data",
    windows: int = 64,
) -> dict:
    """Per fold, the jackknife mean, SE and sign-consistency mask of its models' gradient maps; the index.

    The reference (:func:`dstrf.postfit.gradmap_reference`) is by default the stack of ``windows`` windows
    evenly spaced over the fold's test trials, so each map is the model's mean dSTRF over those frames;
    ``reference="null"`` takes the null stimulus (the training mean of each band, where a bias-free ReLU
    network such as the DeepEncoder is entirely off and its map all zeros), ``x0=(trial, frame)`` the one
    window of that trial's stimulus ending at that frame. They are maps of the encoder between the data's
    units, so models with different standardization statistics average correctly. Other arguments as in
    :func:`dstrf.estimate.gradmap` and :func:`estimate_sweep`.
    """
    experiment, plan, broken = _held_out_models(sweep_dir, None)
    out = Path(out) if out is not None else experiment.dir / "gradmap"
    jobs_ = _Jobs(experiment.dir, device)
    for job, error in broken:
        jobs_.fail(job, error, getattr(error, "path", None))
    options = {
        "q": q,
        "lags": lags,
        "readout": readout,
        "convention": convention,
        "x0": list(x0) if x0 else None,
        "reference": None if x0 else reference,
        "windows": windows if reference == "data" and not x0 else None,
    }
    if reference not in postfit.REFERENCES:
        raise ValueError(f"reference must be one of {postfit.REFERENCES}; got {reference!r}")
    index: dict[str, Any] = {
        "sweep": str(experiment.dir.name),
        "q": q,
        "units": "response units per stimulus unit",
        "reference": (
            f"the window of trial {x0[0]} ending at frame {x0[1]}"
            if x0
            else "the null stimulus (the training mean of each band)"
            if reference == "null"
            else f"the mean over {windows} windows of each fold's test trials"
        ),
        "folds": [],
        "kept": 0,
        "failed": [],
    }
    for group, stem, jobs, tested in tqdm(_model_sets(plan), desc="gradmaps", unit="fold", disable=not progress):
        names = [job.name for job in jobs]
        target = out / (group or ".") / f"{stem}.h5"
        entry = {
            "group": group,
            "file": str(target.relative_to(out).as_posix()),
            "test_trials": tested,
            "models": names,
        }
        todo = _models_unless_finished(
            jobs_, jobs, {**options, "kind": "gradmap"}, target, "gradient maps", entry, index, "folds"
        )
        if todo is None:
            continue
        models, digest = todo
        data = experiment.trials(jobs[0])
        span = lags or models[0].receptive_field
        if span is None:
            raise ValueError("the models are recurrent: give --lags for the gradient maps' window")
        try:
            window, where, ends = postfit.gradmap_reference(
                data,
                lags=span,
                receptive_field=models[0].receptive_field,
                readout=readout,
                reference=reference,
                x0=x0,
                trial_ids=tested,
                windows=windows,
            )
            with postfit.reissue_inactive(GRADMAP_FIX):
                maps = torch.stack(
                    [
                        gradmap(
                            model,
                            lags=lags,
                            x0=None if window is None else window.to(device),
                            readout=readout,
                            convention=convention,
                        ).double()
                        for model in models
                    ]
                )
        except ValueError as err:  # the options or the data: the same for every fold, a usage error
            raise ValueError(f"{stem}{f' of group {group}' if group else ''}: {err}") from err
        mean, se, mask = maps.mean(0), jackknife_se(maps), sign_consistency_mask(maps, q)
        postfit.write_jackknife_file(
            target,
            mean.float().numpy(),
            se.float().numpy(),
            mask.numpy(),
            channels=np.arange(mean.shape[0]),
            attrs={
                "fingerprint": digest,
                "q": q,
                "n_models": len(jobs),
                "lags": mean.shape[-1],
                "models": json.dumps(names),
                "test_trials": json.dumps(tested),
                "readout": readout,
                "convention": convention,
                "reference": where,
                "reference_frames": np.asarray(ends, dtype=np.int64).reshape(-1, 2),
                "dtype": "float32",
                "sfreq": float(data.sfreq),
                "freqs": np.asarray(data.freqs if data.freqs is not None else [], dtype=np.float64),
                "channel_names": json.dumps(list(data.channel_names)),
                "units": "response units per stimulus unit (the data's units)",
                "mask_meaning": MASK_MEANING,
            },
        )
        title = (
            f"{group + ' ' if group else ''}{stem}: mean gradient map of {len(jobs)} models at {where}, "
            f"sign-consistent at q={q}"
        )
        postfit.gradmap_figure(
            mean * mask,
            target.with_suffix(".png"),
            sfreq=data.sfreq,
            freqs=data.freqs,
            labels=data.channel_names,
            title=title,
        )
        index["folds"].append(entry)
    postfit.write_index(out, index)
    return index


def _test_r(jobs, jobs_: _Jobs) -> np.ndarray | None:
    """Per channel, the test r averaged over the jobs (None if a job has no per-channel scores);
    :class:`_Failed` if a job's ``metrics.json`` cannot be read."""
    from ..results import ResultFileError

    scores = []
    for job in jobs:
        try:
            metrics = job.metrics
        except ResultFileError as err:
            raise jobs_.fail(job, err, err.path) from err
        if metrics:
            scores.append(metrics.get("test", {}).get("r"))
    if not scores or any(s is None for s in scores):
        return None
    return np.mean(np.asarray(scores, dtype=np.float64), axis=0)


def analyze_sweep(
    sweep_dir: str | Path,
    index: dict,
    out: str | Path | None = None,
    baseline: str | None = None,
    tau_max: int | None = None,
    alpha: float = 0.05,
    gain_variant: str = "norm_cv",
    progress: bool = True,
) -> dict[str, Path]:
    """Nonlinearity measures of the per-trial jackknife dSTRFs listed in ``index`` (from :func:`estimate_sweep`);
    the per-trial CSV of every group.

    A trial whose file cannot be read is left out of the tables and moved from ``index["trials"]`` to
    ``index["failed"]`` (``index.json`` is written again); a group whose test scores cannot be read gets its
    figure without the prediction gain, and a ``failed`` entry (``trial`` None) that says why.
    """
    from ..results import load

    experiment = load(sweep_dir)
    out = Path(out) if out is not None else experiment.dir / "dstrf"
    index.setdefault("failed", [])
    groups = sorted({entry["group"] for entry in index["trials"]})
    known = sorted(set(groups) | {entry["group"] for entry in index["failed"]})
    if baseline is not None and baseline not in known:
        raise ValueError(f"--baseline {baseline!r} is not a group of this sweep; its groups: {known}")
    done: dict[str, list] = {}
    for job in experiment.jobs:
        if job.status == "done":
            done.setdefault(job.group, []).append(job)
    jobs_ = _Jobs(experiment.dir, "cpu")
    n_failed = len(index["failed"])

    def scores(group: str) -> np.ndarray | None:
        try:
            return _test_r(done.get(group, []), jobs_)
        except _Failed as failure:
            entry = {
                "group": group,
                "trial": None,
                "file": f"{group or '.'}/nonlinearities.png",
                "models": [job.name for job in done.get(group, [])],
            }
            index["failed"].append(failure.record({**entry, "left_out": "the prediction gain"}))
            return None

    r_baseline = scores(baseline) if baseline is not None else None
    written = {}
    for group in groups:
        entries = [e for e in index["trials"] if e["group"] == group]
        names = experiment.trials(done[group][0]).channel_names
        tables = {}
        for entry in tqdm(entries, desc=f"nonlinearities {group or '(sweep)'}", unit="trial", disable=not progress):
            try:
                tables[entry["trial"]] = _analyze_file(
                    out / entry["file"], entry["file"], names, tau_max, alpha, gain_variant
                )
            except _Failed as failure:
                index["trials"].remove(entry)
                index["failed"].append(failure.record(entry))
        if not tables:
            continue  # every trial of the group failed, and is reported
        r_group = scores(group) if r_baseline is not None and group != baseline else None
        paths = postfit.write_nonlinearities(
            tables,
            out / (group or "."),
            r_baseline=r_baseline,
            r_model=r_group,
            label=f"{group or 'sweep'}, jackknife-mean",
        )
        written[group] = paths["per_trial"]
    if len(index["failed"]) > n_failed:
        postfit.write_index(out, index)
    return written


def _analyze_file(path: Path, name: str, channel_names: list[str], tau_max, alpha, gain_variant):
    """The nonlinearity table of one jackknife dSTRF file; :class:`_Failed` if the file cannot be read."""
    try:
        with h5py.File(path, "r") as f:  # the sign-consistent mean, over the frames past the warm-up
            return postfit.nonlinearity_table(
                f["mean"],
                channel_names,
                mask=f["mask"],
                lags=int(f.attrs["lags"]),
                times=f["times"][()],
                channels=f["channels"][()],
                label=f"{name}:",
                remedy="estimate a longer time range to analyze it",
                tau_max=tau_max,
                alpha=alpha,
                gain_variant=gain_variant,
            )
    except (OSError, KeyError) as err:  # h5py: truncated, damaged (checksum), or lacking a dataset
        raise _Failed(
            f"cannot read {path}: {err}; remove it and rerun dstrf-estimate to compute it again", name
        ) from err


def _trial_frame(text: str) -> tuple[int, int]:
    trial, sep, frame = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TRIAL:FRAME, e.g. 0:500; got {text!r}")
    return int(trial), int(frame)


def _time_range(text: str) -> slice:
    """``START:STOP`` or ``START:STOP:STEP`` (every STEP-th frame, for exploratory runs); parts may be empty."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        start, stop, step = (int(p) if p else None for p in (*parts, "")[:3])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--times must be START:STOP or START:STOP:STEP (whole frames); got {text!r}"
        ) from None
    if step is not None and step < 1:
        raise argparse.ArgumentTypeError(f"--times STEP must be a positive number of frames; got {step}")
    return slice(start, stop, step)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstrf-estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--trials", type=int, nargs="+", help="trial ids (default: every tested trial)")
    parser.add_argument("--channels", type=int, nargs="+", help="output channels (default: all)")
    parser.add_argument(
        "--times",
        type=_time_range,
        help="output frames START:STOP, or START:STOP:STEP for every STEP-th frame (default: the whole trial)",
    )
    parser.add_argument("--q", type=float, default=0.95, help="sign-consistency quantile (default 0.95)")
    parser.add_argument("--lags", type=int, help="lags (default: the receptive field; required for recurrent models)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument(
        "--figures",
        type=int,
        nargs="+",
        metavar="CHANNEL",
        help="draw these channels' jackknife-mean dSTRFs per trial (PNG beside each file)",
    )
    parser.add_argument(
        "--animation",
        action="store_true",
        help="with --figures: also animate those channels' dSTRFs over the frames (MP4 with ffmpeg, else GIF)",
    )
    parser.add_argument(
        "--animation-frames", type=int, default=100, help="frames of each animation, past the warm-up (default 100)"
    )
    parser.add_argument(
        "--memory",
        type=_memory,
        default=DEFAULT_MEMORY,
        help="working memory of the jackknife dSTRFs, e.g. 2GB (default 1GiB); peak memory follows it, not the "
        "trial's length, channels or models",
    )
    parser.add_argument("--out", type=Path, help="output folder (default SWEEP_DIR/dstrf, or SWEEP_DIR/gradmap)")
    parser.add_argument(
        "--gradmap",
        action="store_true",
        help="per fold, the jackknife-aggregated gradient maps instead of dSTRFs",
    )
    parser.add_argument(
        "--reference",
        default="data",
        choices=postfit.REFERENCES,
        help="gradmap reference: data, the mean map over windows of each fold's test trials (their mean dSTRF; "
        "default), or null, the null stimulus (all zeros for a bias-free ReLU network)",
    )
    parser.add_argument("--windows", type=int, default=64, help="gradmap: windows of the data reference (default 64)")
    parser.add_argument("--readout", default="last", choices=READOUTS, help="gradmap readout (default last)")
    parser.add_argument(
        "--convention",
        default="excitatory",
        choices=CONVENTIONS,
        help="gradmap sign (default excitatory: positive where more energy raises the response)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="also the nonlinearity measures of every trial's dSTRF (nonlinearities.csv, per channel, figure)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GROUP",
        help="with --analyze: the group of the linear model, for the prediction-gain figure",
    )
    parser.add_argument("--tau-max", type=int, help="with --analyze: largest temporal-hold shift (default: see docs)")
    parser.add_argument("--alpha", type=float, default=0.05, help="with --analyze: temporal-hold significance level")
    parser.add_argument(
        "--x0",
        type=_trial_frame,
        metavar="TRIAL:FRAME",
        help="gradmap reference: the one window of TRIAL ending at FRAME (instead of --reference)",
    )
    args = parser.parse_args(argv)
    if (args.baseline or args.tau_max) and not args.analyze:
        parser.error("--baseline and --tau-max go with --analyze")
    if args.analyze and args.gradmap:
        parser.error("--analyze works on dSTRFs; run it without --gradmap")
    if args.windows < 1:
        parser.error(f"--windows must be >= 1 (windows of the gradmap's data reference); got {args.windows}")
    out = args.out or Path(args.sweep_dir) / ("gradmap" if args.gradmap else "dstrf")
    try:
        if args.gradmap:
            index = estimate_gradmaps(
                args.sweep_dir,
                args.q,
                args.lags,
                args.readout,
                args.convention,
                args.x0,
                args.device,
                args.out,
                reference=args.reference,
                windows=args.windows,
            )
            written, what = index["folds"], f"gradient maps of {len(index['folds'])} folds"
        else:
            index = estimate_sweep(
                args.sweep_dir,
                args.trials,
                args.channels,
                args.times,
                args.q,
                args.lags,
                args.dtype,
                args.device,
                args.out,
                memory=args.memory,
                figures=args.figures,
                animation=args.animation,
                animation_frames=args.animation_frames,
            )
            written, what = index["trials"], f"{len(index['trials'])} trial dSTRFs"
        print(
            f"dstrf-estimate: {what} in {out} ({len(written) - index['kept']} computed, {index['kept']} kept; "
            "index.json lists their models)",
            flush=True,
        )
        if args.analyze:
            analyzed = analyze_sweep(args.sweep_dir, index, args.out, args.baseline, args.tau_max, args.alpha)
            for group, path in analyzed.items():
                print(
                    f"dstrf-estimate: nonlinearities of {group or 'the sweep'} in {path} (per channel: "
                    f"{path.with_name('nonlinearities_by_channel.csv').name}, figure: nonlinearities.png)"
                )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"dstrf-estimate: error: {error}", file=sys.stderr)
        return 1
    _log_estimate(args.sweep_dir, out, "gradmap" if args.gradmap else "dstrf", index)
    if index["failed"]:
        print(_failure_report(index["failed"], len(written)), file=sys.stderr)
        return 2
    return 0


def _log_estimate(sweep_dir: Path, out: Path, kind: str, index: dict) -> None:
    """The estimate's wandb run where the sweep's jobs logged to wandb (:func:`dstrf.sweep.dashboard.
    log_estimate_run`). Never raises: the files are written, and a wandb failure must not make them look failed."""
    from .dashboard import log_estimate_run

    try:
        run_id = log_estimate_run(sweep_dir, out, kind, index)
    except Exception as err:  # noqa: BLE001 -- by design, see above
        print(f"dstrf-estimate: the wandb estimate run failed ({type(err).__name__}: {err})", file=sys.stderr)
        return
    if run_id:
        print(f"dstrf-estimate: wandb run 'estimate {kind}' ({run_id}) in the sweep's group", file=sys.stderr)


def _memory(text: str) -> int:
    try:
        return memory_bytes(text, "--memory")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _failure_report(failed: list[dict], n_written: int) -> str:
    """The failed trials or folds, one line each: which, which job, which file, why (the message says it)."""
    units = sum(1 for record in failed if "left_out" not in record)  # not a figure's missing part
    lines = [
        f"dstrf-estimate: {units} of {n_written + units} could not be written"
        + (f" (and {len(failed) - units} figures lack a part)" if len(failed) > units else "")
        + "; index.json lists them under 'failed':"
    ]
    for record in failed:
        if record.get("trial") is not None:
            unit = f"trial {record['trial']}"
        elif record.get("left_out"):
            unit = f"{record['left_out']} of the figure"
        else:
            unit = Path(record["file"]).stem
        group = f" of group {record['group']}" if record.get("group") else ""
        lines.append(f"  {unit}{group} ({record['file']}): {record['error']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
