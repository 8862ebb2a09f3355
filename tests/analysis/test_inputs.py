"""dSTRF files written by the engine are read in chunks and give the values of the in-memory tensor."""

import h5py
import numpy as np
import pytest
import torch

from dstrf.analysis import complexity, gain_change, inputs, nonlinearities, shape_change, temporal_hold
from dstrf.analysis.inputs import DSTRFSource
from dstrf.estimate import dstrf, open_dstrf
from dstrf.models import DeepEncoder

MEASURES = (complexity, gain_change, temporal_hold, shape_change)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepEncoder(8, 3, hidden=8, kernel_size=3, dilations=(1, 2, 4)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.relu(torch.randn(8, 400, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("cached", [True, False])
def test_a_dstrf_file_gives_the_values_of_the_tensor(model, x, tmp_path, monkeypatch, cached):
    in_memory = dstrf(model, x)
    if not cached:  # the channel is re-read from the file block by block on every pass
        monkeypatch.setattr(inputs, "CHANNEL_CACHE_BYTES", 0)
    with dstrf(model, x, out=tmp_path / "trial0.h5", chunk_size=64) as stored:
        for measure in MEASURES:
            np.testing.assert_allclose(measure(stored, chunk_size=50), measure(in_memory), rtol=1e-10)
    # a path is opened, read and closed
    np.testing.assert_allclose(complexity(tmp_path / "trial0.h5"), complexity(in_memory), rtol=1e-10)
    table = nonlinearities(str(tmp_path / "trial0.h5"), chunk_size=50)
    np.testing.assert_allclose(table.column("shape_change"), shape_change(in_memory), rtol=1e-10)


def test_a_file_with_some_channels_is_addressed_by_channel_number(model, x, tmp_path):
    in_memory = dstrf(model, x)
    with dstrf(model, x, channels=[2, 0], out=tmp_path / "part.h5", dtype=torch.float16) as stored:
        values, details = complexity(stored, channels=[0], details=True)
        assert details[0].channel == 0
        assert values[0] == pytest.approx(complexity(in_memory, channels=[0])[0], rel=1e-2)
        assert nonlinearities(stored).column("channel").tolist() == [2, 0]
        with pytest.raises(ValueError, match=r"channels \[1\] are not in W \(its channels: \[2, 0\]\)"):
            complexity(stored, channels=[1])


def test_temporal_hold_needs_consecutive_frames(model, x, tmp_path):
    with dstrf(model, x, times=range(0, 400, 2), out=tmp_path / "every_other.h5") as stored:
        complexity(stored)  # fine: no pairs of frames
        with pytest.raises(ValueError, match="temporal hold pairs frames t and t \\+ tau.*frames \\[0, 2, 4"):
            temporal_hold(stored)
        with pytest.raises(ValueError, match="consecutive"):
            nonlinearities(stored)


def test_an_h5py_dataset_is_a_source(model, x, tmp_path):
    in_memory = dstrf(model, x)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["w"] = in_memory.numpy()
    with h5py.File(tmp_path / "plain.h5", "r") as f:
        np.testing.assert_allclose(temporal_hold(f["w"]), temporal_hold(in_memory))


def test_a_missing_file_and_a_path_that_is_no_dstrf_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dSTRF file"):
        complexity(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a dSTRF file"):
        complexity(tmp_path / "other.h5")


def test_the_source_closes_a_file_it_opened(model, x, tmp_path):
    dstrf(model, x, out=tmp_path / "t.h5").close()
    with DSTRFSource(tmp_path / "t.h5") as source:
        assert source.shape == (400, 3, 8, 15)
        handle = source.data
    with pytest.raises(RuntimeError):  # h5py: the dataset's file is closed
        handle[0:1, 0]
    with open_dstrf(tmp_path / "t.h5") as stored:  # one the caller opened stays open
        complexity(stored)
        assert stored[0:1].shape == (1, 3, 8, 15)


def test_frame_view_reads_rows_from_start_on_times_the_mask():
    from dstrf.analysis import FrameView

    rng = np.random.default_rng(0)
    data, mask = rng.normal(size=(10, 2, 3, 4)), rng.random((10, 2, 3, 4)) > 0.5
    view = FrameView(data, 4, mask=mask, times=np.arange(100, 110), channels=[5, 7])
    assert (
        view.shape == (6, 2, 3, 4) and view.times.tolist() == list(range(104, 110)) and view.channels.tolist() == [5, 7]
    )
    np.testing.assert_array_equal(view[1:3, 1], (data * mask)[5:7, 1])
    np.testing.assert_array_equal(view[:], (data * mask)[4:])
    np.testing.assert_allclose(complexity(view), complexity((data * mask)[4:]))
