import re

import h5py
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
        assert (
            torch.equal(a.stimulus, b.stimulus)
            and torch.equal(a.response, b.response)
            and torch.equal(a.repeats, b.repeats)
        )


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
    np.savez(
        tmp_path / "gap.npz",
        sfreq=100.0,
        stimulus_0=np.ones((3, 10)),
        stimulus_1=np.ones((3, 10)),
        response_0=np.ones((2, 10)),
    )
    with pytest.raises(ValueError, match=r"missing arrays \['response_1'\]"):
        load_trials(tmp_path / "gap.npz")


# ----------------------------------------------------------------------------------- unreadable or odd files (issue 10)


def _h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def _trial(i, n_frames=10):
    return {f"stimulus_{i}": np.ones((3, n_frames)), f"response_{i}": np.ones((2, n_frames))}


@pytest.mark.parametrize("suffix, kind", [(".h5", "HDF5"), (".npz", ".npz")])
def test_truncated_file_names_the_file(tmp_path, trials, suffix, kind):
    path = save_trials(trials, tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=re.escape(f"{cut} is not a readable {kind} file (truncated")):
        load_trials(cut)


def test_files_that_are_not_trials_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file" * 8)
    with pytest.raises(ValueError, match=re.escape(f"{junk} is not a readable HDF5 file (truncated, or not HDF5?): ")):
        load_trials(junk)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(
        ValueError, match=re.escape(f"{single} holds a single array (written by np.save), not an .npz archive")
    ):
        load_trials(single)
    with pytest.raises(IsADirectoryError, match=re.escape(f"trials file {tmp_path} is a directory")):
        load_trials(tmp_path)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_file_without_trial_arrays_lists_its_keys(tmp_path, suffix):
    path = tmp_path / f"trials{suffix}"
    arrays = {"sfreq": 100.0, "spectrogram": np.ones((3, 10)), "eeg": np.ones((2, 10))}
    _h5(path, **arrays) if suffix == ".h5" else np.savez(path, **arrays)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path}: no stimulus_0, response_0, ... arrays found; a trials file holds stimulus_<i>, response_<i> and "
            "optionally repeats_<i> for trials i = 0, 1, ..., plus sfreq, freqs, channel_names and trial_names (see "
            "dstrf.data.save_trials); it has keys ['eeg', 'sfreq', 'spectrogram']"
        ),
    ):
        load_trials(path)


def test_repeats_for_some_trials_only(tmp_path):
    reps = {"repeats_0": np.ones((4, 2, 10)), "repeats_1": np.ones((4, 2, 10))}
    path = _h5(tmp_path / "trials.h5", sfreq=100.0, **_trial(0), **_trial(1), **_trial(2), **reps)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path}: repeats given for trials [0, 1] but not for [2]; give repeats for every trial or none"
        ),
    ):
        load_trials(path)
    path = _h5(
        tmp_path / "beyond.h5", sfreq=100.0, **_trial(0), repeats_0=np.ones((4, 2, 10)), repeats_5=np.ones((4, 2, 10))
    )
    with pytest.raises(ValueError, match=re.escape(f"{path}: repeats given for trials [5] but the trials are 0..0")):
        load_trials(path)


def test_extra_groups_and_arrays_are_ignored_with_a_warning(tmp_path):
    path = _h5(tmp_path / "trials.h5", sfreq=100.0, **_trial(0), **_trial(1))
    with h5py.File(path, "a") as f:
        f.create_group("meta").create_dataset("subject", data=3)
    with pytest.warns(
        UserWarning, match=re.escape(f"{path}: ignoring groups/links ['meta']: not part of the trials layout")
    ):
        back = load_trials(path)
    assert len(back) == 2 and back.lengths == [10, 10]
    npz = tmp_path / "trials.npz"
    np.savez(npz, sfreq=100.0, notes=np.ones(2), stimulus_01=np.ones((3, 10)), **_trial(0))
    with pytest.warns(UserWarning, match=re.escape(f"{npz}: ignoring arrays ['notes', 'stimulus_01']")):
        assert len(load_trials(npz)) == 1


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_sfreq_stored_as_an_array(tmp_path, suffix):
    one, two = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    for path, sfreq in ((one, np.array([64.0])), (two, np.array([64.0, 32.0]))):
        _h5(path, sfreq=sfreq, **_trial(0)) if suffix == ".h5" else np.savez(path, sfreq=sfreq, **_trial(0))
    assert load_trials(one).sfreq == 64.0
    with pytest.raises(
        ValueError,
        match=re.escape(f"{two}: sfreq must be one number (the frame rate in Hz); got an array of shape (2,)"),
    ):
        load_trials(two)


def test_missing_sfreq_and_content_errors_name_the_file(tmp_path):
    path = _h5(tmp_path / "trials.h5", **_trial(0))
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: no 'sfreq' (frame rate in Hz) stored; a trials file holds")
    ):
        load_trials(path)
    np.savez(tmp_path / "bad.npz", sfreq=100.0, stimulus_0=np.ones((3, 10)), response_0=np.ones((2, 9)))
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 'bad.npz'}: trial 0 ('trial0'): stimulus has 10 frames")
    ):
        load_trials(tmp_path / "bad.npz")
    np.savez(tmp_path / "dup.npz", sfreq=100.0, channel_names=np.array(["a", "a"]), **_trial(0))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'dup.npz'}: channel_names must be unique")):
        load_trials(tmp_path / "dup.npz")


def test_shape_warnings_of_a_file_name_it(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, sfreq=100.0, stimulus_0=np.ones((30, 8)), response_0=np.ones((2, 8)))
    with pytest.warns(
        UserWarning, match=re.escape(f"{path}: stimulus of trial(s) [0] has more frequency bands than frames")
    ):
        load_trials(path)
