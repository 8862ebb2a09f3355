"""Nonlinearity measures of fitted models on the synthetic neurons of known type, end to end as users run it.

1. ``dstrf-train -m +sweep=cv_jackknife experiment=linear_vs_deep model=linear_strf,deep_encoder``: 5-fold CV
   x jackknife (7 replicates per fold) of a linear STRF and the DeepEncoder on the built-in synthetic data
   (10 trials x 2000 frames, 32 bands, the five neuron types of :mod:`dstrf.data.synthetic`): 70 jobs.
2. ``dstrf-estimate SWEEP --analyze --baseline model=linear_strf``: every trial's jackknife dSTRF from the
   models that held it out, masked where they disagree in sign (q = 0.95), and the four measures per trial and
   channel, averaged per channel.

Writes ``experiments/results/nonlinearity_study.{json,md}`` (the per-channel table of both models) and
``nonlinearity_study.png`` (the DeepEncoder's figure, with its prediction gain over the linear STRF). Run from
the repository root: ``python experiments/nonlinearity_study.py`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = {"LinearSTRF": "model=linear_strf", "DeepEncoder": "model=deep_encoder"}
MEASURES = ("complexity", "gain_change", "temporal_hold", "shape_change")


def main() -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as root:
        sweep = Path(root) / "sweep"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dstrf.train",
                "-m",
                "+sweep=cv_jackknife",
                "experiment=linear_vs_deep",
                "model=linear_strf,deep_encoder",
                "logger=csv",
                f"hydra.sweep.dir={sweep}",
            ],
            cwd=root,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        trained = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(
            ["dstrf-estimate", str(sweep), "--analyze", "--baseline", GROUPS["LinearSTRF"]], env=env, check=True
        )
        analyzed = time.perf_counter() - start
        tables = {}
        for model, group in GROUPS.items():
            with open(sweep / "dstrf" / group / "nonlinearities_by_channel.csv") as f:
                tables[model] = list(csv.DictReader(f))
        summary = json.loads((sweep / "summary.json").read_text())
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(sweep / "dstrf" / GROUPS["DeepEncoder"] / "nonlinearities.png", RESULTS / "nonlinearity_study.png")
    (RESULTS / "nonlinearity_study.json").write_text(
        json.dumps(
            {
                "tables": tables,
                "train_s": round(trained, 1),
                "estimate_and_analyze_s": round(analyzed, 1),
                "summary_keys": sorted(summary),
            },
            indent=2,
        )
    )
    lines = [
        "Per channel, mean over the 10 test trials of the measures of each trial's sign-consistent jackknife "
        "dSTRF (the 7 models of its fold, q = 0.95), 5-fold CV x jackknife; training "
        f"{trained:.0f} s, dSTRFs + analysis {analyzed:.0f} s on 2 CPUs.",
        "",
        "| neuron | model | complexity | gain change (CV) | temporal hold (frames) | shape change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for i in range(len(tables["DeepEncoder"])):
        for model in GROUPS:
            r = tables[model][i]
            lines.append(f"| {r['name']} | {model} | " + " | ".join(f"{float(r[m]):.2f}" for m in MEASURES) + " |")
    text = "\n".join(lines)
    (RESULTS / "nonlinearity_study.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
