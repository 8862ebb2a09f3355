import json

import pytest
from omegaconf import OmegaConf

from dstrf.sweep.job import config_hash, mark_done, mark_started, prepare_job


def cfg(epochs=3, output_dir="/somewhere"):
    return OmegaConf.create({"model": {"_target_": "m", "hidden": 8}, "trainer": {"max_epochs": epochs},
                             "paths": {"output_dir": output_dir}, "callbacks": {"dir": "${paths.output_dir}/ckpt"}})


def test_hash_ignores_paths_but_not_settings():
    assert config_hash(cfg(output_dir="/a")) == config_hash(cfg(output_dir="/b"))  # a sweep copied elsewhere
    assert config_hash(cfg(epochs=3)) != config_hash(cfg(epochs=4))


def test_life_cycle_start_resume_skip_and_archive(tmp_path):
    job = tmp_path / "fold0_jk0"
    state = prepare_job(job, cfg())
    assert state.action == "start" and state.superseded is None
    mark_started(job, cfg(), state)
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_text("weights")
    # interrupted: same config -> resume from the last checkpoint (also when only read, as other ranks do)
    assert prepare_job(job, cfg()).action == "resume"
    assert prepare_job(job, cfg(), read_only=True).resume_from == job / "checkpoints" / "last.ckpt"
    (job / "metrics.json").write_text("{}")
    mark_done(job, state, {"test_r_mean": 0.5})
    assert json.loads((job / "done.json").read_text())["test_r_mean"] == 0.5
    assert prepare_job(job, cfg()).action == "skip"
    # a changed config: everything the job wrote moves, whole, to superseded/<time>/
    notes = job / "notes.txt"
    notes.write_text("mine")
    assert prepare_job(job, cfg(epochs=9), read_only=True).superseded is None  # reading moves nothing
    assert (job / "done.json").exists()
    state = prepare_job(job, cfg(epochs=9))
    assert state.action == "start" and state.superseded.parent == job / "superseded"
    assert sorted(p.name for p in state.superseded.iterdir()) == ["checkpoints", "done.json", "job.json", "metrics.json"]
    assert (state.superseded / "checkpoints" / "last.ckpt").read_text() == "weights"
    assert notes.read_text() == "mine" and not (job / "done.json").exists()


def test_unmarked_results_are_never_touched(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="no dstrf job marker"):
        prepare_job(tmp_path, cfg())
    assert (tmp_path / "metrics.json").exists()
