"""A multirun whose jobs share one process (Hydra's basic launcher) needs the memory of one job, not of all.

Each job's Lightning Trainer holds its data in reference cycles that only a full garbage collection frees;
before dstrf's sweeper collected after every job, resident memory grew by about one dataset per job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dstrf.data import Trials, save_trials

REPO = Path(__file__).resolve().parents[2]
N_TRIALS, N_FREQS, N_FRAMES, N_JOBS = 5, 64, 40_000, 4
DATASET_MB = N_TRIALS * (N_FREQS + 1) * N_FRAMES * 4 / 2**20  # float32 stimulus (F, T) + response (1, T): 50 MB


def _trials_file(path: Path) -> Path:
    """Random trials read from a file by every job (a file loads in well under a second; synthetic data of this
    size would take longer to generate than the whole test may run)."""
    rng = np.random.default_rng(0)
    stimuli = [rng.random((N_FREQS, N_FRAMES), dtype=np.float32) for _ in range(N_TRIALS)]
    responses = [rng.standard_normal((1, N_FRAMES), dtype=np.float32) for _ in range(N_TRIALS)]
    return save_trials(Trials(stimuli, responses, sfreq=100.0), path)


@pytest.mark.slow
def test_memory_of_a_multirun_does_not_grow_with_each_job(tmp_path):
    data, log = _trials_file(tmp_path / "trials.h5"), tmp_path / "rss.txt"
    args = [
        "+sweep=cv",
        "data=file",
        f"data.trials.path={data}",
        f"split.n_folds={N_JOBS}",
        "model=linear_strf",
        "model.lags=5",
        "trainer.max_epochs=1",
        "++trainer.num_sanity_val_steps=0",
        "++trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "+hydra.callbacks.rss._target_=tests.sweep.rss_probe.RSSProbe",
        f"+hydra.callbacks.rss.path={log}",
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "DSTRF_ROOT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # glibc hands a freed block of several MB back to the system only while such blocks are mmap()ed;
        # its default threshold adapts upwards and then keeps freed tensors in its heap, which makes RSS
        # swing by a tensor or two between jobs. A fixed threshold makes RSS follow the live data.
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    rows = [line.split() for line in log.read_text().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(N_JOBS)), rows
    rss, alive = [float(r[1]) for r in rows], [int(r[2]) for r in rows]
    # Deterministic: when a job has ended, none of its data is left for the collector to find some day.
    assert alive == [0] * N_JOBS, f"Trials objects alive after each job: {alive} (RSS MB: {rss})"
    # Every job loads the same data: after the first, memory must stay where it was (it stays within 2 MB).
    growth = max(rss[1:]) - rss[0]
    assert growth < DATASET_MB / 2, (
        f"RSS grew by {growth:.0f} MB after job 1 of a {N_JOBS}-job multirun on a {DATASET_MB:.0f} MB dataset "
        f"(RSS after each job: {rss} MB)"
    )
