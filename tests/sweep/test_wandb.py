"""A sweep with ``logger=wandb`` (offline), read back from the runs' ``.wandb`` records: every job is its own
run, named, grouped and tagged by the sweep, its config logged once, and a re-run continues the same runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..wandb_records import offline_runs

TINY = ["experiment=quick", "data.trials.n_trials=6", "data.trials.n_frames=300", "model.hidden=8"]
SWEEP = ["+sweep=cv", *TINY, "split.n_folds=2", "trainer.max_epochs=1", "logger=[csv,wandb]"]


def sweep(root: Path, extra=()):
    env = {**os.environ, "WANDB_MODE": "offline", "DSTRF_ROOT": str(root), "WANDB_DIR": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *SWEEP, *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (root / "outputs" / "multiruns").iterdir()
    return sweep_dir


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    first = tmp_path_factory.mktemp("first")
    return first, sweep(first)


def test_every_job_is_a_run_of_the_sweeps_group_with_its_name_tags_and_config(swept):
    root, sweep_dir = swept
    runs = [r for r in offline_runs(sweep_dir) if r.job_type != "summary"]
    assert sorted(r.name for r in runs) == ["fold0", "fold1"]
    assert {r.group for r in runs} == {sweep_dir.name} and {r.job_type for r in runs} == {"fold"}
    for run in runs:
        fold = run.name.removeprefix("fold")
        assert f"split.fold={fold}" in run.tags and not any(t.startswith("logger=") for t in run.tags)
        assert run.exit_code == 0
        metrics = json.loads((sweep_dir / run.name / "metrics.json").read_text())
        config = run.config
        # the config once: no second tree of the module's hparams beside the composed config
        assert "encoder" not in config and config["model"]["_target_"] == "dstrf.models.DeepEncoder"
        assert config["receptive_field"] == metrics["receptive_field"]
        assert config["n_parameters"] > 0
        split = config["split_trials"]
        assert len(split["test"]) == 3 and not set(split["test"]) & set(split["train"])
        assert not str(config["paths"]["output_dir"]).startswith(str(root))  # relative to the working directory
        # the final scores in the run summary and the per-channel table, equal to metrics.json
        assert run.summary["test/r"] == pytest.approx(metrics["test"]["r_mean"])
        assert run.summary["val/r"] == pytest.approx(metrics["val"]["r_mean"])
        for trial, r in metrics["test"]["per_trial"].items():
            assert run.summary[f"test/r_trial/{trial}"] == pytest.approx(np.nanmean(np.array(r, dtype=float)))
        table = json.loads((run.path.parent / "files" / run.summary["test/channels"]["path"]).read_text())
        assert table["columns"] == ["channel", "val_r", "test_r", "cc_norm"]
        assert [row[0] for row in table["data"]] == metrics["channels"]
        assert [row[2] for row in table["data"]] == pytest.approx(metrics["test"]["r"])
        assert run.summary["test/prediction"]["_type"] == "image-file"  # and the figure on disk
        assert (sweep_dir / run.name / "test_prediction.png").stat().st_size > 10_000


def test_the_sweep_has_a_summary_run_in_its_group_with_the_aggregated_table(swept):
    _, sweep_dir = swept
    (summary_run,) = [r for r in offline_runs(sweep_dir) if r.job_type == "summary"]
    assert summary_run.name == "summary" and summary_run.group == sweep_dir.name and summary_run.exit_code == 0
    written = json.loads((sweep_dir / "summary.json").read_text())
    assert summary_run.summary["sweep/r_score_mean"] == pytest.approx(written["groups"][0]["r_score_mean"])
    assert summary_run.summary["n_done"] == written["n_done"] == 2
    table = json.loads(
        (summary_run.path.parent / "files" / summary_run.summary["summary/channels"]["path"]).read_text()
    )
    per_channel = written["groups"][0]["per_channel"]
    assert [row[1] for row in table["data"]] == per_channel["channel"]
    assert [row[3] for row in table["data"]] == pytest.approx(per_channel["r_score"])
    assert (sweep_dir / "summary_channels.png").stat().st_size > 10_000


def test_dstrf_sync_names_every_offline_run_of_the_sweep_in_one_command(swept):
    _, sweep_dir = swept
    result = subprocess.run(["dstrf-sync", str(sweep_dir), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs = sorted(str(d) for d in sweep_dir.rglob("offline-run-*") if d.is_dir())
    assert len(runs) == 3 and "3 offline runs: " in result.stderr and all(r in result.stderr for r in runs)
    missing = subprocess.run(["dstrf-sync", str(sweep_dir / "nope")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "nope is not a directory" in missing.stderr


def test_the_same_sweep_command_elsewhere_logs_into_the_same_run_ids(swept, tmp_path):
    _, sweep_dir = swept
    again = sweep(tmp_path)
    assert again.name == sweep_dir.name
    assert {r.name: r.id for r in offline_runs(again)} == {r.name: r.id for r in offline_runs(sweep_dir)}
    assert len({r.id for r in offline_runs(again)}) == 3  # two jobs and the summary, all different


def test_a_single_run_is_named_by_model_and_data_and_a_failed_one_is_finished_as_failed(tmp_path):
    """A diverged fit (module.lr=1e30) fails the job after its wandb run started: the run is finished with
    exit code 1, not left open for the next job of the process to log into."""
    env = {**os.environ, "WANDB_MODE": "offline", "DSTRF_ROOT": str(tmp_path), "WANDB_DIR": str(tmp_path)}
    args = [*TINY, "module.lr=1e30", "trainer.max_epochs=2", "logger=wandb", f"hydra.run.dir={tmp_path / 'r'}"]
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0 and "the fit diverged" in result.stderr
    (run,) = offline_runs(tmp_path / "r")
    assert run.name == "DeepEncoder on synthetic_small" and run.group == "" and run.exit_code == 1
    # the offline line, in the job's log, names the upload command
    assert (
        f"wandb is offline: WANDB_MODE=offline is set. The run is kept on disk; upload it later with `dstrf-sync {tmp_path / 'r'}`"
        in (tmp_path / "r" / "train.log").read_text()
    )


def test_dstrf_estimate_logs_its_figures_into_an_estimate_run_of_the_sweeps_group(swept, tmp_path, monkeypatch):
    """On a copy of the sweep (the other tests count its runs): the gradient maps' run, job_type estimate,
    with one image per fold figure that dstrf-estimate wrote, and what it wrote in the summary."""
    from dstrf.sweep.posthoc import main

    _, sweep_dir = swept
    copy = shutil.copytree(sweep_dir, tmp_path / sweep_dir.name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main([str(copy), "--gradmap"]) == 0
    (run,) = [r for r in offline_runs(copy) if r.job_type == "estimate"]
    assert (run.name, run.group, run.exit_code) == ("estimate gradmap", sweep_dir.name, 0)
    figures = sorted(p.stem for p in (copy / "gradmap").glob("*.png"))
    assert figures == ["fold_0", "fold_1"]
    assert {k for k in run.summary if k.startswith("estimate/")} == {f"estimate/gradmap/{f}" for f in figures}
    assert all(run.summary[f"estimate/gradmap/{f}"]["_type"] == "image-file" for f in figures)
    assert (run.summary["n_written"], run.summary["n_failed"]) == (2, 0)
    # a second estimate continues the same run (its id is derived from the sweep), and keeps the files
    assert main([str(copy), "--gradmap"]) == 0
    assert {r.id for r in offline_runs(copy) if r.job_type == "estimate"} == {run.id}
