import numpy as np
import pytest
import torch

from dstrf.data import Trials, load_trials, save_trials


@pytest.fixture
def trials():
    rng = np.random.default_rng(0)
    return Trials(
        [rng.random((3, 20 + i)) for i in range(3)],
        [rng.standard_normal((2, 20 + i)) for i in range(3)],
        sfreq=64.0,
        freqs=[100.0, 400.0, 1600.0],
        channel_names=["e1", "e2"],
        repeats=[rng.standard_normal((4, 2, 20 + i)) for i in range(3)],
        names=["a", "b", "c"],
    )


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_round_trip(tmp_path, trials, suffix):
    path = save_trials(trials, tmp_path / f"trials{suffix}")
    back = load_trials(path)
    assert back.sfreq == 64.0 and back.names == ["a", "b", "c"] and back.channel_names == ["e1", "e2"]
    np.testing.assert_allclose(back.freqs, trials.freqs)
    for a, b in zip(trials, back):
        assert torch.equal(a.stimulus, b.stimulus) and torch.equal(a.response, b.response) and torch.equal(a.repeats, b.repeats)


def test_never_overwrites_and_rejects_unknown_types(tmp_path, trials):
    path = save_trials(trials, tmp_path / "t.h5")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_trials(trials, path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="unknown trials file type '.mat'"):
        save_trials(trials, tmp_path / "t.mat")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trials(tmp_path / "missing.h5")


def test_bad_file_content_fails_like_in_memory_data(tmp_path):
    np.savez(tmp_path / "bad.npz", sfreq=100.0, stimulus_0=np.ones((3, 10)), response_0=np.ones((2, 9)))
    with pytest.raises(ValueError, match="stimulus has 10 frames but response has 9"):
        load_trials(tmp_path / "bad.npz")
    np.savez(tmp_path / "gap.npz", sfreq=100.0, stimulus_0=np.ones((3, 10)), stimulus_1=np.ones((3, 10)), response_0=np.ones((2, 10)))
    with pytest.raises(ValueError, match=r"missing arrays \['response_1'\]"):
        load_trials(tmp_path / "gap.npz")
