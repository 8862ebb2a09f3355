import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import animation
from PIL import Image

from dstrf.estimate import dstrf
from dstrf.models import DeepEncoder
from dstrf.plots import (
    MAP_UNIT,
    animate_dstrf,
    default_times,
    plot_dstrf,
    plot_optimal_stimuli,
    plot_receptive_fields,
    round_frequency_ticks,
)


@pytest.fixture(scope="module")
def example():
    torch.manual_seed(0)
    model = DeepEncoder(6, 3, hidden=8)
    x = torch.randn(6, 120)
    return model, x, dstrf(model, x)


def _maps(figure):
    """The receptive-field panels: images drawn with the diverging colour map, in order."""
    return [image.get_array() for ax in figure.axes for image in ax.get_images() if image.get_cmap().name == "RdBu_r"]


def test_plot_dstrf_draws_the_chosen_channel_at_the_chosen_frames(example):
    model, x, w = example
    y = model(x[None])[0].detach()
    figure = plot_dstrf(
        w, x, channel=2, times=[70, 90, 110], response=y + 1, prediction=y, sfreq=50, freqs=np.geomspace(100, 8000, 6)
    )
    maps = _maps(figure)
    assert len(maps) == 3
    for shown, t in zip(maps, (70, 90, 110)):
        np.testing.assert_array_equal(np.asarray(shown), w[t, 2].numpy())
    # one shared symmetric colour scale centred on zero
    limits = {
        ax.get_images()[0].get_clim()
        for ax in figure.axes
        if ax.get_images() and ax.get_images()[0].get_cmap().name == "RdBu_r"
    }
    assert len(limits) == 1 and (lim := limits.pop())[0] == -lim[1] == pytest.approx(
        -float(w[[70, 90, 110], 2].abs().max())
    )
    response_axis = [ax for ax in figure.axes if ax.get_ylabel() == "response (data units)"][0]
    response_line, prediction_line = response_axis.lines[:2]  # then the markers of the chosen frames
    np.testing.assert_array_equal(prediction_line.get_ydata(), y[2].numpy())  # the whole trial fits the view here
    np.testing.assert_array_equal(response_line.get_ydata(), (y[2] + 1).numpy())
    np.testing.assert_allclose(prediction_line.get_xdata(), np.arange(120) / 50)


def test_plot_dstrf_reads_only_the_frames_it_shows_from_a_file(example, tmp_path):
    model, x, w = example
    stored = dstrf(model, x, channels=[1, 2], times=range(80, 120), out=tmp_path / "t.h5")
    with stored:
        assert default_times(stored) == [80, 93, 106, 119]
        figure = plot_dstrf(stored, x, channel=2, times=[100, 85])
        maps = _maps(figure)
        np.testing.assert_array_equal(np.asarray(maps[0]), w[100, 2].numpy())
        np.testing.assert_array_equal(np.asarray(maps[1]), w[85, 2].numpy())
        with pytest.raises(KeyError, match=r"channels \[0\] are not in this file"):
            plot_dstrf(stored, x, channel=0)


def test_plot_dstrf_bad_input(example):
    model, x, w = example
    with pytest.raises(ValueError, match="channel 3 out of range"):
        plot_dstrf(w, x, channel=3)
    with pytest.raises(ValueError, match=r"times \[120\] out of range"):
        plot_dstrf(w, x, times=[119, 120])
    with pytest.raises(ValueError, match="6 bands but the stimulus has 5"):
        plot_dstrf(w, x[:5])


@pytest.mark.slow
def test_animation_has_one_frame_per_time_point_and_the_map_changes(example, tmp_path):
    model, x, w = example
    path = animate_dstrf(w, x, tmp_path / "movie.mp4", channel=0, times=range(66, 74), format="gif", fps=5)
    assert path == tmp_path / "movie.gif"
    with Image.open(path) as movie:
        assert movie.n_frames == 8
        frames = []
        for i in (0, 7):
            movie.seek(i)
            frames.append(np.asarray(movie.convert("RGB"), dtype=np.int16))
    assert np.abs(frames[0] - frames[1]).sum() > 0


@pytest.mark.skipif(animation.writers.is_available("ffmpeg"), reason="ffmpeg is installed here")
def test_mp4_without_ffmpeg_is_a_clear_error_and_auto_falls_back_to_gif(example, tmp_path):
    model, x, w = example
    with pytest.raises(RuntimeError, match="needs ffmpeg"):
        animate_dstrf(w, x, tmp_path / "m", format="mp4")
    assert animate_dstrf(w, x, tmp_path / "m.mp4", times=[70, 71]).suffix == ".gif"
    assert not (tmp_path / "m.mp4").exists()


def test_receptive_field_grid(example):
    _, _, w = example
    figure = plot_receptive_fields(w[100], labels=["a", "b", "c"], columns=2, sfreq=100)
    maps = _maps(figure)
    assert len(maps) == 3 and [ax.get_title() for ax in figure.axes[:3]] == ["a", "b", "c"]
    np.testing.assert_array_equal(np.asarray(maps[1]), w[100, 1].numpy())
    left, right = figure.axes[0].get_images()[0].get_extent()[:2]
    assert (left, right) == pytest.approx((-5.0, (w.shape[-1] - 0.5) * 10.0))  # lags in ms at 100 Hz
    with pytest.raises(ValueError, match=r"maps must be \(channels, freqs, lags\)"):
        plot_receptive_fields(w)


def test_the_prediction_figure_titles_each_channel_with_its_r_past_the_warmup():
    from dstrf.plots import plot_prediction

    rng = np.random.default_rng(0)
    measured = rng.standard_normal((3, 200))
    predicted = measured + rng.standard_normal((3, 200))
    predicted[1, :20] = 100.0  # only in the warm-up: must not change channel 1's r
    figure = plot_prediction(measured, predicted, 100.0, ["a", "b", "c"], [1, 2], warmup=20)
    expected = [np.corrcoef(measured[n, 20:], predicted[n, 20:])[0, 1] for n in (1, 2)]
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert titles == [f"b: r = {expected[0]:.2f}", f"c: r = {expected[1]:.2f}"]
    assert figure.axes[-1].get_xlabel() == "time (s)"
    constant = plot_prediction(measured, np.zeros((3, 200)), 100.0, ["a", "b", "c"], [0])
    assert constant.axes[0].get_title(loc="left") == "a: r = nan"  # undefined, never 0
    with pytest.raises(ValueError, match=r"must both be \(N, T\)"):
        plot_prediction(measured, predicted[:2], 100.0, ["a", "b", "c"], [0])
    plt.close("all")


def test_frequency_ticks_are_at_round_frequencies_placed_between_the_band_centres():
    freqs = np.geomspace(200, 8000, 16)
    positions, values = round_frequency_ticks(freqs)
    assert values.tolist() == [200, 500, 1000, 2000, 5000]
    # on a log-spaced axis the position of f is log(f / 200) / log(8000 / 200) of the way up the bands
    np.testing.assert_allclose(positions, 15 * np.log(values / 200) / np.log(40))
    figure = plot_receptive_fields(np.ones((1, 16, 5)), freqs=freqs)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["200", "500", "1k", "2k", "5k"]
    assert ax.get_ylabel() == "frequency (Hz)"
    # a narrow range falls back to finer steps; bands without frequencies are numbered, and say so
    assert round_frequency_ticks(np.geomspace(500, 700, 8))[1].tolist() == [500, 600, 700]
    assert plot_receptive_fields(np.ones((1, 4, 5))).axes[0].get_ylabel() == "frequency band (number)"


def test_an_all_zero_or_nan_map_says_so_on_the_figure_and_a_map_with_values_does_not():
    maps = np.zeros((3, 4, 5))
    maps[1, 2, 3] = 0.5
    maps[2] = np.nan
    figure = plot_receptive_fields(maps, labels=["zero", "fine", "undefined"])
    notes = [[t.get_text() for t in ax.texts if t.get_visible()] for ax in figure.axes[:3]]
    assert notes[0] == ["all zero\n(the derivative vanishes here)"]
    assert notes[1] == [] and notes[2] == ["NaN: the map is undefined"]
    assert [ax.get_title() for ax in figure.axes[:3]] == ["zero", "fine", "undefined"]
    assert figure.axes[-1].get_ylabel() == MAP_UNIT  # the colour bar, with the unit


def test_every_map_has_lag_zero_at_the_left_the_optimal_stimulus_too(example):
    model, x, w = example
    stimuli = np.arange(2 * 6 * 5, dtype=float).reshape(2, 6, 5)  # time order: column 4 is the read-out frame
    figures = {
        "dstrf": plot_dstrf(w, x, times=[100], sfreq=50),
        "grid": plot_receptive_fields(w[100], sfreq=50),
        "optimal": plot_optimal_stimuli(stimuli, np.zeros((2, 3)), sfreq=50, labels=["a", "b"]),
    }
    for name, figure in figures.items():
        maps = [ax for ax in figure.axes if ax.get_images() and "lag" in ax.get_xlabel()]
        assert maps, name
        for ax in maps:
            left, right = ax.get_xlim()
            assert left == pytest.approx(-10) and right > left, name  # half a 20 ms frame left of lag 0
    optimal = [ax for ax in figures["optimal"].axes if ax.get_images() and "lag" in ax.get_xlabel()][0]
    np.testing.assert_array_equal(np.asarray(optimal.get_images()[0].get_array())[:, 0], stimuli[0, :, -1])
    assert optimal.get_title() == "optimal stimulus: a"
