"""``dstrf-estimate SWEEP_DIR``: per trial, the jackknife-aggregated dSTRF of the models that never saw it.

For every trial that some finished job tested, the models are exactly the jobs (of one group) whose test
trials include it. Test trials are never used for training or validation, so none of these models saw the
trial: the cross-validation rule. For a K-fold x jackknife sweep, they are the M jackknife replicates of the
trial's fold. Each model's dSTRF is taken in the data's units (raw stimulus in, response out; see
:class:`dstrf.lit.DataUnitsEncoder`), so replicates with different standardisation statistics are comparable.
Their mean, jackknife standard error and sign-consistency mask (:mod:`dstrf.estimate.jackknife`) go to
``<out>/<group>/trial_<id>.h5`` (datasets ``mean``, ``se``, ``mask``, ``times``, ``channels``). ``index.json``
lists every file with the models it came from.

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
import numpy as np
import torch
from tqdm.auto import tqdm

from ..estimate.jackknife import jackknife_dstrf

__all__ = ["estimate_sweep", "main"]

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
    from ..inspect import load  # the inspector reads the sweep layout; imported here to keep start-up light

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    experiment = load(sweep_dir)
    out = Path(out) if out is not None else experiment.dir / "dstrf"
    done = [job for job in experiment.jobs if job.status == "done" and job.split is not None]
    if not done:
        raise ValueError(f"{experiment.dir} has no finished jobs to estimate dSTRFs from")
    plan: dict[tuple[str, int], list] = {}
    for job in done:
        for trial in job.split.test:
            if trials is None or trial in set(trials):
                plan.setdefault((job.group, int(trial)), []).append(job)
    missing = sorted(set(trials or []) - {trial for _, trial in plan})
    if missing:
        raise ValueError(f"no finished job tested trials {missing}: nothing in this sweep held them out")

    options = {"channels": None if channels is None else list(map(int, channels)), "q": q, "lags": lags, "dtype": dtype,
               "times": None if times is None else [times.start, times.stop]}
    index = {"sweep": str(experiment.dir.name), "q": q, "units": "response units per stimulus unit", "trials": []}
    for (group, trial), jobs in tqdm(sorted(plan.items()), desc="dSTRFs", unit="trial", disable=not progress):
        target = out / (group or ".") / f"trial_{trial}.h5"
        digest = _fingerprint(jobs, {**options, "trial": trial})
        entry = {"group": group, "trial": trial, "file": str(target.relative_to(out)), "models": [j.name for j in jobs]}
        index["trials"].append(entry)
        if target.exists():
            with h5py.File(target, "r") as existing:
                if existing.attrs.get("fingerprint") == digest:
                    continue
            raise FileExistsError(f"{target} holds dSTRFs from other models or options; refusing to overwrite it")
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
    parser.add_argument("--out", type=Path, help="output folder (default SWEEP_DIR/dstrf)")
    args = parser.parse_args(argv)
    try:
        index = estimate_sweep(args.sweep_dir, args.trials, args.channels, args.times, args.q, args.lags, args.dtype,
                               args.device, args.out)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"dstrf-estimate: error: {error}", file=sys.stderr)
        return 1
    out = args.out or Path(args.sweep_dir) / "dstrf"
    print(f"dstrf-estimate: {len(index['trials'])} trial dSTRFs in {out} (index.json lists their models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
