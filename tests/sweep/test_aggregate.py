"""dstrf-aggregate on a real (small) sweep: the numbers equal an independent recomputation from the saved
test predictions; summary files; missing / incomplete jobs; exit statuses; the Hydra callback."""

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from omegaconf import OmegaConf

from dstrf.metrics import UndefinedCorrelationWarning
from dstrf.runs.discovery import find_jobs
from dstrf.sweep.aggregate import AggregateCallback, main
from dstrf.sweep.scoring import jackknife_se, pearson_r
from dstrf.sweep.summary import GroupSummary, aggregate

from .conftest import JOBS, copy_sweep, job_dir_name

# end-to-end: real dstrf-train runs and sweeps (the fast tier, -m "not slow", skips them)
pytestmark = pytest.mark.slow

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
        per_model = np.array(
            [[np.corrcoef(p[n, wj:], y[n, wj:])[0, 1] for n in range(len(CHANNELS))] for p, y, wj in items]
        )
        m = len(items)
        se = (
            np.sqrt((m - 1) / m * ((per_model - per_model.mean(0)) ** 2).sum(0))
            if m > 1
            else np.full(len(CHANNELS), np.nan)
        )
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
        assert g["per_channel"]["channel"] == CHANNELS and (g["n_jobs"], g["n_done"]) == (
            (6, 4) if g["group"] == "" else (1, 1)
        )
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
        (g, f, k, "incomplete" if s == "incomplete" else "done") for g, f, k, s in JOBS if s != "missing"
    ]
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
    with pytest.warns(
        UndefinedCorrelationWarning,
        match="^channel 0 of the prediction is constant over the 10 scored frames; its r is NaN$",
    ):
        assert np.isnan(pearson_r(np.ones((1, 10)), y[:1, :10])).all()  # no variance: NaN, as dstrf.metrics
    values = np.array([[0.1, 0.5], [0.3, 0.5], [0.2, 0.5]])
    np.testing.assert_allclose(jackknife_se(values), [np.sqrt(2 / 3 * 0.02), 0.0])
    assert np.isnan(jackknife_se(values[:1])).all()


# ------------------------------------------------------------------------- NaN scores and counts (issue 10)


def _rewrite_predictions(job_dir, change):
    """Replace each ``trial_<id>`` prediction of a job's test_predictions.npz by ``change(id, prediction)``."""
    path = job_dir / "test_predictions.npz"
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for key in [k for k in arrays if k.startswith("trial_")]:
        arrays[key] = change(int(key[6:]), arrays[key])
    np.savez(path, **arrays)


def _jackknife_trial(summary):
    """The trial of group "" that fold 0's three jackknife replicates all test, and its row."""
    group = summary.groups[0]
    row = int(np.flatnonzero(group.n_models == 3)[0])
    return group.trials[row], row


def test_a_job_with_non_finite_predictions_is_nan_in_every_table_and_reported_loudly(sweep_dir, tmp_path):
    """A diverged job with a done.json (an old sweep, from before the divergence guard): its r is NaN, not 0,
    and every mean over it is NaN, not a finite number computed from the other jobs."""
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    _rewrite_predictions(sweep / "fold0_jk1", lambda i, p: np.full_like(p, np.nan))
    summary = aggregate(sweep)
    trial, row = _jackknife_trial(summary)
    group, other = summary.groups
    assert np.isnan(group.r_pred[row]).all() and np.isnan(group.r_score[row]).all()
    assert np.isnan(group.r_score_se[row]).all()
    assert np.isfinite(np.delete(group.r_pred, row, axis=0)).all()  # fold 1's trial is untouched
    assert math.isnan(group.r_pred_mean) and math.isnan(group.r_score_mean)
    assert all(math.isnan(v) for v in group.per_channel()["r_pred"] + group.per_channel()["r_score"])
    assert np.isfinite(other.r_pred).all() and math.isfinite(other.r_pred_mean)  # the other group is not affected
    with np.load(sweep / "fold0_jk1" / "test_predictions.npz") as npz:
        frames = npz[f"response_{trial}"].shape[1] - int(npz["warmup"])  # the scored frames: past the warm-up
    reason = (
        f"trial {trial}: channels 0, 1, 2, 3, 4 of the prediction are not finite (NaN or inf) over the "
        f"{frames} scored frames; their r is NaN"
    )
    assert [(job.name, n, total, why) for job, n, total, why in summary.nan_scores] == [("fold0_jk1", 5, 5, [reason])]
    assert summary.n_nan == group.n_nan == 5 and other.n_nan == 0
    assert summary.exit_code == 2
    problems = summary.format_problems()
    assert f"!!!   NAN         fold0_jk1  (5 of its 5 test scores are NaN; {reason})" in problems
    assert "5 test scores of 1 job of" in problems and "every mean that includes them is NaN" in problems
    table = summary.format_table()
    assert "group (no swept settings): 4 of 6 jobs done, 2 test trials, 5 NaN scores from 1 job (fold0_jk1)" in table
    assert re.search(r"\n  mean\s+nan\s+nan\n", table)  # printed as nan, not as "-" (which means "does not apply")

    data = json.loads((sweep / "summary.json").read_text(), parse_constant=_reject_nan)
    assert data["n_nan"] == 5 and data["groups"][0]["n_nan"] == 5 and data["groups"][1]["n_nan"] == 0
    assert data["groups"][0]["nan_jobs"] == ["fold0_jk1"] and data["groups"][0]["r_pred_mean"] is None
    assert [(e["dir"], e["n_nan"], e["reasons"]) for e in data["nan"]] == [("fold0_jk1", 5, [reason])]
    model = next(m for m in data["models"] if m["dir"] == "fold0_jk1")
    assert model["n_nan"] == 5 and model["test_r"] == [None] * 5 and model["test_r_mean"] is None
    with (sweep / "summary.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["group"] == "" and r["trial"] == str(trial)]
    assert len(rows) == 5 and all(r["r_pred"] == r["r_score"] == r["r_score_se"] == "nan" for r in rows)
    assert math.isnan(float(rows[0]["r_pred"]))
    assert main([str(sweep), "--quiet"]) == 2


def test_a_mean_prediction_without_variance_is_reported_though_no_job_is_nan(sweep_dir, tmp_path):
    """Three replicates predicting p, -2p and p: each has a finite r, their average is exactly 0."""
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    trial, row = _jackknife_trial(aggregate(sweep, write=False))
    with np.load(sweep / "fold0_jk0" / "test_predictions.npz") as npz:
        p = npz[f"trial_{trial}"]
    _rewrite_predictions(sweep / "fold0_jk1", lambda i, _: -2 * p)
    _rewrite_predictions(sweep / "fold0_jk2", lambda i, _: p)
    summary = aggregate(sweep, write=False)
    group = summary.groups[0]
    assert np.isfinite(group.r_score[row]).all() and np.isnan(group.r_pred[row]).all()
    assert summary.n_nan == 0 and summary.nan_scores == []
    assert len(group.nan_reasons) == 1 and group.nan_reasons[0].startswith(
        f"trial {trial}, mean prediction: channels 0, 1, 2, 3, 4 of the prediction are constant over the "
    )
    assert (
        summary.exit_code == 2
        and f"!!!   NAN         (group (no swept settings): {group.nan_reasons[0]})" in summary.format_problems()
    )


def test_the_per_channel_se_skips_single_model_trials_but_never_a_nan():
    group = GroupSummary(
        "g",
        [],
        channels=["a", "b"],
        trials=[0, 1, 2],
        n_models=np.array([3, 3, 1]),
        r_pred=np.zeros((3, 2)),
        r_score=np.zeros((3, 2)),
        r_score_se=np.array([[0.1, 0.1], [0.3, np.nan], [np.nan, np.nan]]),
    )
    se = group.per_channel()["r_score_se"]
    assert se[0] == pytest.approx(0.2)  # trial 2 has one model: no SE, not a missing one
    assert math.isnan(se[1])  # trial 1's SE of channel b is NaN (a NaN score): the mean is NaN, not 0.1


def test_every_count_uses_one_definition_of_done(sweep_dir, tmp_path):
    """A job is done only with done.json AND readable outputs: the sweep's n_done, the groups' and the table's agree."""
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    (sweep / "fold1_jk0" / "test_predictions.npz").unlink()
    summary = aggregate(sweep)
    assert (len(summary.missing), len(summary.incomplete), len(summary.unreadable)) == (1, 1, 1)
    data = json.loads((sweep / "summary.json").read_text())
    assert [(g["group"], g["n_done"]) for g in data["groups"]] == [("", 3), ("model.hidden=8", 1)]  # fold1_jk0 is not
    assert data["n_done"] == sum(g["n_done"] for g in data["groups"]) == len(summary.jobs) - 1 - 1 - 1 == 4
    assert summary.n_done == sum(g.n_done for g in summary.groups) == 4
    assert [job.name for job in summary.done] == ["fold0_jk0", "fold0_jk1", "fold0_jk2", "model.hidden=8/fold0_jk0"]
    table = summary.format_table()
    assert f"{sweep}: 4 of 7 jobs done" in table and "group (no swept settings): 3 of 6 jobs done" in table
    assert "the summary covers the 4 done jobs only" in summary.format_problems()


def test_the_summary_figures_are_drawn_beside_the_summary(sweep_dir, tmp_path, capsys):
    """Two groups ("" and model.hidden=8): the per-channel figure and the group-vs-group scatter; no wandb run
    since the jobs logged to CSV only."""
    from dstrf.sweep.dashboard import log_summary_run, per_channel

    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    main([str(sweep), "--quiet"])
    assert "summary_channels.png, summary_models.png" in capsys.readouterr().err
    for name in ("summary_channels.png", "summary_models.png"):
        assert (sweep / name).stat().st_size > 10_000
    summary = aggregate(sweep, write=False)
    table = per_channel(summary)
    written = json.loads((sweep / "summary.json").read_text())
    for group in written["groups"]:
        rows = table[table["group"] == (group["group"] or "all jobs")]
        assert rows["r_score"].tolist() == pytest.approx(group["per_channel"]["r_score"])
    assert log_summary_run(summary, []) is None and not list(sweep.glob("wandb"))
