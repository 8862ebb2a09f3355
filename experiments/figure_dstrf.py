"""The README's example figure: the dSTRF of the synthetic temporal-hold neuron, from a default training run.

Trains the default DeepEncoder on the built-in synthetic data exactly as users do, with the dSTRF callback
(``dstrf-train callbacks=dstrf ...``), and copies its figure of the ``temporal_hold`` neuron (channel 3) of
the first test trial to ``experiments/results/dstrf_example.png``. Its dSTRF shows the same spectrotemporal
feature at a latency that moves with the stimulus, which a single linear STRF cannot express. Run from the
repository root: ``python experiments/figure_dstrf.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHANNEL = 3  # temporal_hold in dstrf.data.synthetic.NEURON_TYPES


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        run_dir = Path(root) / "run"
        args = [
            "callbacks=dstrf",
            f"callbacks.dstrf.channels=[{CHANNEL}]",
            "callbacks.dstrf.times=[300,700]",
            "callbacks.dstrf.figure_times=[420,440,460,480]",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        ]
        env = {**os.environ, "WANDB_MODE": "disabled"}
        subprocess.run([sys.executable, "-m", "dstrf.train", *args], cwd=root, env=env, check=True)
        index = json.loads((run_dir / "dstrf" / "index.json").read_text())
        trial = sorted(index["trials"], key=int)[0]
        RESULTS.mkdir(exist_ok=True)
        target = RESULTS / "dstrf_example.png"
        shutil.copy(run_dir / "dstrf" / f"trial_{trial}_channel_{CHANNEL}.png", target)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
