import json
import zipfile

import pytest
from omegaconf import OmegaConf

from dstrf.runs.job import (
    JobLockedError,
    checkpoint_problem,
    config_hash,
    lock_job,
    mark_done,
    mark_fitted,
    mark_started,
    prepare_job,
)


def cfg(epochs=3, output_dir="/somewhere", data_path=None):
    node = {
        "model": {"_target_": "m", "hidden": 8},
        "trainer": {"max_epochs": epochs},
        "paths": {"output_dir": output_dir},
        "callbacks": {"dir": "${paths.output_dir}/ckpt"},
    }
    if data_path is not None:
        node["data"] = {"trials": {"_target_": "dstrf.data.load_trials", "path": str(data_path)}}
    return OmegaConf.create(node)


def checkpoint(path, content=b"weights"):
    """A stand-in checkpoint: torch checkpoints are zip archives, which is what readability is judged on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", content)
    return path


def test_hash_ignores_paths_but_not_settings():
    assert config_hash(cfg(output_dir="/a")) == config_hash(cfg(output_dir="/b"))  # a sweep copied elsewhere
    assert config_hash(cfg(epochs=3)) != config_hash(cfg(epochs=4))


def test_hash_covers_the_data_content_not_where_it_lies(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "other" / "b.h5"
    b.parent.mkdir()
    a.write_bytes(b"trials v1")
    b.write_bytes(b"trials v1")
    assert config_hash(cfg(data_path=a)) == config_hash(cfg(data_path=b))
    before = config_hash(cfg(data_path=a))
    a.write_bytes(b"trials v2")  # overwritten at the same path
    assert config_hash(cfg(data_path=a)) != before
    with pytest.raises(FileNotFoundError, match="data.trials.path: the data file .*missing.h5 does not exist"):
        config_hash(cfg(data_path=tmp_path / "missing.h5"))


def test_life_cycle_start_resume_finish_skip_and_archive(tmp_path):
    job = tmp_path / "fold0_jk0"
    state = prepare_job(job, cfg())
    assert state.action == "start" and state.superseded is None
    mark_started(job, cfg(), state)
    last = checkpoint(job / "checkpoints" / "last.ckpt")
    # interrupted: same config -> resume from the last checkpoint (also when only read, as other ranks do)
    assert prepare_job(job, cfg()).action == "resume"
    assert prepare_job(job, cfg(), read_only=True).resume_from == last
    best = checkpoint(job / "checkpoints" / "best-epoch001.ckpt")
    mark_fitted(job, state, best, last, epochs=2)
    assert prepare_job(job, cfg()).action == "finish"  # training ended: only the results are redone
    (job / "metrics.json").write_text("{}")
    mark_done(job, state, {"test_r_mean": 0.5}, outputs=["metrics.json", best, last])
    done = json.loads((job / "done.json").read_text())
    assert done["test_r_mean"] == 0.5 and set(done["outputs"]) == {
        "metrics.json",
        "checkpoints/best-epoch001.ckpt",
        "checkpoints/last.ckpt",
    }
    assert prepare_job(job, cfg()).action == "skip"
    # a changed config: everything the job wrote moves, whole, to superseded/<time>/
    notes = job / "notes.txt"
    notes.write_text("mine")
    assert prepare_job(job, cfg(epochs=9), read_only=True).superseded is None  # reading moves nothing
    assert (job / "done.json").exists()
    state = prepare_job(job, cfg(epochs=9))
    assert state.action == "start" and state.superseded.parent == job / "superseded"
    assert sorted(p.name for p in state.superseded.iterdir()) == [
        "checkpoints",
        "done.json",
        "fit.json",
        "job.json",
        "metrics.json",
    ]
    assert checkpoint_problem(state.superseded / "checkpoints" / "last.ckpt") is None
    assert notes.read_text() == "mine" and not (job / "done.json").exists()


def _finished_job(tmp_path):
    job = tmp_path / "job"
    state = prepare_job(job, cfg())
    mark_started(job, cfg(), state)
    last, best = checkpoint(job / "checkpoints" / "last.ckpt"), checkpoint(job / "checkpoints" / "best-epoch001.ckpt")
    mark_fitted(job, state, best, last, epochs=2)
    (job / "metrics.json").write_text('{"val": 1}')
    (job / "test_predictions.npz").write_bytes(last.read_bytes())
    mark_done(job, state, {}, outputs=["metrics.json", "test_predictions.npz", best, last])
    assert prepare_job(job, cfg()).action == "skip"
    return job, last, best


@pytest.mark.parametrize("damage", ["delete", "truncate", "replace"])
def test_a_done_job_with_damaged_results_is_finished_again(tmp_path, damage):
    job, last, best = _finished_job(tmp_path)
    target = job / "test_predictions.npz"
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:20])
    else:
        (job / "metrics.json").write_text('{"val": 2, "other": 3}')  # changed after the job finished
    state = prepare_job(job, cfg())
    assert state.action == "finish" and state.resume_from == last
    assert "results of the finished job are incomplete" in state.notes[0]


def test_an_unreadable_last_checkpoint_is_set_aside_and_the_best_resumes(tmp_path):
    job, last, best = _finished_job(tmp_path)
    (job / "fit.json").unlink()  # as if killed before training ended
    (job / "done.json").unlink()
    last.write_bytes(last.read_bytes()[:30])
    assert "truncated" in checkpoint_problem(last)
    assert prepare_job(job, cfg(), read_only=True).resume_from == best  # reading renames nothing
    assert last.exists()
    state = prepare_job(job, cfg())
    assert state.action == "resume" and state.resume_from == best
    assert not last.exists() and len(list((job / "checkpoints").glob("last.ckpt.unreadable-*"))) == 1
    assert "last.ckpt is truncated" in state.notes[0] and "set aside" in state.notes[0]


def test_an_unreadable_best_checkpoint_starts_the_job_over(tmp_path):
    job, last, best = _finished_job(tmp_path)
    best.write_bytes(b"")
    state = prepare_job(job, cfg())
    assert state.action == "start" and state.superseded is not None
    assert "the best checkpoint is unreadable: the job starts over" in state.notes


def test_unmarked_results_are_never_touched(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="no dstrf job marker"):
        prepare_job(tmp_path, cfg())
    assert (tmp_path / "metrics.json").exists()


def test_a_second_process_cannot_take_a_held_job_directory(tmp_path):
    import multiprocessing
    import os

    held = lock_job(tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        message = pool.apply(_try_lock, (str(tmp_path),))
    assert (
        message == f"another dstrf job is running in {tmp_path} (pid {os.getpid()}); wait for it to end, or give "
        "this run another directory (hydra.run.dir=...)"
    )
    held.close()
    with context.Pool(1) as pool:
        assert pool.apply(_try_lock, (str(tmp_path),)) == "locked"


def _try_lock(path):
    from pathlib import Path

    try:
        lock_job(Path(path)).close()
    except JobLockedError as err:
        return str(err)
    return "locked"


def test_the_files_a_manifest_lists_are_data_too(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"audio v1")
    (tmp_path / "a.npy").write_bytes(b"response")
    (tmp_path / "manifest.csv").write_text("audio,response\na.wav,a.npy\n")
    node = cfg()
    node.data = {"trials": {"_target_": "dstrf.data.manifest.load_manifest", "path": str(tmp_path / "manifest.csv")}}
    from dstrf.runs.job import data_files

    assert sorted(data_files(node)) == ["data.trials.path", "data.trials.path[a.npy]", "data.trials.path[a.wav]"]
    before = config_hash(node)
    (tmp_path / "a.wav").write_bytes(b"audio v2")  # the manifest is unchanged, one of its files is not
    assert config_hash(node) != before
