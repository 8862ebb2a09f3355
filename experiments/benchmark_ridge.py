"""Closed-form ridge STRFs on naplib's speech demo: dstrf's ``ridge_strf`` in a leave-one-trial-out sweep vs
mtrf's nested-CV ridge and MNE's ``ReceptiveField`` with scikit-learn's ``RidgeCV``, in one run.

The data: naplib's demo (10 speech trials, 644 s at 100 Hz, 10 simulated electrodes; read from the file
naplib ships, ``pip install --no-deps naplib``), its 128-band spectrogram averaged to 64 bands (adjacent pairs),
as in the measurement issue 11 started from. Every method gets the same arrays, 31 lags (0-300 ms) and the same
alpha grid (11 values, 1e-2 .. 1e8); every method's r is per electrode, the mean over the 10 held-out trials.

1. **mtrf**, nested CV with its own API: the outer loop leaves each trial out in turn; ``TRF.train`` chooses
   lambda per electrode by leave-one-trial-out CV over the other 9 (``k=-1``, ``reg_per_y_channel=True``), and
   ``TRF.predict`` scores the held-out trial.
2. **MNE** ``ReceptiveField(estimator=RidgeCV(alphas, alpha_per_target=True))`` per held-out trial, fitted on
   the other 9 concatenated (MNE's epochs must have equal lengths; the 9 boundaries put 270 of 58,000 rows'
   lags across two trials). RidgeCV chooses alpha by efficient leave-one-*frame*-out CV (GCV), which
   neighbouring, autocorrelated frames make optimistic: the known pitfall whole-trial folds avoid.
3. **dstrf**: ``dstrf-train +sweep=cv split=loo data=naplib_demo data.trials.n_bands=64 model=ridge_strf
   model.lags=31``, started as users start it, in a subprocess (basic launcher: one job after another); each
   job holds one trial out for test and one for validation (dstrf's split always has one) and chooses alpha
   per electrode by 5-fold inner CV over its 8 training trials.

Also the fit time of one ``RidgeSTRF`` at 64 bands x 65 lags x 200 channels x 30 minutes (10 trials of 3 min),
in-process. Run from the repository root: ``python experiments/benchmark_ridge.py`` (about 30 minutes on 2
cores). Writes ``experiments/results/ridge_benchmark.{json,md}``. Needs ``pip install mtrf`` and naplib.
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
BANDS = 64


def load_data():
    from dstrf.data.formats import load_naplib_demo

    return load_naplib_demo(n_bands=BANDS)


def _time_first(trials) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The trials as the reference tools take them: float64 stimuli ``(T, F)`` and responses ``(T, N)``."""
    return (
        [x.numpy().T.astype(np.float64) for x in trials.stimuli],
        [y.numpy().T.astype(np.float64) for y in trials.responses],
    )


def _leave_one_out(n: int):
    """``(held-out trial, the other trials)`` for each of ``n`` trials: the outer loop of both references."""
    for i in range(n):
        yield i, [j for j in range(n) if j != i]


def run_mtrf(trials) -> dict:
    """Nested CV with mtrf's own API: per held-out trial, ``TRF.train`` chooses lambda per channel
    (``reg_per_y_channel``) by leave-one-trial-out CV over the other 9, then ``TRF.predict`` scores the held-out
    trial per channel. (``mtrf.stats.nested_crossval`` averages over channels, so it cannot give per-channel r.)"""
    from mtrf.model import TRF

    stimulus, response = _time_first(trials)
    start = time.perf_counter()
    r, lambdas = [], []
    for i, rest in _leave_one_out(len(stimulus)):
        trf = TRF(direction=1)
        trf.train(
            [stimulus[j] for j in rest],
            [response[j] for j in rest],
            fs=int(trials.sfreq),
            tmin=0.0,
            tmax=(LAGS - 1) / trials.sfreq,
            regularization=ALPHAS,
            k=-1,
            verbose=False,
            reg_per_y_channel=True,
        )
        _, r_i = trf.predict(stimulus[i], response[i], average=False)
        r.append(np.asarray(r_i))
        lambdas.append(np.asarray(trf.regularization).tolist())
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "r": np.mean(r, axis=0).tolist(), "lambdas": lambdas}


def run_mne(trials) -> dict:
    """MNE's ReceptiveField with RidgeCV (alpha per electrode by GCV over frames), leave one trial out."""
    from mne.decoding import ReceptiveField
    from sklearn.linear_model import RidgeCV

    stimulus, response = _time_first(trials)
    start = time.perf_counter()
    r, alphas = [], []
    for i, rest in _leave_one_out(len(stimulus)):
        rf = ReceptiveField(
            tmin=0.0,
            tmax=(LAGS - 1) / trials.sfreq,
            sfreq=trials.sfreq,
            estimator=RidgeCV(alphas=ALPHAS, alpha_per_target=True),
            scoring="corrcoef",
            n_jobs=1,
        )
        rf.fit(np.concatenate([stimulus[j] for j in rest]), np.concatenate([response[j] for j in rest]))
        prediction = rf.predict(stimulus[i])[LAGS - 1 :]
        target = response[i][LAGS - 1 :]
        r.append([np.corrcoef(prediction[:, n], target[:, n])[0, 1] for n in range(target.shape[1])])
        alphas.append(np.asarray(rf.estimator_.alpha_).tolist())
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "r": np.mean(r, axis=0).tolist(), "alphas": alphas}


def run_dstrf(root: Path) -> dict:
    args = [
        "+sweep=cv",
        "split=loo",
        "model=ridge_strf",
        f"model.lags={LAGS}",
        f"model.alphas=[{','.join(map(str, ALPHAS))}]",
        "data=naplib_demo",
        f"data.trials.n_bands={BANDS}",
        "logger=none",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": str(root)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args], cwd=root, env=env, capture_output=True, text=True
    )
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
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "frames": 10 * 18000,
        "bands": 64,
        "lags": 65,
        "channels": 200,
    }


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    trials = load_data()
    with tempfile.TemporaryDirectory() as tmp:
        dstrf_result = run_dstrf(Path(tmp))
    mtrf_result = run_mtrf(trials)
    mne_result = run_mne(trials)
    scale = fit_at_scale()
    diff = np.asarray(dstrf_result["r"]) - np.asarray(mtrf_result["r"])
    diff_mne = np.asarray(mne_result["r"]) - np.asarray(mtrf_result["r"])
    result = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, numpy {np.__version__}",
        "data": (
            f"naplib's speech demo: 10 trials, {sum(trials.lengths)} frames ({sum(trials.lengths) / trials.sfreq:.0f} s "
            f"at 100 Hz), {BANDS} bands, 10 electrodes; {LAGS} lags, {len(ALPHAS)} alphas"
        ),
        "dstrf_sweep": dstrf_result,
        "mtrf_nested_cv": mtrf_result,
        "mne_ridgecv": mne_result,
        "speedup": round(mtrf_result["seconds"] / dstrf_result["seconds"], 2),
        "speedup_vs_mne": round(mne_result["seconds"] / dstrf_result["seconds"], 2),
        "r_difference": {
            "max_abs": float(np.abs(diff).max()),
            "mean": float(diff.mean()),
            "per_channel": diff.tolist(),
        },
        "r_difference_mne": {
            "max_abs": float(np.abs(diff_mne).max()),
            "mean": float(diff_mne.mean()),
            "per_channel": diff_mne.tolist(),
        },
        "fit_at_scale": scale,
    }
    (RESULTS / "ridge_benchmark.json").write_text(json.dumps(result, indent=2))
    rows = [
        ("mtrf nested CV (LOO outer, LOO-trial inner)", mtrf_result),
        ("MNE `ReceptiveField` + `RidgeCV` (LOO outer, GCV over frames)", mne_result),
        ("dstrf `ridge_strf`, LOO sweep (5-fold inner CV over trials)", dstrf_result),
    ]
    lines = [
        f"{result['data']}; {result['machine']}.",
        "",
        "| | wall time (s) | mean test r | max \\|r - r_mtrf\\| over electrodes |",
        "|---|---:|---:|---:|",
    ]
    for name, res in rows:
        d = np.abs(np.asarray(res["r"]) - np.asarray(mtrf_result["r"])).max()
        lines.append(f"| {name} | {res['seconds']} | {np.mean(res['r']):.3f} | {d:.4f} |")
    lines += [
        "",
        f"Speed-up over mtrf {result['speedup']}x, over MNE {result['speedup_vs_mne']}x; per-electrode r "
        f"difference (dstrf - mtrf): max |d| {result['r_difference']['max_abs']:.4f}, mean "
        f"{result['r_difference']['mean']:+.4f}.",
        f"One RidgeSTRF fit at 64 bands x 65 lags x 200 channels x 30 min: {scale['seconds']} s.",
    ]
    (RESULTS / "ridge_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
