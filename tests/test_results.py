"""dstrf.results (public name: dstrf.inspect) on a real (small) sweep: jobs, statuses, configs, splits, checkpoints -> models that reproduce
the saved test predictions, also after the sweep was copied elsewhere; the dstrf-inspect CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from dstrf.results import NotAnExperimentError, load, main

from .sweep.conftest import JOBS, built_sweep, job_dir_name


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return built_sweep(tmp_path_factory)  # the same session-wide sweep as tests/sweep/


def test_load_lists_every_job_with_its_status_metrics_and_split(sweep_dir):
    exp = load(sweep_dir)
    assert exp.kind == "sweep" and len(exp.jobs) == len(JOBS)
    assert [(j.name, j.group, j.fold, j.jackknife) for j in exp.jobs] == [
        (job_dir_name(g, f, k), g, f, k) for g, f, k, _ in JOBS
    ]
    assert [j.status for j in exp.jobs] == [s for *_, s in JOBS]
    assert exp.groups == ["", "model.hidden=8"]
    for job in exp.jobs:
        if job.status != "done":
            continue
        metrics = json.loads((job.dir / "metrics.json").read_text())
        assert isinstance(job.config, DictConfig) and job.config.split.fold == job.fold
        assert job.metrics == metrics and job.epochs == 2
        assert job.val_r == metrics["val"]["r_mean"] and job.test_r == metrics["test"]["r_mean"]
        assert job.checkpoint.is_absolute() and job.checkpoint == job.dir / metrics["best_checkpoint"]
        for role in ("train", "val", "test"):
            assert list(getattr(job.split, role)) == metrics["split"][role]
        assert job.split.left_out == metrics["split"]["left_out"]
    assert exp.job(0, 1).name == "fold0_jk1"
    assert exp.job(0, 0, group="model.hidden=8").name == "model.hidden=8/fold0_jk0"
    with pytest.raises(KeyError, match="choose a group"):
        exp.job(0, 0)
    with pytest.raises(KeyError, match="no job"):
        exp.job(3, 0)
    assert exp["fold1_jk0"] is exp.jobs[3] and exp[3] is exp.jobs[3]
    rows = exp.table()
    assert rows[0]["checkpoint"] == "fold0_jk0/checkpoints/best-epoch001.ckpt" and rows[5]["checkpoint"] is None


def test_unfinished_jobs_split_is_recomputed_from_the_config(sweep_dir):
    exp = load(sweep_dir)
    incomplete, missing = exp["fold1_jk1"], exp["fold1_jk2"]
    assert incomplete.metrics is None and incomplete.epochs is None and incomplete.test_r is None
    used = json.loads((sweep_dir.parent / "incomplete_metrics.json").read_text())["split"]  # what it trained on
    assert incomplete.split.as_dict() == used
    assert incomplete.checkpoint.name.startswith("best-epoch")  # no metrics.json: the newest best-*.ckpt
    assert missing.config is None and missing.split is None and missing.checkpoint is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        missing.load_model()


def test_a_copied_sweep_loads_models_that_reproduce_the_saved_test_predictions(sweep_dir, tmp_path):
    original = shutil.copytree(sweep_dir, tmp_path / "original")
    moved = shutil.copytree(original, tmp_path / "elsewhere" / "moved")
    shutil.rmtree(original)  # nothing may refer to where the sweep was
    exp = load(moved)
    for name in ("fold0_jk1", "model.hidden=8/fold0_jk0"):
        job = exp[name]
        assert job.checkpoint.is_relative_to(moved)
        model = job.load_model()
        assert isinstance(model, torch.nn.Module) and not model.training
        assert all(p.device.type == "cpu" for p in model.parameters())
        module = job.load_module()
        assert not module.training and module.encoder.receptive_field == model.receptive_field
        with np.load(job.dir / "test_predictions.npz") as saved:
            for trial in job.split.test:
                prediction = job.predict(trial)
                assert prediction.shape == saved[f"trial_{trial}"].shape
                np.testing.assert_allclose(prediction, saved[f"trial_{trial}"], rtol=1e-4, atol=1e-5)
                stimulus = exp.trials(job)[trial].stimulus.numpy()
                np.testing.assert_allclose(job.predict(stimulus), prediction, rtol=1e-6, atol=1e-6)
    # the trials are built once per distinct data config, and shared
    assert exp.trials(exp["fold0_jk0"]) is exp.trials(exp["model.hidden=8/fold0_jk0"])
    with pytest.raises(IndexError):
        exp["fold0_jk0"].predict(99)


def test_a_single_run_directory_is_an_experiment_of_one_job(sweep_dir):
    exp = load(sweep_dir / "fold0_jk2")
    assert exp.kind == "run" and len(exp.jobs) == 1
    (job,) = exp.jobs
    assert (job.name, job.fold, job.jackknife, job.status) == (".", 0, 2, "done")
    assert exp.table()[0]["checkpoint"] == "checkpoints/best-epoch001.ckpt"


def test_clear_errors_for_what_is_not_a_run_or_a_sweep(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(NotAnExperimentError, match="neither a dstrf run directory .* nor a sweep directory"):
        load(tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError):
        load(tmp_path / "notes" / "readme.txt")
    assert main([str(tmp_path / "notes")]) == 1
    assert "neither a dstrf run directory" in capsys.readouterr().err


def test_cli_lists_jobs_and_shows_one(sweep_dir, capsys):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(["dstrf-inspect", str(sweep_dir)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "7 jobs (5 done, 1 incomplete, 1 missing)" in lines[0]
    assert lines[1].split() == ["#", "dir", "fold", "jk", "status", "epochs", "val", "r", "test", "r", "checkpoint"]
    assert lines[2].split()[:6] == ["0", "fold0_jk0", "0", "0", "done", "2"]
    assert lines[2].split()[-1] == "fold0_jk0/checkpoints/best-epoch001.ckpt"
    assert lines[7].split()[:5] == ["5", "fold1_jk2", "1", "2", "missing"]

    metrics = json.loads((sweep_dir / "fold0_jk1" / "metrics.json").read_text())
    assert main([str(sweep_dir), "--job", "fold0_jk1"]) == 0
    out = capsys.readouterr().out
    assert f"train: {metrics['split']['train']}" in out and f"test:  {metrics['split']['test']}" in out
    assert "config:" in out and "_target_: dstrf.data.splits.kfold" in out and "jackknife: 1" in out
    assert main([str(sweep_dir), "--job", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job"]["dir"] == "fold0_jk1" and shown["split"] == metrics["split"]
    assert shown["config"]["split"]["jackknife"] == 1
    assert main([str(sweep_dir), "--json"]) == 0
    assert [row["status"] for row in json.loads(capsys.readouterr().out)["jobs"]] == [s for *_, s in JOBS]
    assert main([str(sweep_dir), "--job", "fold9"]) == 1
    assert "no job 'fold9'" in capsys.readouterr().err


def test_checkpoints_load_with_map_location(sweep_dir, monkeypatch):
    """A checkpoint written on a GPU loads on a CPU-only machine only with map_location; it is always passed."""
    from dstrf.lit import EncoderModule

    calls = []
    original = EncoderModule.load_from_checkpoint

    def spy(path, **kwargs):
        calls.append(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(EncoderModule, "load_from_checkpoint", spy)
    load(sweep_dir)["fold0_jk0"].load_model()
    assert calls == [{"map_location": "cpu"}]


# --------------------------------------------------------------------------------------- unreadable files


def test_a_truncated_checkpoint_is_a_checkpoint_error_naming_the_file_and_the_job(sweep_dir, tmp_path):
    from dstrf.results import CheckpointError

    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    path = sweep / "fold0_jk1" / "checkpoints" / "best-epoch001.ckpt"
    path.write_bytes(path.read_bytes()[:100])
    job = load(sweep)["fold0_jk1"]
    with pytest.raises(CheckpointError) as caught:
        job.load_model()
    assert isinstance(caught.value, OSError) and (caught.value.path, caught.value.job) == (path, "fold0_jk1")
    assert str(caught.value).startswith(f"cannot read checkpoint {path} (job fold0_jk1): RuntimeError: ")
    assert str(caught.value).endswith("; rerun the sweep command to retrain it")
    with pytest.raises(CheckpointError, match="job fold0_jk1"):
        job.predict(2)


def test_a_missing_best_checkpoint_is_an_error_not_another_checkpoint(sweep_dir, tmp_path):
    from dstrf.results import CheckpointError

    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    best = sweep / "fold0_jk0" / "checkpoints" / "best-epoch001.ckpt"
    best.unlink()  # last.ckpt is still there, but it is not the model metrics.json scored
    job = load(sweep)["fold0_jk0"]
    with pytest.raises(
        CheckpointError,
        match=rf"cannot read checkpoint {best} \(job fold0_jk0\): metrics.json names "
        r"it as the best checkpoint, but it is not there",
    ):
        _ = job.checkpoint
    with pytest.raises(CheckpointError):
        job.load_model()


def test_unreadable_metrics_of_a_done_job_are_an_error_and_listed_as_a_problem(sweep_dir, tmp_path, capsys):
    from dstrf.results import ResultFileError

    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    metrics = sweep / "fold0_jk2" / "metrics.json"
    metrics.write_text('{"epochs": 2, "split": {"tr')  # cut off
    (sweep / "fold1_jk1" / "metrics.json").write_text("{")  # a job killed while writing it: no metrics yet
    exp = load(sweep)
    job = exp["fold0_jk2"]
    with pytest.raises(ResultFileError, match=rf"cannot read file {metrics} \(job fold0_jk2\): JSONDecodeError: "):
        _ = job.metrics
    with pytest.raises(ResultFileError):
        _ = job.split  # would otherwise be guessed from the config, and the best checkpoint from the file names
    assert exp["fold1_jk1"].metrics is None
    row = exp.table()[2]
    assert row["dir"] == "fold0_jk2" and row["epochs"] is None
    assert row["problem"].startswith(f"cannot read file {metrics}")
    assert main([str(sweep)]) == 0
    assert f"dstrf-inspect: fold0_jk2: cannot read file {metrics}" in capsys.readouterr().err


def test_the_public_name_dstrf_inspect_is_the_results_module():
    """DESIGN.md's ``dstrf.inspect.load`` keeps working, and no module directly in the package is named after a
    standard-library module (with the package directory on sys.path, ``dstrf/inspect.py`` hid ``inspect``)."""
    import importlib

    import dstrf
    from dstrf.inspect import load as public_load

    assert public_load is load and importlib.import_module("dstrf.inspect") is dstrf.results is dstrf.inspect
    names = {
        p.stem for p in Path(dstrf.__file__).parent.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert "results" in names and not names & set(sys.stdlib_module_names) - {"__init__"}


def test_load_model_is_in_the_data_units_by_default(sweep_dir):
    """dstrf(job.load_model(), raw stimulus) is the data-units dSTRF; the bare encoder needs standardized input."""
    from dstrf.estimate import dstrf

    job = load(sweep_dir)["fold0_jk0"]
    stimulus = load(sweep_dir).trials(job)[job.split.test[0]].stimulus
    module = job.load_module()
    model, encoder = job.load_model(), job.load_model(units="standardized")
    assert not model.training and not encoder.training and model.receptive_field == encoder.receptive_field
    times = range(60, 70)
    expected = dstrf(module.data_units(), stimulus, times=times)
    torch.testing.assert_close(dstrf(model, stimulus, times=times), expected)
    standardized = (stimulus - module.stimulus_mean[:, None]) / module.stimulus_std[:, None]
    scale = module.response_std[None, :, None, None] / module.stimulus_std[None, None, :, None]  # (1, N, F, 1)
    torch.testing.assert_close(dstrf(encoder, standardized, times=times) * scale, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        model(stimulus[None])[0].detach().numpy(), job.predict(stimulus.numpy()), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="units must be one of 'data', 'standardized'"):
        job.load_model(units="raw")


def test_listing_a_sweep_does_not_import_torch():
    """dstrf-inspect and dstrf.inspect.load stay light: torch comes only with a model or the data."""
    code = "import sys, dstrf, dstrf.inspect; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
