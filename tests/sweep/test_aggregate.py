"""dstrf-aggregate on a real (small) sweep: the numbers equal an independent recomputation from the saved
test predictions; summary files; missing / incomplete jobs; exit statuses; the Hydra callback."""

import csv
import json
import logging
import os
import shutil
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from omegaconf import OmegaConf

from dstrf.sweep.aggregate import AggregateCallback, aggregate, find_jobs, jackknife_se, main, pearson_r

from .conftest import JOBS, job_dir_name

CHANNELS = ["linear", "ln", "gain_change", "temporal_hold", "shape_change"]


def _reject_nan(value):
    raise ValueError(f"summary.json holds {value}, which is not JSON")


def recompute(sweep, group):
    """Per test trial of ``group``: (r_pred, r_score, se, M), written independently of the module under test."""
    tested = defaultdict(list)  # trial -> [(prediction, response, warmup)]
    for g, fold, jk, state in JOBS:
        if g != group or state != "done":
            continue
        with np.load(sweep / job_dir_name(g, fold, jk) / "test_predictions.npz") as npz:
            for key in npz.files:
                if key.startswith("trial_"):
                    i = int(key[6:])
                    tested[i].append((npz[key].astype(float), npz[f"response_{i}"].astype(float), int(npz["warmup"])))
    out = {}
    for trial, items in tested.items():
        w = max(item[2] for item in items)
        mean = np.mean([p for p, _, _ in items], axis=0)
        response = items[0][1]
        r_pred = np.array([np.corrcoef(mean[n, w:], response[n, w:])[0, 1] for n in range(len(CHANNELS))])
        per_model = np.array([[np.corrcoef(p[n, wj:], y[n, wj:])[0, 1] for n in range(len(CHANNELS))]
                              for p, y, wj in items])
        m = len(items)
        se = np.sqrt((m - 1) / m * ((per_model - per_model.mean(0)) ** 2).sum(0)) if m > 1 else np.full(len(CHANNELS), np.nan)
        out[trial] = (r_pred, per_model.mean(0), se, m)
    return out


def test_numbers_equal_a_recomputation_from_the_saved_predictions(sweep_dir):
    summary = aggregate(sweep_dir, write=False)
    assert [g.name for g in summary.groups] == ["", "model.hidden=8"]
    for group in summary.groups:
        expected = recompute(sweep_dir, group.name)
        assert group.trials == sorted(expected) and group.channels == CHANNELS
        for t, trial in enumerate(group.trials):
            r_pred, r_score, se, m = expected[trial]
            assert group.n_models[t] == m
            np.testing.assert_allclose(group.r_pred[t], r_pred, rtol=0, atol=1e-12)
            np.testing.assert_allclose(group.r_score[t], r_score, rtol=0, atol=1e-12)
            np.testing.assert_allclose(group.r_score_se[t], se, rtol=0, atol=1e-12)  # NaN where M == 1
    # fold 0's three jackknife replicates all test the same trial: a real average, with a real SE
    main_group = summary.groups[0]
    assert sorted(main_group.n_models.tolist()) == [1, 3]
    three = int(np.flatnonzero(main_group.n_models == 3)[0])
    assert np.all(main_group.r_score_se[three] > 0)
    assert not np.allclose(main_group.r_pred[three], main_group.r_score[three])  # mean prediction != mean score
    assert np.all(np.isnan(main_group.r_score_se[1 - three]))


def test_per_model_scores_agree_with_each_jobs_metrics_json(sweep_dir):
    summary = aggregate(sweep_dir, write=False)
    done = [job_dir_name(g, f, j) for g, f, j, state in JOBS if state == "done"]
    assert [m["dir"] for m in summary.models] == done
    for model in summary.models:
        metrics = json.loads((sweep_dir / model["dir"] / "metrics.json").read_text())
        assert model["epochs"] == metrics["epochs"] == 2
        assert model["fold"] == metrics["job"]["fold"] and model["jackknife"] == metrics["job"]["jackknife"]
        assert model["test_trials"] == metrics["split"]["test"]
        np.testing.assert_allclose(model["test_r"], metrics["test"]["r"], atol=1e-5)
        assert model["test_r_mean"] == pytest.approx(metrics["test"]["r_mean"], abs=1e-5)
        for trial, r in metrics["test"]["per_trial"].items():
            np.testing.assert_allclose(model["per_trial"][trial], r, atol=1e-5)


def test_summary_files_are_written_and_replace_older_ones(sweep_dir, tmp_path):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    (sweep / "summary.csv").write_text("stale\n")
    summary = aggregate(sweep)
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["group", "trial", "channel", "n_models", "r_pred", "r_score", "r_score_se"]
    expected_keys = [(g.name, str(t), c) for g in summary.groups for t in g.trials for c in CHANNELS]
    assert [(r["group"], r["trial"], r["channel"]) for r in rows] == expected_keys
    assert len(rows) == 3 * len(CHANNELS)  # group "": 2 test trials; group model.hidden=8: 1
    for row, ref in zip(rows, summary.rows()):
        assert int(row["n_models"]) == ref["n_models"]
        for key in ("r_pred", "r_score", "r_score_se"):
            np.testing.assert_equal(float(row[key]), ref[key])  # full precision, NaN as nan

    data = json.loads((sweep / "summary.json").read_text(), parse_constant=_reject_nan)
    assert data["complete"] is False and data["n_jobs"] == 7 and data["n_done"] == 5
    assert [g["group"] for g in data["groups"]] == ["", "model.hidden=8"]
    for g, ref in zip(data["groups"], summary.groups):
        assert g["r_pred_mean"] == pytest.approx(float(ref.r_pred.mean()))
        assert g["r_score_mean"] == pytest.approx(float(ref.r_score.mean()))
        assert g["per_channel"]["channel"] == CHANNELS and (g["n_jobs"], g["n_done"]) == ((6, 4) if g["group"] == "" else (1, 1))
    assert len(data["trials"]) == len(rows) and len(data["models"]) == 5
    assert [(j["dir"], j["fold"], j["jackknife"]) for j in data["missing"]] == [("fold1_jk2", 1, 2)]
    assert [(j["dir"], j["fold"], j["jackknife"]) for j in data["incomplete"]] == [("fold1_jk1", 1, 1)]
    assert data["unreadable"] == []


def test_cli_reports_unfinished_jobs_loudly_and_exits_2_then_0_when_complete(sweep_dir, tmp_path):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(["dstrf-aggregate", str(sweep)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "MISSING" in result.stderr and "fold1_jk2" in result.stderr
    assert "INCOMPLETE" in result.stderr and "fold1_jk1" in result.stderr
    assert "r_pred" in result.stdout and "gain_change" in result.stdout and "model.hidden=8/fold0_jk0" in result.stdout
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.json").is_file()

    # drop the two unfinished jobs from the manifest: every expected job is done
    manifest = json.loads((sweep / "sweep.json").read_text())
    manifest["jobs"] = [j for j in manifest["jobs"] if j["dir"] not in ("fold1_jk1", "fold1_jk2")]
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    (sweep / "summary.csv").unlink()
    assert main([str(sweep), "--quiet"]) == 0
    assert (sweep / "summary.csv").is_file()


def test_errors_exit_1_with_a_clear_message(sweep_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert main([str(tmp_path / "empty")]) == 1
    assert "holds no dstrf jobs" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path / "file.txt")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main([str(sweep_dir / "fold0_jk0")]) == 1
    assert "is a single run, not a sweep" in capsys.readouterr().err


def test_without_sweep_json_jobs_are_found_and_grouped_by_their_overrides(sweep_dir, tmp_path):
    """A sweep made by another sweeper: no sweep.json; jobs are the subdirectories with job markers, grouped by
    .hydra/overrides.yaml without the fold/jackknife entries and the overrides every job shares."""
    sweep = shutil.copytree(sweep_dir, tmp_path / "plain")
    (sweep / "sweep.json").unlink()
    jobs = find_jobs(sweep)
    assert [j.name for j in jobs] == [job_dir_name(g, f, k) for g, f, k, s in JOBS if s != "missing"]
    assert [(j.group, j.fold, j.jackknife, j.status) for j in jobs] == [
        (g, f, k, "incomplete" if s == "incomplete" else "done") for g, f, k, s in JOBS if s != "missing"]
    summary = aggregate(sweep, write=False)
    reference = aggregate(sweep_dir, write=False)
    assert [g.name for g in summary.groups] == [g.name for g in reference.groups]
    for group, ref in zip(summary.groups, reference.groups):
        np.testing.assert_array_equal(group.r_pred, ref.r_pred)
        np.testing.assert_array_equal(group.r_score_se, ref.r_score_se)
    assert [j.name for j in summary.incomplete] == ["fold1_jk1"] and summary.missing == []
    assert summary.exit_code == 2


def test_a_done_job_without_predictions_is_reported_not_silently_dropped(sweep_dir, tmp_path):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    (sweep / "fold1_jk0" / "test_predictions.npz").unlink()
    summary = aggregate(sweep, write=False)
    assert [(j.name, why) for j, why in summary.unreadable] == [("fold1_jk0", "done.json but no test_predictions.npz")]
    assert summary.groups[0].trials == [summary.groups[1].trials[0]]  # only fold 0's trial is left in group ""
    assert summary.exit_code == 2 and "UNREADABLE" in summary.format_problems()


def test_hydra_callback_aggregates_and_never_raises(sweep_dir, tmp_path, caplog):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    callback = AggregateCallback()
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "summary.json").is_file()
    with caplog.at_level(logging.ERROR):
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nowhere")}}}))
        callback.on_multirun_end(OmegaConf.create({}))  # not even a sweep dir in the config
    assert "aggregating the sweep failed" in caplog.text


def test_pearson_r_and_jackknife_se():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    np.testing.assert_allclose(pearson_r(x, y), [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y)], atol=1e-14)
    np.testing.assert_array_equal(pearson_r(np.ones((1, 10)), y[:1, :10]), [0.0])  # no variance: 0, as dstrf.metrics
    values = np.array([[0.1, 0.5], [0.3, 0.5], [0.2, 0.5]])
    np.testing.assert_allclose(jackknife_se(values), [np.sqrt(2 / 3 * 0.02), 0.0])
    assert np.isnan(jackknife_se(values[:1])).all()
