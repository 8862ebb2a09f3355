"""dstrf-estimate when some of a sweep's files are broken: the trials (folds) that need a broken job fail, with
the job, the file and why; the others are written; index.json lists both; exit status 2. And a copied sweep
keeps its finished files: they are fingerprinted by checkpoint content, not by file times."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import pytest
import torch

from dstrf.sweep import posthoc
from dstrf.sweep.posthoc import main

from .conftest import copy_sweep

# end-to-end: real dstrf-train runs and sweeps (the fast tier, -m "not slow", skips them)
pytestmark = pytest.mark.slow

FAST = ["--times", "60:70", "--channels", "0"]  # a few frames of one channel: the tests are about the files
CKPT = "checkpoints/best-epoch001.ckpt"


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:100])
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def index_of(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def done_and_failed(index: dict, key: str = "trials") -> tuple[list, list]:
    return (
        sorted((e["group"], e.get("trial", e["file"])) for e in index[key]),
        sorted((e["group"], e.get("trial", e["file"]), e["job"], e["failed_file"]) for e in index["failed"]),
    )


def test_a_truncated_checkpoint_fails_only_the_trial_that_needs_it(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    broken = truncate(sweep / "fold0_jk1" / CKPT)  # one of the three models of trial 2
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, sweep, *FAST, "--out", out)
    assert code == 2, stderr
    assert f"cannot read checkpoint {broken} (job fold0_jk1): RuntimeError: PytorchStreamReader" in stderr
    assert "rerun the sweep command to retrain it" in stderr and "1 of 3 could not be written" in stderr
    done, failed = done_and_failed(index_of(out))
    assert done == [("", 4), ("model.hidden=8", 2)]
    assert failed == [("", 2, "fold0_jk1", "fold0_jk1/" + CKPT)]  # relative to the sweep
    # the mean of the two other replicates is not trial 2's result: nothing is written for it
    assert not (out / "trial_2.h5").exists() and (out / "trial_4.h5").is_file()
    assert "2 trial dSTRFs" in stdout


def test_gradmap_and_analyze_go_on_past_a_broken_job_too(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    broken = truncate(sweep / "fold1_jk0" / CKPT)  # fold 1's only model: trial 4
    code, _, stderr = run(capsys, sweep, "--gradmap", "--x0", "2:100", "--out", tmp_path / "maps")
    assert code == 2 and f"fold_1 (fold_1.h5): cannot read checkpoint {broken} (job fold1_jk0)" in stderr
    done, failed = done_and_failed(index_of(tmp_path / "maps"), "folds")
    assert done == [("", "fold_0.h5"), ("model.hidden=8", "model.hidden=8/fold_0.h5")]
    assert failed == [("", "fold_1.h5", "fold1_jk0", "fold1_jk0/" + CKPT)]
    assert not (tmp_path / "maps" / "fold_1.h5").exists()

    code, stdout, stderr = run(capsys, sweep, *FAST, "--out", tmp_path / "dstrf", "--analyze")
    assert code == 2 and f"trial 4 (trial_4.h5): cannot read checkpoint {broken}" in stderr
    assert "nonlinearities of the sweep" in stdout and (tmp_path / "dstrf" / "nonlinearities.csv").is_file()


def test_a_diverged_fit_names_the_job_and_the_parameter(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    path = sweep / "fold0_jk2" / CKPT
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["encoder.convs.0.weight"][0, :3] = float("nan")
    torch.save(checkpoint, path)
    code, _, stderr = run(capsys, sweep, *FAST, "--out", tmp_path / "out")
    assert code == 2
    assert (
        f"trial 2 (trial_2.h5): {path} (job fold0_jk2): model parameter 'encoder.convs.0.weight' of "
        f"DataUnitsEncoder has {3 * checkpoint['state_dict']['encoder.convs.0.weight'].shape[-1]} non-finite "
        "values"
    ) in stderr
    assert done_and_failed(index_of(tmp_path / "out"))[1] == [("", 2, "fold0_jk2", "fold0_jk2/" + CKPT)]


def test_unreadable_metrics_of_a_done_job_fail_the_trials_it_tested(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    (sweep / "fold0_jk2" / "metrics.json").write_text('{"epochs": 2, "spl')  # cut off while copying
    code, _, stderr = run(capsys, sweep, *FAST, "--out", tmp_path / "out")
    assert code == 2
    assert f"cannot read file {sweep / 'fold0_jk2' / 'metrics.json'} (job fold0_jk2): JSONDecodeError" in stderr
    assert done_and_failed(index_of(tmp_path / "out"))[1] == [("", 2, "fold0_jk2", "fold0_jk2/metrics.json")]


def test_a_damaged_output_file_fails_its_trial_and_the_analysis_of_the_others_goes_on(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    out = tmp_path / "out"
    assert run(capsys, sweep, *FAST, "--out", out)[0] == 0
    damaged = truncate(out / "trial_4.h5")
    code, stdout, stderr = run(capsys, sweep, *FAST, "--out", out, "--analyze")
    assert code == 2 and f"trial 4 (trial_4.h5): cannot read {damaged}: " in stderr and "remove it" in stderr
    done, failed = done_and_failed(index_of(out))
    assert done == [("", 2), ("model.hidden=8", 2)] and failed == [("", 4, None, "trial_4.h5")]
    assert "nonlinearities of the sweep" in stdout
    with open(out / "nonlinearities.csv") as f:
        assert {line.split(",")[0] for line in f.readlines()[1:]} == {"2"}  # trial 2 only


def test_a_copied_sweep_keeps_its_finished_files(sweep_dir, tmp_path, capsys, monkeypatch):
    original = copy_sweep(sweep_dir, tmp_path / "original")
    gradmaps = ["--gradmap", "--x0", "2:100"]
    assert run(capsys, original, *gradmaps)[0] == 0 and run(capsys, original, *FAST)[0] == 0
    copy = shutil.copytree(original, tmp_path / "copy", copy_function=shutil.copy)  # new files, new times
    later = time.time() + 3600
    for path in copy.rglob("*"):
        os.utime(path, (later, later))
    shutil.rmtree(original)  # nothing may refer to where the sweep was

    def never(*args, **kwargs):
        raise AssertionError("a finished file was computed again")

    monkeypatch.setattr(posthoc, "jackknife_dstrf", never)
    monkeypatch.setattr(posthoc, "gradmap", never)
    files = sorted(p for p in copy.rglob("*.h5"))
    code, stdout, stderr = run(capsys, copy, *FAST)
    assert code == 0, stderr
    assert "3 trial dSTRFs" in stdout and "(0 computed, 3 kept;" in stdout
    code, stdout, stderr = run(capsys, copy, *gradmaps)
    assert code == 0, stderr
    assert "(0 computed, 3 kept;" in stdout
    assert all(p.stat().st_mtime == later for p in files) and len(files) == 6
    # what is stored refers to files relative to the output folder or the sweep, never to where it was
    for folder in ("dstrf", "gradmap"):
        assert str(tmp_path) not in (copy / folder / "index.json").read_text()
    for path in files:
        with h5py.File(path, "r") as f:
            assert not any(str(tmp_path) in str(value) for value in f.attrs.values())


def test_a_changed_checkpoint_is_still_a_different_result(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    assert run(capsys, sweep, *FAST)[0] == 0
    path = sweep / "fold1_jk0" / CKPT
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["encoder.readout.bias"] += 1.0  # same size, new content: another model
    torch.save(checkpoint, path)
    code, _, stderr = run(capsys, sweep, *FAST)
    assert code == 1 and f"{sweep / 'dstrf' / 'trial_4.h5'} holds dSTRFs from other models" in stderr


def test_checkpoints_are_hashed_by_content_once_per_run(sweep_dir, monkeypatch):
    from dstrf.inspect import load

    experiment = load(sweep_dir)
    job = experiment["fold0_jk0"]
    opened = []
    real_digest = posthoc.file_digest

    def counting_digest(path):
        opened.append(Path(path))
        return real_digest(path)

    monkeypatch.setattr(posthoc, "file_digest", counting_digest)
    jobs = posthoc._Jobs(experiment.dir, "cpu")
    first, second = jobs.digest(job), jobs.digest(job)
    assert first == second == hashlib.sha256(job.checkpoint.read_bytes()).hexdigest()
    assert opened == [job.checkpoint]


def test_a_damaged_chunk_found_by_the_analysis_fails_that_trial_only(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    out = tmp_path / "out"
    assert run(capsys, sweep, *FAST, "--out", out)[0] == 0
    path = out / "trial_4.h5"
    with h5py.File(path, "r") as f:  # the header still reads (the file is kept); one chunk of the mean does not
        offset = f["mean"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 10] ^= 0xFF
    path.write_bytes(data)
    code, stdout, stderr = run(capsys, sweep, *FAST, "--out", out, "--analyze")
    assert "(0 computed, 3 kept;" in stdout and "nonlinearities of the sweep" in stdout
    assert code == 2 and f"trial 4 (trial_4.h5): cannot read {path}: " in stderr and "filter returned failure" in stderr
    done, failed = done_and_failed(index_of(out))  # index.json written again: trial 4 is no result
    assert done == [("", 2), ("model.hidden=8", 2)] and failed == [("", 4, None, "trial_4.h5")]
    with open(out / "nonlinearities.csv") as f:
        assert {line.split(",")[0] for line in f.readlines()[1:]} == {"2"}
