"""All four measures as one table (CSV) and the figure that compares channels."""

import csv

import numpy as np
import pytest

from dstrf.analysis import (
    NonlinearityTable,
    complexity,
    gain_change,
    nonlinearities,
    plot_nonlinearities,
    shape_change,
    temporal_hold,
)

from .conftest import held, linear, pure_gain, switch

F, L = 12, 30


@pytest.fixture(scope="module")
def W():
    rng = np.random.default_rng(0)
    return np.stack(
        [linear(200, F, L, rng), pure_gain(200, F, L, rng), held(200, F, L, 5, rng)[0], switch(200, F, L, rng)], axis=1
    )


def test_the_table_holds_the_four_measures_of_every_channel(W):
    table = nonlinearities(W, names=["lin", "gain", "hold", "switch"], tau_max=10, gain_variant="naplab", details=True)
    assert len(table) == 4 and table.columns[:3] == ["channel", "name", "frames"]
    np.testing.assert_allclose(table.column("complexity"), complexity(W))
    np.testing.assert_allclose(table.column("gain_change"), gain_change(W, "naplab"))
    np.testing.assert_allclose(table.column("temporal_hold"), temporal_hold(W, tau_max=10))
    np.testing.assert_allclose(table.column("shape_change"), shape_change(W))
    assert table.settings == {
        "gain_variant": "norm_std",
        "tau_max": 10,
        "alpha": 0.05,
        "max_shift": L // 2,
        "max_iter": 20,
    }
    assert table.column("name").tolist() == ["lin", "gain", "hold", "switch"]
    assert set(table.details) == {"complexity", "gain_change", "temporal_hold", "shape_change"}
    assert table.details["shape_change"][2].shifts.shape == (200,)
    assert "switch" in str(table)
    with pytest.raises(KeyError, match="no column 'r_deep'"):
        table.column("r_deep")


def test_the_table_is_written_as_csv(W, tmp_path):
    table = nonlinearities(W, channels=[3, 1], r_linear=[0.5, 0.6], r_deep=[0.7, 0.62])
    path = table.to_csv(tmp_path / "out" / "nonlinearities.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["channel"] for r in rows] == ["3", "1"]
    assert float(rows[0]["complexity"]) == table.rows[0]["complexity"]  # full precision
    assert float(rows[0]["prediction_gain"]) == pytest.approx(0.2)
    assert list(rows[0]) == [
        "channel",
        "name",
        "frames",
        "complexity",
        "gain_change",
        "temporal_hold",
        "shape_change",
        "r_linear",
        "r_deep",
        "prediction_gain",
    ]


def test_the_figure_compares_channels_and_the_prediction_gain(W, tmp_path):
    table = nonlinearities(W, tau_max=10)
    fig = plot_nonlinearities(
        table, r_linear=[0.8, 0.6, 0.5, 0.4], r_deep=[0.8, 0.7, 0.7, 0.7], path=tmp_path / "n.png"
    )
    assert len(fig.axes) == 3 and "Pearson r" in fig.axes[2].get_title()
    assert (tmp_path / "n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table.plot(tmp_path / "two.png").axes) == 2  # without prediction accuracies: two panels
    with_r = nonlinearities(W, tau_max=10, r_linear=[0.8, 0.6, 0.5, 0.4], r_deep=[0.8, 0.7, 0.7, 0.7])
    assert len(with_r.plot().axes) == 3


def test_inconsistent_lengths_are_refused(W):
    with pytest.raises(ValueError, match=r"r_linear must hold one value per chosen channel \(2\); got 4"):
        nonlinearities(W, channels=[0, 1], r_linear=[1, 2, 3, 4], r_deep=[1, 2])
    with pytest.raises(ValueError, match=r"names must hold one name per chosen channel \(4\); got 1"):
        nonlinearities(W, names=["a"])
    with pytest.raises(ValueError, match="unknown gain-change variant"):
        nonlinearities(W, gain_variant="max")
    with pytest.raises(ValueError, match="pass both r_linear and r_deep"):
        plot_nonlinearities(nonlinearities(W[:, :1], tau_max=3), r_linear=[0.1])
    with pytest.raises(ValueError, match="no rows"):
        plot_nonlinearities(NonlinearityTable([]))


def test_stack_tables_and_the_per_channel_means_over_trials():
    from dstrf.analysis import by_channel, stack_tables
    from dstrf.analysis.table import NonlinearityTable

    settings = {"gain_variant": "norm_cv"}
    row = lambda c, name, value: {
        "channel": c,
        "name": name,
        "frames": 10,
        "complexity": value,
        "gain_change": 0.1,
        "temporal_hold": value - 1,
        "shape_change": float("nan") if value > 3 else value,
    }
    tables = {
        7: NonlinearityTable([row(0, "a", 1.0), row(2, "b", 2.0)], settings),
        3: NonlinearityTable([row(0, "a", 3.0), row(2, "b", 4.0)], settings),
    }
    stacked = stack_tables(tables)
    assert [(r["trial"], r["channel"]) for r in stacked.rows] == [(3, 0), (3, 2), (7, 0), (7, 2)]
    assert stacked.columns[:3] == ["trial", "channel", "name"]
    summary = by_channel(stacked)
    assert [r["channel"] for r in summary.rows] == [0, 2] and summary.column("trials").tolist() == [2, 2]
    assert summary.column("complexity").tolist() == [2.0, 3.0]
    assert summary.column("temporal_hold").tolist() == [1.0, 2.0]
    assert summary.column("shape_change").tolist() == [2.0, 2.0]  # the NaN of trial 7, channel 2 is left out
    with pytest.raises(ValueError, match="different settings"):
        stack_tables({0: tables[7], 1: NonlinearityTable(tables[3].rows, {"gain_variant": "matlab"})})
    with pytest.raises(ValueError, match="no tables to stack"):
        stack_tables({})
