"""The whole ``dstrf-estimate`` of one 60 s trial at the size of a real study, end to end, as users run it.

``experiments/benchmark_jackknife_memory.py`` measures peak memory and speed on slices of a trial and
extrapolates; this runs the whole thing once: a real ``dstrf-train`` multirun of the M = 7 jackknife
replicates of one test fold (``DeepEncoder``, width 128, receptive field 65) on 9 synthetic trials of
6000 frames (60 s at 100 Hz), 64 bands and 220 channels (the five neuron types, 44 of each), then
``dstrf-estimate SWEEP --dtype float16`` on the fold's test trial: every one of its 6000 frames x 220
channels x 64 bands x 65 lags, streamed into its file with the default 1 GiB budget. The models train for
one epoch only: the work of a dSTRF does not depend on how well a model fits.

Measured: the time ``dstrf-estimate`` predicts before it starts (what it prints), its wall time, its peak
RSS (``ru_maxrss`` of the child), and the file's size. Run from the repository root:
``python experiments/benchmark_estimate_trial.py [--channels 220]`` (about 30 minutes on 2 cores; the file
is about 27 GB at float16, written to a temporary folder and removed). Writes
``experiments/results/estimate_trial.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
N_TRIALS, N_FREQS, N_MODELS = 9, 64, 7
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def make_data(path: Path, n_channels: int, n_frames: int) -> None:
    from dstrf.data import save_trials
    from dstrf.data.synthetic import NEURON_TYPES, make_synthetic

    neurons = [NEURON_TYPES[i % len(NEURON_TYPES)] for i in range(n_channels)]
    data = make_synthetic(n_trials=N_TRIALS, n_frames=n_frames, n_freqs=N_FREQS, neurons=neurons, n_repeats=1)
    save_trials(data.trials, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=220)
    parser.add_argument("--frames", type=int, default=6000, help="frames per trial (default 6000: 60 s)")
    parser.add_argument("--keep", type=Path, help="keep the sweep and its dSTRF file in this folder")
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dstrf_estimate_trial_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "trials.h5"
        if not data.exists():
            make_data(data, args.channels, args.frames)
        sweep = work / "sweep"
        # 9 trials, 9 folds: fold 0 tests one trial, validates on one, and its 7 training trials make 7
        # jackknife replicates (each leaves one out), the M = 7 of the issue
        start = time.perf_counter()
        subprocess.run(
            [
                "dstrf-train",
                "-m",
                "data=file",
                f"data.trials.path={data}",
                "split=kfold",
                f"split.n_folds={N_TRIALS}",
                "split.fold=0",
                "split.jackknife=" + ",".join(map(str, range(N_MODELS))),
                "trainer.max_epochs=1",
                "callbacks=none",
                "logger=none",
                f"hydra.sweep.dir={sweep}",
            ],
            check=True,
            env=env,
        )
        train_s = time.perf_counter() - start
        # through a small parent of its own, so that the peak RSS is dstrf-estimate's, not the training's
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", PEAK, "dstrf-estimate", str(sweep), "--dtype", "float16"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        estimate_s = time.perf_counter() - start
        sys.stderr.write(result.stderr[-4000:])
        if result.returncode != 0:
            raise SystemExit(f"dstrf-estimate failed ({result.returncode})")
        peak_mb = float(result.stdout.strip().splitlines()[-1]) / 1024
        index = json.loads((sweep / "dstrf" / "index.json").read_text())
        (entry,) = index["trials"]
        file = sweep / "dstrf" / entry["file"]
        predicted = re.search(r"about (\d+(?:\.\d+)?) (s|min|h) for the first trial", result.stderr)
        scale = {"s": 1, "min": 60, "h": 3600}
        row = {
            "channels": args.channels,
            "frames": args.frames,
            "bands": N_FREQS,
            "models": len(entry["models"]),
            "train_seconds": train_s,
            "estimate_seconds": estimate_s,
            "predicted_seconds": float(predicted[1]) * scale[predicted[2]] if predicted else None,
            "peak_rss_mb": peak_mb,
            "file_gb": file.stat().st_size / 1e9,
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(row, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "estimate_trial.json").write_text(
        json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), **row}, indent=1)
    )
    predicted_min = f"{row['predicted_seconds'] / 60:.0f}" if row["predicted_seconds"] else "-"
    (RESULTS / "estimate_trial.md").write_text(
        "| channels | frames x bands x lags | models | predicted (min) | dstrf-estimate (min) | peak RSS (MB) "
        "| file (GB, float16) |\n|---|---|---|---|---|---|---|\n"
        f"| {row['channels']} | {row['frames']} x {N_FREQS} x 65 | {row['models']} | {predicted_min} "
        f"| {row['estimate_seconds'] / 60:.1f} | {row['peak_rss_mb']:.0f} | {row['file_gb']:.1f} |\n"
    )


if __name__ == "__main__":
    main()
