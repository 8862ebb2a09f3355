import re

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from dstrf.data.formats import from_mne, from_naplib, load_mat

try:  # optional: the v7.3 files are written with hdf5storage, the recordings built with MNE
    import hdf5storage
except ImportError:
    hdf5storage = None
try:
    import mne
except ImportError:
    mne = None

needs_mne = pytest.mark.skipif(mne is None, reason="mne is not installed")
VERSIONS = ["5", pytest.param("7.3", marks=pytest.mark.skipif(hdf5storage is None, reason="needs hdf5storage"))]

RNG = np.random.default_rng(0)
STIMULI = [RNG.random((3, 20)), RNG.random((3, 25))]  # (F, T_i), T_i different so a swapped trial is caught
RESPONSES = [RNG.standard_normal((2, 20)), RNG.standard_normal((2, 25))]
REPEATS = [RNG.standard_normal((4, 2, 20)), RNG.standard_normal((4, 2, 25))]


def cell(arrays, column=False):
    """A MATLAB cell array (1 x n, or n x 1) as scipy/hdf5storage write it: an object array."""
    out = np.empty((len(arrays), 1) if column else (1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        out.flat[i] = a
    return out


def write_mat(path, version, variables):
    if version == "5":
        scipy.io.savemat(path, variables)
    else:
        hdf5storage.savemat(str(path), variables, format="7.3", matlab_compatible=True, store_python_metadata=False)
    return path


def assert_trials(trials, stimuli, responses):
    assert len(trials) == len(stimuli)
    for trial, x, y in zip(trials, stimuli, responses):
        assert torch.equal(trial.stimulus, torch.tensor(x, dtype=torch.float32))
        assert torch.equal(trial.response, torch.tensor(y, dtype=torch.float32))


# ------------------------------------------------------------------------------------------------ MATLAB files
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("column", [False, True])
def test_mat_cells_round_trip_in_matlab_orientation(tmp_path, version, column):
    path = write_mat(
        tmp_path / "d.mat",
        version,
        {
            "stim": cell(STIMULI, column),
            "resp": cell(RESPONSES, column),
            "reps": cell(REPEATS, column),
            "fs": 100.0,
            "cf": np.array([[200.0, 800.0, 3200.0]]),
            "chans": cell([np.str_("e1"), np.str_("e2")]),
            "tnames": cell([np.str_("speech"), np.str_("music")]),
        },
    )
    assert h5py.is_hdf5(path) == (version == "7.3")
    trials = load_mat(path, repeats="reps", sfreq="fs", freqs="cf", channel_names="chans", trial_names="tnames")
    assert_trials(trials, STIMULI, RESPONSES)
    for trial, r in zip(trials, REPEATS):
        assert torch.equal(trial.repeats, torch.tensor(r, dtype=torch.float32))
    assert trials.sfreq == 100.0 and trials.names == ["speech", "music"] and trials.channel_names == ["e1", "e2"]
    np.testing.assert_array_equal(trials.freqs, [200.0, 800.0, 3200.0])


def test_v73_is_read_transposed_as_matlab_stores_it(tmp_path):
    """A hand-written v7.3 layout: a MATLAB 3 x 20 double is the HDF5 dataset (20, 3); cells are references."""
    path = tmp_path / "hand.mat"
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        stim = refs.create_dataset("a", data=STIMULI[0].T)
        stim.attrs["MATLAB_class"] = np.bytes_("double")
        cellset = f.create_dataset("stim", data=np.array([[stim.ref]], dtype=h5py.ref_dtype))
        cellset.attrs["MATLAB_class"] = np.bytes_("cell")
        resp = f.create_dataset("resp", data=RESPONSES[0].T)
        resp.attrs["MATLAB_class"] = np.bytes_("double")
        f.create_dataset("rate", data=np.array([[64.0]])).attrs["MATLAB_class"] = np.bytes_("double")
    trials = load_mat(path, sfreq="rate")
    assert_trials(trials, STIMULI[:1], RESPONSES[:1])
    assert trials.sfreq == 64.0 and trials.n_freqs == 3 and trials.n_channels == 2


@pytest.mark.parametrize("version", VERSIONS)
def test_mat_single_trial_arrays_and_number_sfreq(tmp_path, version):
    path = write_mat(tmp_path / "one.mat", version, {"S": STIMULI[1], "R": RESPONSES[1]})
    trials = load_mat(path, stimulus="S", response="R", sfreq=50, channel_names=["a", "b"])
    assert_trials(trials, STIMULI[1:], RESPONSES[1:])
    assert trials.sfreq == 50.0 and trials.channel_names == ["a", "b"]
    path = write_mat(tmp_path / "one_channel.mat", version, {"S": STIMULI[1], "R": RESPONSES[1][:1], "name": "A1"})
    trials = load_mat(path, stimulus="S", response="R", sfreq=50, channel_names="name")  # a char row: one name
    assert trials.channel_names == ["A1"] and trials.n_channels == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_mat_bad_inputs(tmp_path, version):
    path = write_mat(
        tmp_path / "bad.mat",
        version,
        {
            "stim": cell(STIMULI),
            "resp": cell(RESPONSES[:1]),
            "fs": 100.0,
            "grid": cell([STIMULI[0]] * 4).reshape(2, 2),
            "wide": cell([STIMULI[0].T, RESPONSES[0]]),
        },
    )
    with pytest.raises(
        KeyError,
        match=re.escape(
            "no variable 'stimulus' (argument stimulus); the file has variables ['fs', 'grid', 'resp', 'stim', 'wide']"
        ),
    ):
        load_mat(path, stimulus="stimulus")
    with pytest.raises(KeyError, match="no variable 'Fs' \\(argument sfreq\\)"):
        load_mat(path, response="stim", sfreq="Fs")
    with pytest.raises(ValueError, match="variable 'stim' holds 2 trial\\(s\\) but response variable 'resp' holds 1"):
        load_mat(path)
    with pytest.raises(ValueError, match="'grid' is a 2 x 2 cell; expected a 1 x n or n x 1"):
        load_mat(path, stimulus="grid")
    # content errors come from Trials, with the file name in front
    with pytest.raises(ValueError, match=re.escape(f"{path}: trial 0") + ".*stimulus has 3 frames but response has 20"):
        load_mat(path, stimulus="wide", response="stim", sfreq=10.0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mat(tmp_path / "missing.mat")


@pytest.mark.parametrize("version", VERSIONS)
def test_mat_nested_cells_and_trials_warnings_name_the_file(tmp_path, version):
    path = write_mat(
        tmp_path / "n.mat",
        version,
        {
            "stim": cell([STIMULI[0], cell([STIMULI[1]])]),
            "resp": cell(RESPONSES),
            "fs": 10.0,
            "wide": np.ones((30, 4)),
            "y": np.ones((1, 4)),
        },
    )
    with pytest.raises(TypeError, match="element \\{2\\} of cell 'stim' is a cell"):
        load_mat(path)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: stimulus of trial(s) [0] has more frequency bands")):
        load_mat(path, stimulus="wide", response="y")


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"not matlab at all" * 20)
    with pytest.raises(ValueError, match="is not a readable MATLAB file"):
        load_mat(tmp_path / "x.mat")


# ------------------------------------------------------------------------------------------------ MNE
SFREQ = 100.0


def make_raw(first_samp=0, n_times=1000):
    """3 EEG channels and a trigger channel; channel c at data index t holds 10000 c + t (slices are checkable)."""
    info = mne.create_info(["Fz", "Cz", "Pz", "STI"], SFREQ, ["eeg", "eeg", "eeg", "stim"])
    data = np.arange(n_times, dtype=float)[None] + 10000.0 * np.arange(4)[:, None]
    return mne.io.RawArray(data, info, first_samp=first_samp, verbose="error"), data


def events_at(samples, ids):
    return np.array([[s, 0, k] for s, k in zip(samples, ids)], dtype=int)


@needs_mne
def test_raw_cut_at_events_counts_first_samp_and_tmin():
    raw, data = make_raw(first_samp=37)
    events = events_at([37 + 100, 37 + 300, 37 + 500], [1, 2, 1])  # absolute samples, as find_events gives
    trials = from_mne(raw, STIMULI, events=events, event_id={"speech": 1}, tmin=0.05, sfreq=SFREQ)
    # event_id keeps events 0 and 2; tmin 0.05 s = 5 samples; data index = sample - first_samp + 5
    assert_trials(trials, STIMULI, [data[:3, 105:125], data[:3, 505:530]])
    assert trials.channel_names == ["Fz", "Cz", "Pz"] and trials.sfreq == SFREQ  # the stim channel is not picked


@needs_mne
def test_raw_picks_and_event_id_forms():
    raw, data = make_raw()
    events = events_at([10, 400], [3, 3])
    for event_id in (3, [3], None):
        trials = from_mne(raw, STIMULI, events=events, event_id=event_id, picks=["Pz", "Fz"])
        assert trials.channel_names == ["Pz", "Fz"]
        assert_trials(trials, STIMULI, [data[[2, 0], 10:30], data[[2, 0], 400:425]])


@needs_mne
@pytest.mark.parametrize("meas_date", [None, 0])
def test_raw_cut_at_annotations(meas_date):
    raw, data = make_raw(first_samp=20)
    if meas_date is None:  # onsets relative to the first sample
        onsets = [1.0, 2.0, 4.0]
    else:  # onsets relative to the measurement start, which is first_samp samples before the first sample
        raw.set_meas_date(meas_date)
        onsets = [1.2, 2.2, 4.2]
    raw.set_annotations(
        mne.Annotations(onsets, [0.2, 0.2, 0.2], ["word", "BAD_blink", "word"], orig_time=raw.info["meas_date"])
    )
    trials = from_mne(raw, STIMULI, annotations="word")
    assert_trials(trials, STIMULI, [data[:3, 100:120], data[:3, 400:425]])


@needs_mne
def test_epochs_are_trials_from_time_tmin():
    info = mne.create_info(["a", "b"], SFREQ, "eeg")
    epoch_data = RNG.standard_normal((2, 2, 40))
    epochs = mne.EpochsArray(epoch_data, info, tmin=-0.1, verbose="error")  # sample 10 of each epoch is t = 0
    trials = from_mne(epochs, STIMULI)
    assert_trials(trials, STIMULI, [epoch_data[0, :, 10:30], epoch_data[1, :, 10:35]])
    assert trials.channel_names == ["a", "b"]
    later = from_mne(epochs, [s[:, :10] for s in STIMULI], tmin=0.02, picks=["b"])
    assert_trials(later, [s[:, :10] for s in STIMULI], [epoch_data[0, 1:, 12:22], epoch_data[1, 1:, 12:22]])


@needs_mne
def test_mne_bad_inputs():
    raw, _ = make_raw(first_samp=5)
    with pytest.raises(ValueError, match="3 event\\(s\\) selected but 2 stimuli"):
        from_mne(raw, STIMULI, events=events_at([5, 105, 205], [1, 1, 1]))
    with pytest.raises(
        ValueError,
        match=re.escape("events[2] (sample 995, trial 1): its response needs samples 990..1014")
        + ".*recording has samples 0..999",
    ):
        from_mne(raw, STIMULI, events=events_at([5, 105, 995], [1, 2, 1]), event_id=1)  # rows 0 and 2 selected
    with pytest.raises(ValueError, match=re.escape("events[0] (sample 7, trial 0): its response needs samples -8..11")):
        from_mne(raw, STIMULI, events=events_at([7, 105], [1, 1]), tmin=-0.1)
    with pytest.raises(ValueError, match="sampled at 100 Hz but the stimuli at 64 Hz; resample"):
        from_mne(raw, STIMULI, events=events_at([5, 105], [1, 1]), sfreq=64.0)
    with pytest.raises(ValueError, match="event_id 9 selects no events; the events have ids \\[1, 2\\]"):
        from_mne(raw, STIMULI, events=events_at([5, 105], [1, 2]), event_id=9)
    with pytest.raises(ValueError, match="exactly one of events"):
        from_mne(raw, STIMULI)
    with pytest.raises(ValueError, match="events must be an integer \\(n, 3\\) array"):
        from_mne(raw, STIMULI, events=np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="with annotations, select by description"):
        from_mne(raw, STIMULI, annotations="tone", event_id=1)
    raw.set_annotations(mne.Annotations([0.5, 9.9], [0.1, 0.1], ["word", "word"]))
    with pytest.raises(ValueError, match=re.escape("annotation 1 ('word') (sample 995, trial 1): its response")):
        from_mne(raw, STIMULI, annotations=["word"])
    with pytest.raises(ValueError, match="no annotations described \\['tone'\\]"):
        from_mne(raw, STIMULI, annotations="tone")
    with pytest.raises(ValueError, match="stimulus 1 must be 2-D"):
        from_mne(raw, [STIMULI[0], np.ones(5)], events=events_at([5, 105], [1, 1]))
    misc = mne.io.RawArray(np.zeros((2, 100)), mne.create_info(2, SFREQ), verbose="error")  # type misc: no data
    with pytest.raises(
        ValueError,
        match=re.escape(
            "picks=None (the data channels: EEG, MEG, ...) select no channels of 2 (channel types ['misc'])"
        ),
    ):
        from_mne(misc, STIMULI[:1], events=events_at([0], [1]))
    assert from_mne(misc, STIMULI[:1], events=events_at([0], [1]), picks="misc").channel_names == ["0", "1"]
    with pytest.raises(TypeError, match="must be an mne.io.Raw or mne.Epochs"):
        from_mne(np.ones((2, 10)), STIMULI)
    epochs = mne.EpochsArray(np.ones((3, 2, 30)), mne.create_info(["a", "b"], SFREQ, "eeg"), verbose="error")
    with pytest.raises(ValueError, match="3 epoch\\(s\\) but 2 stimuli"):
        from_mne(epochs, STIMULI)
    short = mne.EpochsArray(np.ones((2, 2, 22)), epochs.info, verbose="error")
    with pytest.raises(
        ValueError, match=re.escape("epoch 1: its response needs samples 0..24 of the epoch") + ".*has samples 0..21"
    ):
        from_mne(short, STIMULI)
    with pytest.raises(ValueError, match="already cut"):
        from_mne(epochs, STIMULI, events=events_at([0, 1], [1, 1]))


# ------------------------------------------------------------------------------------------------ naplib
def test_naplib_stand_in_is_time_first():
    data = [
        {"name": "s1", "dataf": 100, "aud": STIMULI[0].T, "resp": RESPONSES[0].T},
        {"name": "s2", "dataf": 100, "aud": STIMULI[1].T, "resp": RESPONSES[1].T},
    ]
    trials = from_naplib(data)
    assert_trials(trials, STIMULI, RESPONSES)
    assert trials.sfreq == 100.0 and trials.names == ["s1", "s2"]
    data[1]["dataf"] = 64
    with pytest.raises(ValueError, match="give sfreq"):
        from_naplib(data)
    assert from_naplib(data, sfreq=50).sfreq == 50.0
    with pytest.raises(KeyError, match="trial 0 has no field\\(s\\) \\['spec'\\]"):
        from_naplib(data, stimulus="spec")


def test_naplib_demo_is_read_from_its_own_file():
    """The real demo recording naplib ships (installed with --no-deps: naplib pins numpy < 2)."""
    pytest.importorskip("h5py")
    from dstrf.data.formats import load_naplib_demo, naplib_demo_path

    try:
        naplib_demo_path()
    except ModuleNotFoundError:
        pytest.skip("naplib is not installed (pip install --no-deps naplib)")
    trials = load_naplib_demo()
    assert (trials.n_trials, trials.n_freqs, trials.n_channels, trials.sfreq) == (10, 128, 10, 100.0)
    assert trials.lengths[:3] == [6197, 5203, 6430] and sum(trials.lengths) == 64441  # 644 s
    assert trials.names[0] == "stim01"
    # the spectrogram and the responses are time-aligned (simulated electrodes follow the stimulus energy)
    from dstrf.models import RidgeSTRF

    model = RidgeSTRF(128, 10, lags=10, alphas=[1e3]).fit(trials.stimuli[:3], trials.responses[:3])
    prediction = model(trials.stimuli[3][None])[0]
    r = [np.corrcoef(prediction[n, 9:].numpy(), trials.responses[3][n, 9:].numpy())[0, 1] for n in range(10)]
    assert min(r) > 0.3
    halved = load_naplib_demo(n_bands=64)
    assert halved.n_freqs == 64 and halved.lengths == trials.lengths
    np.testing.assert_allclose(halved.stimuli[0][5].numpy(), trials.stimuli[0][10:12].mean(0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="n_bands must divide naplib's 128 bands .* got 48"):
        load_naplib_demo(n_bands=48)
