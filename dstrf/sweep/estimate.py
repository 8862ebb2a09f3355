"""``dstrf-estimate SWEEP_DIR``: per trial, the jackknife-aggregated dSTRF of the models that never saw it.

For every trial that some finished job tested, the models are exactly the jobs (of one group) whose test
trials include it. Test trials are never used for training or validation, so none of these models saw the
trial: the cross-validation rule. For a K-fold x jackknife sweep, they are the M jackknife replicates of the
trial's fold. Each model's dSTRF is taken in the data's units (raw stimulus in, response out; see
:class:`dstrf.lit.DataUnitsEncoder`), so replicates with different standardisation statistics are comparable.
Their mean, jackknife standard error and sign-consistency mask (:mod:`dstrf.estimate.jackknife`) go to
``<out>/<group>/trial_<id>.h5`` (datasets ``mean``, ``se``, ``mask``, ``times``, ``channels``). ``index.json``
lists every file with the models it came from.

With ``--gradmap``, per fold instead: the gradient maps (:func:`dstrf.estimate.gradmap`, at the null stimulus,
in the data's units) of the fold's models, averaged with the same jackknife standard error and
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
never overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from ..analysis.inputs import FrameView
from ..analysis.table import by_channel, nonlinearities, plot_nonlinearities, stack_tables
from ..estimate.gradmap import gradmap
from ..estimate.jackknife import jackknife_dstrf, jackknife_se, sign_consistency_mask

__all__ = ["estimate_sweep", "estimate_gradmaps", "analyze_sweep", "main"]

DTYPES = {"float32": (torch.float32, np.float32), "float16": (torch.float16, np.float16), "float64": (torch.float64, np.float64)}


def _fingerprint(jobs, options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for job in jobs:
        checkpoint = job.checkpoint
        h.update(str(job.name).encode())
        h.update(str(checkpoint.stat().st_size if checkpoint else None).encode())
        h.update(str(checkpoint.stat().st_mtime_ns if checkpoint else None).encode())
    return h.hexdigest()[:32]


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
) -> dict:
    """Write the per-trial jackknife dSTRFs of a finished sweep; returns the index (also ``index.json``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    experiment, plan = _held_out_models(sweep_dir, trials)
    out = Path(out) if out is not None else experiment.dir / "dstrf"

    options = {"channels": None if channels is None else list(map(int, channels)), "q": q, "lags": lags, "dtype": dtype,
               "times": None if times is None else [times.start, times.stop]}
    index = {"sweep": str(experiment.dir.name), "q": q, "units": "response units per stimulus unit", "trials": []}
    for (group, trial), jobs in tqdm(sorted(plan.items()), desc="dSTRFs", unit="trial", disable=not progress):
        target = out / (group or ".") / f"trial_{trial}.h5"
        digest = _fingerprint(jobs, {**options, "trial": trial})
        entry = {"group": group, "trial": trial, "file": str(target.relative_to(out)), "models": [j.name for j in jobs]}
        index["trials"].append(entry)
        if _finished(target, digest, "dSTRFs"):
            continue
        stimulus = experiment.trials(jobs[0])[trial].stimulus  # the raw stimulus, in the data's units
        models = [job.load_module(device).data_units().to(device) for job in jobs]
        result = jackknife_dstrf(models, stimulus.to(device), lags=lags, q=q, channels=channels, times=times,
                                 dtype=DTYPES[dtype][0])
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        n_frames = stimulus.shape[-1]
        with h5py.File(partial, "w") as f:
            chunks = (min(64, result.mean.shape[0]), 1, *result.mean.shape[2:])
            f.create_dataset("mean", data=result.mean.numpy(), chunks=chunks)
            f.create_dataset("se", data=result.se.numpy(), chunks=chunks)
            f.create_dataset("mask", data=result.mask.numpy(), chunks=chunks)
            f.create_dataset("times", data=np.arange(n_frames)[times if times is not None else slice(None)])
            n_outputs = result.mean.shape[1]
            f.create_dataset("channels", data=np.asarray(channels if channels is not None else range(n_outputs)))
            f.attrs.update({"fingerprint": digest, "q": q, "n_models": len(models), "trial": trial,
                            "models": json.dumps(entry["models"]), "lags": result.mean.shape[-1]})
        partial.replace(target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(index, indent=2))
    return index


def _finished(target: Path, digest: str, what: str) -> bool:
    """True if ``target`` already holds this very result (same fingerprint): it is kept. A file there with a
    different result is an error: never overwritten."""
    if not target.exists():
        return False
    with h5py.File(target, "r") as existing:
        if existing.attrs.get("fingerprint") == digest:
            return True
    raise FileExistsError(f"{target} holds {what} from other models or options; refusing to overwrite it")


def _held_out_models(sweep_dir, trials: Sequence[int] | None):
    """The experiment and, per (group, trial), the finished jobs that tested that trial (the CV rule)."""
    from ..inspect import load  # the inspector reads the sweep layout; imported here to keep start-up light

    experiment = load(sweep_dir)
    done = [job for job in experiment.jobs if job.status == "done" and job.split is not None]
    if not done:
        raise ValueError(f"{experiment.dir} has no finished jobs to estimate from")
    plan: dict[tuple[str, int], list] = {}
    for job in done:
        for trial in job.split.test:
            if trials is None or trial in set(trials):
                plan.setdefault((job.group, int(trial)), []).append(job)
    missing = sorted(set(trials or []) - {trial for _, trial in plan})
    if missing:
        raise ValueError(f"no finished job tested trials {missing}: nothing in this sweep held them out")
    return experiment, plan


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
) -> dict:
    """Per fold, the jackknife mean, SE and sign-consistency mask of its models' gradient maps; the index.

    The maps are taken at the null stimulus (the training mean of each band, zeros in standardised units),
    or with ``x0=(trial, frame)`` at the window of that trial's stimulus ending at that frame (a bias-free ReLU
    network such as the DeepEncoder is flat at the null stimulus). They are maps of the encoder between the
    data's units, so models with different standardisation statistics average correctly. Other arguments as
    in :func:`dstrf.estimate.gradmap` and :func:`estimate_sweep`.
    """
    from ..plots import plot_receptive_fields

    experiment, plan = _held_out_models(sweep_dir, None)
    out = Path(out) if out is not None else experiment.dir / "gradmap"
    options = {"q": q, "lags": lags, "readout": readout, "convention": convention, "x0": list(x0) if x0 else None}
    reference = ("null stimulus (training mean of each band)" if x0 is None
                 else f"the window of trial {x0[0]} ending at frame {x0[1]}")
    index = {"sweep": str(experiment.dir.name), "q": q, "units": "response units per stimulus unit",
             "reference": reference, "folds": []}
    for group, stem, jobs, tested in tqdm(_model_sets(plan), desc="gradmaps", unit="fold", disable=not progress):
        names = [job.name for job in jobs]
        target = out / (group or ".") / f"{stem}.h5"
        digest = _fingerprint(jobs, {**options, "kind": "gradmap"})
        entry = {"group": group, "file": str(target.relative_to(out)), "test_trials": tested, "models": names}
        index["folds"].append(entry)
        if _finished(target, digest, "gradient maps"):
            continue
        models = [job.load_module(device).data_units().to(device) for job in jobs]
        data = experiment.trials(jobs[0])
        window = None
        if x0 is not None:
            if (lags or models[0].receptive_field) is None:
                raise ValueError("the models are recurrent: give --lags for the gradient maps' window")
            window = data.window(*x0, lags or models[0].receptive_field)
        maps = torch.stack([gradmap(model, lags=lags, x0=None if window is None else window.to(device),
                                    readout=readout, convention=convention).double() for model in models])
        mean, se, mask = maps.mean(0), jackknife_se(maps), sign_consistency_mask(maps, q)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with h5py.File(partial, "w") as f:
            f.create_dataset("mean", data=mean.float().numpy())
            f.create_dataset("se", data=se.float().numpy())
            f.create_dataset("mask", data=mask.numpy())
            f.create_dataset("channels", data=np.arange(mean.shape[0]))
            f.attrs.update({"fingerprint": digest, "q": q, "n_models": len(jobs), "lags": mean.shape[-1],
                            "models": json.dumps(names), "test_trials": json.dumps(tested),
                            "readout": readout, "convention": convention})
        partial.replace(target)
        title = f"{group + ' ' if group else ''}{stem}: mean gradient map of {len(jobs)} models, sign-consistent at q={q}"
        figure = plot_receptive_fields(mean * mask, sfreq=data.sfreq, freqs=data.freqs, labels=data.channel_names,
                                       title=title)
        figure.savefig(target.with_suffix(".png"), dpi=100)
        plt.close(figure)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(index, indent=2))
    return index


def _test_r(jobs) -> np.ndarray | None:
    """Per channel, the test r averaged over the jobs (None if a job has no per-channel scores)."""
    scores = [job.metrics.get("test", {}).get("r") for job in jobs if job.metrics]
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
    the per-trial CSV of every group."""
    from ..inspect import load

    experiment = load(sweep_dir)
    out = Path(out) if out is not None else experiment.dir / "dstrf"
    groups = sorted({entry["group"] for entry in index["trials"]})
    if baseline is not None and baseline not in groups:
        raise ValueError(f"--baseline {baseline!r} is not a group of this sweep; its groups: {groups}")
    done = {}
    for job in experiment.jobs:
        if job.status == "done":
            done.setdefault(job.group, []).append(job)
    r_baseline = _test_r(done.get(baseline, [])) if baseline is not None else None
    written = {}
    for group in groups:
        entries = [e for e in index["trials"] if e["group"] == group]
        names = experiment.trials(done[group][0]).channel_names
        tables = {}
        for entry in tqdm(entries, desc=f"nonlinearities {group or '(sweep)'}", unit="trial", disable=not progress):
            with h5py.File(out / entry["file"], "r") as f:
                lags = int(f.attrs["lags"])
                times = f["times"][()]
                start = int(np.searchsorted(times, lags - 1))  # frames whose whole window lies in the trial
                if len(times) - start < 3:
                    raise ValueError(f"{entry['file']}: {len(times) - start} frames past the warm-up ({lags - 1} "
                                     "frames); estimate a longer time range to analyse it")
                channels = f["channels"][()]
                masked_mean = FrameView(f["mean"], start, mask=f["mask"], times=times, channels=channels)
                tables[entry["trial"]] = nonlinearities(masked_mean, names=[names[int(c)] for c in channels],
                                                        tau_max=tau_max, alpha=alpha, gain_variant=gain_variant)
        folder = out / (group or ".")
        per_trial = stack_tables(tables)
        written[group] = per_trial.to_csv(folder / "nonlinearities.csv")
        summary = by_channel(per_trial)
        summary.to_csv(folder / "nonlinearities_by_channel.csv")
        r_group = _test_r(done[group])
        gain = {}
        if r_baseline is not None and group != baseline and r_group is not None:
            channels = summary.column("channel").astype(int)
            gain = {"r_linear": r_baseline[channels], "r_deep": r_group[channels]}
        plot_nonlinearities(summary, path=folder / "nonlinearities.png", **gain)
    return written


def _trial_frame(text: str) -> tuple[int, int]:
    trial, sep, frame = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TRIAL:FRAME, e.g. 0:500; got {text!r}")
    return int(trial), int(frame)


def _time_range(text: str) -> slice:
    start, _, stop = text.partition(":")
    return slice(int(start) if start else None, int(stop) if stop else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstrf-estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--trials", type=int, nargs="+", help="trial ids (default: every tested trial)")
    parser.add_argument("--channels", type=int, nargs="+", help="output channels (default: all)")
    parser.add_argument("--times", type=_time_range, help="output frames START:STOP (default: the whole trial)")
    parser.add_argument("--q", type=float, default=0.95, help="sign-consistency quantile (default 0.95)")
    parser.add_argument("--lags", type=int, help="lags (default: the receptive field; required for recurrent models)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument("--out", type=Path, help="output folder (default SWEEP_DIR/dstrf, or SWEEP_DIR/gradmap)")
    parser.add_argument("--gradmap", action="store_true",
                        help="per fold, the jackknife-aggregated gradient maps at the null stimulus instead of dSTRFs")
    parser.add_argument("--readout", default="last", choices=["last", "mean"], help="gradmap readout (default last)")
    parser.add_argument("--convention", default="excitatory", choices=["excitatory", "paper"],
                        help="gradmap sign (default excitatory: positive where more energy raises the response)")
    parser.add_argument("--analyze", action="store_true",
                        help="also the nonlinearity measures of every trial's dSTRF (nonlinearities.csv, per channel, figure)")
    parser.add_argument("--baseline", metavar="GROUP",
                        help="with --analyze: the group of the linear model, for the prediction-gain figure")
    parser.add_argument("--tau-max", type=int, help="with --analyze: largest temporal-hold shift (default: see docs)")
    parser.add_argument("--alpha", type=float, default=0.05, help="with --analyze: temporal-hold significance level")
    parser.add_argument("--x0", type=_trial_frame, metavar="TRIAL:FRAME",
                        help="gradmap reference: the window of TRIAL ending at FRAME (default: the null stimulus)")
    args = parser.parse_args(argv)
    if (args.baseline or args.tau_max) and not args.analyze:
        parser.error("--baseline and --tau-max go with --analyze")
    if args.analyze and args.gradmap:
        parser.error("--analyze works on dSTRFs; run it without --gradmap")
    try:
        if args.gradmap:
            index = estimate_gradmaps(args.sweep_dir, args.q, args.lags, args.readout, args.convention, args.x0,
                                      args.device, args.out)
        else:
            index = estimate_sweep(args.sweep_dir, args.trials, args.channels, args.times, args.q, args.lags,
                                   args.dtype, args.device, args.out)
            if args.analyze:
                analyzed = analyze_sweep(args.sweep_dir, index, args.out, args.baseline, args.tau_max, args.alpha)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"dstrf-estimate: error: {error}", file=sys.stderr)
        return 1
    if args.gradmap:
        out = args.out or Path(args.sweep_dir) / "gradmap"
        print(f"dstrf-estimate: gradient maps of {len(index['folds'])} folds in {out} (index.json lists their models)")
    else:
        out = args.out or Path(args.sweep_dir) / "dstrf"
        print(f"dstrf-estimate: {len(index['trials'])} trial dSTRFs in {out} (index.json lists their models)")
        if args.analyze:
            for group, path in analyzed.items():
                print(f"dstrf-estimate: nonlinearities of {group or 'the sweep'} in {path} (per channel: "
                      f"{path.with_name('nonlinearities_by_channel.csv').name}, figure: nonlinearities.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
