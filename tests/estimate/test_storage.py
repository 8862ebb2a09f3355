import subprocess
import sys

import pytest
import torch

from dstrf.estimate import dstrf, open_dstrf
from dstrf.models import DeepEncoder

F, N, T = 8, 3, 300


@pytest.fixture
def model():
    torch.manual_seed(0)
    return DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2, 4))


def test_streamed_result_equals_the_in_memory_one_and_reads_in_part(model, tmp_path):
    x = torch.randn(F, T)
    in_memory = dstrf(model, x)
    with dstrf(model, x, out=tmp_path / "trial0.h5", chunk_size=50) as stored:
        assert stored.shape == tuple(in_memory.shape)
        torch.testing.assert_close(stored[:], in_memory)
        torch.testing.assert_close(stored[100:120], in_memory[100:120])  # a slice of time
        torch.testing.assert_close(stored[:, 2], in_memory[:, 2])  # one channel
        torch.testing.assert_close(stored.read(times=[250, 7], channels=[1]), in_memory[[250, 7]][:, [1]])
        assert stored.attrs["lags"] == 15 and stored.attrs["model"] == "DeepEncoder"
    assert not (tmp_path / "trial0.h5.partial").exists()


def test_a_selection_is_stored_with_its_frame_and_channel_numbers(model, tmp_path):
    x = torch.randn(F, T)
    with dstrf(model, x, channels=[2], times=range(40, 60), out=tmp_path / "part.h5", dtype=torch.float16) as stored:
        assert stored.times.tolist() == list(range(40, 60)) and stored.channels.tolist() == [2]
        assert stored[:].dtype == torch.float16
        torch.testing.assert_close(stored.read(times=[45]).float(), dstrf(model, x)[[45]][:, [2]], rtol=1e-2, atol=1e-3)
        with pytest.raises(KeyError, match=r"times \[10\] are not in this file"):
            stored.read(times=[10])


def test_same_request_reuses_the_file_and_a_different_one_never_overwrites_it(model, tmp_path):
    x = torch.randn(F, T)
    path = tmp_path / "trial0.h5"
    dstrf(model, x, out=path).close()
    before = path.stat().st_mtime_ns
    dstrf(model, x, out=path).close()  # identical request: the finished file is returned untouched
    assert path.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="holds a different dSTRF"):
        dstrf(model, x * 2, out=path)
    with pytest.raises(FileExistsError, match="holds a different dSTRF"):
        dstrf(model, x, lags=5, out=path)
    assert path.stat().st_mtime_ns == before
    with pytest.raises(FileNotFoundError, match="no dSTRF file"):
        open_dstrf(tmp_path / "missing.h5")


def test_a_truncated_file_is_an_error_naming_it_and_never_overwritten(model, tmp_path):
    from dstrf.estimate.storage import DSTRFFileError

    x = torch.randn(F, T)
    path = tmp_path / "trial0.h5"
    dstrf(model, x, out=path).close()
    path.write_bytes(path.read_bytes()[:100])
    message = rf"cannot read dSTRF file {path}: OSError: .*truncated file.*; remove it and compute it again"
    with pytest.raises(DSTRFFileError, match=message):
        open_dstrf(path)
    with pytest.raises(DSTRFFileError, match=message):
        dstrf(model, x, out=path)  # the same request: it cannot tell, so it neither returns nor replaces it
    assert path.stat().st_size == 100


def test_a_damaged_chunk_is_an_error_naming_the_file_not_wrong_numbers(model, tmp_path):
    from dstrf.estimate.storage import DSTRFFileError

    path = tmp_path / "trial0.h5"
    dstrf(model, torch.randn(F, T), out=path).close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the data: a bad copy or a bad disk
    path.write_bytes(data)
    with pytest.raises(DSTRFFileError, match=rf"cannot read dSTRF file {path}: OSError: .*filter returned failure"):
        with open_dstrf(path) as stored:
            stored[:]
    with open_dstrf(path) as stored:  # the chunks before the damaged one still read
        assert stored[:10].shape == (10, N, F, 15)


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_chunk_not_the_trial(tmp_path):
    """A 60000-frame trial whose in-memory dSTRF would take 1.2 GB streams in a fraction of that."""
    script = f"""
import resource, torch
from dstrf.estimate import dstrf
from dstrf.models import LinearSTRF
torch.manual_seed(0)
model = LinearSTRF(64, 4, lags=20)
dstrf(model, torch.randn(64, 3000), chunk_size=1000)  # torch's one-time allocations are not the trial's
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dstrf(model, torch.randn(64, 60000), out=r"{tmp_path / "long.h5"}", chunk_size=1000).close()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    growth_mb = float(result.stdout.strip().splitlines()[-1])
    full_mb = 60000 * 4 * 64 * 20 * 4 / 2**20  # what holding the whole result would take
    assert growth_mb < full_mb / 3, (growth_mb, full_mb)
    with open_dstrf(tmp_path / "long.h5") as stored:
        assert stored.shape == (60000, 4, 64, 20)


def test_writing_a_file_shows_progress_over_frames_unless_turned_off(tmp_path, capsys):
    from dstrf.models import DeepEncoder

    torch.manual_seed(0)
    model = DeepEncoder(4, 2, hidden=4, kernel_size=3, dilations=(1, 2))
    x = torch.randn(4, 300)
    dstrf(model, x, out=tmp_path / "a.h5", chunk_size=100).close()
    assert "0/300 [" in capsys.readouterr().err  # the bar counts the 300 output frames, not trials
    dstrf(model, x, out=tmp_path / "b.h5", chunk_size=100, progress=False).close()
    dstrf(model, x, chunk_size=100)  # in memory: off by default
    assert "frame" not in capsys.readouterr().err
