"""Closed-form ridge STRFs: dstrf's ``ridge_strf`` in a leave-one-trial-out sweep vs mtrf's nested-CV ridge, in one run.

The data are sized like naplib's speech demo (10 trials of 64.4 s at 100 Hz, 64 bands, 10 channels; naplib
itself cannot be installed beside numpy 2, see the README): dstrf's synthetic ground truth, two neurons of each
type, Gaussian noise at SNR 1. Both sides get the same raw arrays, 31 lags (0-300 ms) and the same alpha grid
(11 values, 1e-2 .. 1e8):

1. **mtrf**, nested CV with its own API: the outer loop leaves each trial out in turn; ``TRF.train`` chooses
   lambda per channel by leave-one-trial-out CV over the other 9 (``k=-1``, ``reg_per_y_channel=True``), and
   ``TRF.predict`` scores the held-out trial. Its r: per channel, the mean over the outer folds.
2. **dstrf**: ``dstrf-train +sweep=cv split=loo model=ridge_strf model.lags=31`` on the trials file, started as
   users start it, in a subprocess (basic launcher: one job after another); each job holds one trial out for
   test and one for validation (dstrf's split always has one), and chooses alpha per channel by 5-fold inner
   CV over its 8 training trials. Its r: per channel, the mean over jobs of the test trial's r
   (``r_score`` in ``summary.json``).

Also the fit time of one ``RidgeSTRF`` at 64 bands x 65 lags x 200 channels x 30 minutes (10 trials of 3 min),
in-process. Run from the repository root: ``python experiments/benchmark_ridge.py`` (about 15 minutes on 2
cores). Writes ``experiments/results/ridge_benchmark.{json,md}``. Needs ``pip install mtrf``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
ALPHAS = [float(a) for a in np.logspace(-2, 8, 11)]
LAGS = 31
NEURONS = ["linear", "ln", "gain_change", "temporal_hold", "shape_change"] * 2


def make_data(root: Path):
    from dstrf.data import save_trials
    from dstrf.data.synthetic import synthetic_trials

    trials = synthetic_trials(n_trials=10, n_frames=6440, n_freqs=64, neurons=NEURONS, n_repeats=2, snr=1.0, seed=0)
    save_trials(trials, root / "trials.h5")
    return trials


def run_mtrf(trials) -> dict:
    """Nested CV with mtrf's own API: per held-out trial, ``TRF.train`` chooses lambda per channel
    (``reg_per_y_channel``) by leave-one-trial-out CV over the other 9, then ``TRF.predict`` scores the held-out
    trial per channel. (``mtrf.stats.nested_crossval`` averages over channels, so it cannot give per-channel r.)"""
    from mtrf.model import TRF

    stimulus = [x.numpy().T.astype(np.float64) for x in trials.stimuli]   # (T, F)
    response = [y.numpy().T.astype(np.float64) for y in trials.responses]  # (T, N)
    start = time.perf_counter()
    r, lambdas = [], []
    for i in range(len(stimulus)):
        rest = [j for j in range(len(stimulus)) if j != i]
        trf = TRF(direction=1)
        trf.train([stimulus[j] for j in rest], [response[j] for j in rest], fs=int(trials.sfreq), tmin=0.0,
                  tmax=(LAGS - 1) / trials.sfreq, regularization=ALPHAS, k=-1, verbose=False, reg_per_y_channel=True)
        _, r_i = trf.predict(stimulus[i], response[i], average=False)
        r.append(np.asarray(r_i))
        lambdas.append(np.asarray(trf.regularization).tolist())
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "r": np.mean(r, axis=0).tolist(), "lambdas": lambdas}


def run_dstrf(root: Path) -> dict:
    args = ["+sweep=cv", "split=loo", "model=ridge_strf", f"model.lags={LAGS}", f"model.alphas=[{','.join(map(str, ALPHAS))}]",
            "data=file", f"data.trials.path={root / 'trials.h5'}", "logger=none"]
    env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": str(root)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dstrf.train", *args], cwd=root, env=env, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    (sweep,) = (root / "outputs" / "multiruns").iterdir()
    summary = json.loads((sweep / "summary.json").read_text())
    (group,) = summary["groups"]
    assert summary["complete"] and summary["n_done"] == 10, summary
    return {"seconds": round(seconds, 1), "r": group["per_channel"]["r_score"], "channels": group["channels"]}


def fit_at_scale() -> dict:
    from dstrf.models import RidgeSTRF

    rng = np.random.default_rng(0)
    stimuli = [rng.standard_normal((64, 18000)).astype(np.float32) for _ in range(10)]
    kernel = rng.standard_normal((200, 64 * 8)) / 20
    responses = []
    for x in stimuli:
        lagged = np.stack([np.roll(x, k, axis=1) for k in range(8)], axis=1).reshape(64 * 8, -1)
        responses.append((kernel @ lagged + rng.standard_normal((200, x.shape[1]))).astype(np.float32))
    model = RidgeSTRF(64, 200, lags=65, alphas=ALPHAS)
    start = time.perf_counter()
    model.fit(stimuli, responses)
    return {"seconds": round(time.perf_counter() - start, 1), "frames": 10 * 18000, "bands": 64, "lags": 65,
            "channels": 200}


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trials = make_data(root)
        dstrf_result = run_dstrf(root)
        mtrf_result = run_mtrf(trials)
    diff = np.asarray(dstrf_result["r"]) - np.asarray(mtrf_result["r"])
    scale = fit_at_scale()
    result = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, numpy {np.__version__}",
        "data": "10 trials x 6440 frames (644 s at 100 Hz), 64 bands, 10 channels, 31 lags, 11 alphas",
        "dstrf_sweep": dstrf_result, "mtrf_nested_cv": mtrf_result,
        "speedup": round(mtrf_result["seconds"] / dstrf_result["seconds"], 2),
        "r_difference": {"max_abs": float(np.abs(diff).max()), "mean": float(diff.mean()), "per_channel": diff.tolist()},
        "fit_at_scale": scale,
    }
    (RESULTS / "ridge_benchmark.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"{result['data']}; {result['machine']}.",
        "",
        "| | wall time (s) | mean test r |",
        "|---|---:|---:|",
        f"| mtrf nested CV (LOO outer, LOO inner) | {mtrf_result['seconds']} | {np.mean(mtrf_result['r']):.3f} |",
        f"| dstrf `ridge_strf`, LOO sweep (5-fold inner CV) | {dstrf_result['seconds']} | {np.mean(dstrf_result['r']):.3f} |",
        "",
        f"Speed-up {result['speedup']}x; per-channel r difference (dstrf - mtrf): max |d| "
        f"{result['r_difference']['max_abs']:.4f}, mean {result['r_difference']['mean']:+.4f}.",
        f"One RidgeSTRF fit at 64 bands x 65 lags x 200 channels x 30 min: {scale['seconds']} s.",
    ]
    (RESULTS / "ridge_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
