import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import animation
from PIL import Image

from dstrf.estimate import dstrf
from dstrf.models import DeepEncoder
from dstrf.plots import animate_dstrf, default_times, plot_dstrf, plot_receptive_fields


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
    response_axis = [ax for ax in figure.axes if ax.get_ylabel() == "response"][0]
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
