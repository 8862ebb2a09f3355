import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from dstrf.data import Standardization, Trials


def make(n_trials=3, n_freqs=4, n_channels=2, n_frames=50, repeats=False, seed=0):
    rng = np.random.default_rng(seed)
    stimuli = [rng.random((n_freqs, n_frames + 5 * i)) for i in range(n_trials)]
    responses = [rng.standard_normal((n_channels, n_frames + 5 * i)) for i in range(n_trials)]
    reps = [rng.standard_normal((3, n_channels, n_frames + 5 * i)) for i in range(n_trials)] if repeats else None
    return stimuli, responses, reps


def test_container_holds_float32_tensors_and_metadata():
    stimuli, responses, reps = make(repeats=True)
    trials = Trials(stimuli, responses, sfreq=100, freqs=[250, 500, 1000, 2000], channel_names=["a", "b"], repeats=reps)
    assert len(trials) == trials.n_trials == 3
    assert (trials.n_freqs, trials.n_channels) == (4, 2)
    assert trials.lengths == [50, 55, 60]
    trial = trials[1]
    assert trial.stimulus.dtype == torch.float32 and trial.stimulus.shape == (4, 55)
    assert trial.repeats.shape == (3, 2, 55) and trial.name == "trial1"
    np.testing.assert_allclose(trial.response.numpy(), responses[1].astype(np.float32))
    assert trials.channel_names == ["a", "b"] and trials.freqs.tolist() == [250, 500, 1000, 2000]
    sub = trials.subset([2, 0])
    assert sub.names == ["trial2", "trial0"] and sub.lengths == [60, 50]


def _nan_stimulus(s, r):
    s[1] = s[1].copy()
    s[1][2, 7] = np.nan


def _inf_response(s, r):
    r[2] = np.full((2, 60), np.inf)


def _length_mismatch(s, r):
    r[0] = r[0][:, :40]


def _band_mismatch(s, r):
    s[2] = s[2][:3]


def _strings(s, r):
    s[1] = np.array([["a"] * 55] * 4)


def _ragged(s, r):
    r[1] = [[1.0, 2.0], [3.0]]


def _one_dimensional(s, r):
    r[0] = r[0][0]


def _channel_mismatch(s, r):
    r[1] = r[1][:1]


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (
            _nan_stimulus,
            ValueError,
            r"stimulus of trial 1 \('trial1'\) contains 1 non-finite value\(s\) \(NaN\), the first at index \(2, 7\)",
        ),
        (_inf_response, ValueError, r"response of trial 2 .* \(Inf\)"),
        (_length_mismatch, ValueError, r"trial 0 .*stimulus has 50 frames but response has 40"),
        (_band_mismatch, ValueError, r"trial 2 .*3 frequency bands but trial 0 has 4"),
        (_strings, TypeError, r"stimulus of trial 1 .*numeric"),
        (_ragged, TypeError, r"response of trial 1 .*numeric"),
        (_one_dimensional, ValueError, r"response of trial 0 .* must be 2-D .*got shape \(50,\)"),
        (_channel_mismatch, ValueError, r"trial 1 .*1 channels but trial 0 has 2"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_every_input_error_names_the_trial(mutate, error, message):
    stimuli, responses, _ = make()
    mutate(stimuli, responses)
    with pytest.raises(error, match=message):
        Trials(stimuli, responses, sfreq=100)


def test_no_trials_and_bad_metadata():
    with pytest.raises(ValueError, match="no trials"):
        Trials([], [], sfreq=100)
    stimuli, responses, _ = make()
    with pytest.raises(ValueError, match="3 stimuli but 2 responses"):
        Trials(stimuli, responses[:2], sfreq=100)
    with pytest.raises(ValueError, match="sfreq must be a positive"):
        Trials(stimuli, responses, sfreq=0)
    with pytest.raises(ValueError, match="one centre frequency per band"):
        Trials(stimuli, responses, sfreq=100, freqs=[1, 2])
    with pytest.raises(ValueError, match="name every channel"):
        Trials(stimuli, responses, sfreq=100, channel_names=["a"])
    with pytest.raises(TypeError, match="real numbers"):
        Trials([torch.ones(4, 50, dtype=torch.bool)], [np.zeros((2, 50))], sfreq=100)


def test_repeats_shape_is_checked():
    stimuli, responses, reps = make(repeats=True)
    reps[1] = reps[1][:, :1]
    with pytest.raises(ValueError, match=r"repeats of trial 1 .*\(repeats, 2, 55\); got \(3, 1, 55\)"):
        Trials(stimuli, responses, sfreq=100, repeats=reps)


def test_trial_shorter_than_receptive_field_is_named():
    stimuli, responses, _ = make()
    stimuli[2], responses[2] = stimuli[2][:, :20], responses[2][:, :20]
    trials = Trials(stimuli, responses, sfreq=100, names=["a", "b", "short"])
    trials.check_receptive_field(20)
    trials.check_receptive_field(None)  # recurrent models have no finite window
    with pytest.raises(
        ValueError, match=r"trial 2 \('short'\) has 20 frames, fewer than the model's receptive field of 25"
    ):
        trials.check_receptive_field(25)


def test_index_errors():
    trials = Trials(*make()[:2], sfreq=100)
    with pytest.raises(IndexError, match="trial id 3 out of range"):
        trials[3]
    with pytest.raises(ValueError, match=r"\[5\] out of range"):
        trials.subset([0, 5])


def test_standardization_uses_training_trials_only():
    stimuli, responses, reps = make(repeats=True)
    stimuli[2] = stimuli[2] + 100.0  # a test trial far from the training data must not move the statistics
    trials = Trials(stimuli, responses, sfreq=100, repeats=reps)
    s = Standardization.fit(trials, [0, 1])
    x = np.concatenate([stimuli[0], stimuli[1]], axis=1)
    np.testing.assert_allclose(s.stimulus_mean.numpy(), x.mean(1), rtol=1e-5)
    np.testing.assert_allclose(s.stimulus_std.numpy(), x.std(1), rtol=1e-5)
    z = s.apply(trials)
    train_x = torch.cat([z.stimuli[0], z.stimuli[1]], dim=1)
    assert torch.allclose(train_x.mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(train_x.std(1, unbiased=False), torch.ones(4), atol=1e-5)
    assert float(z.stimuli[2].mean()) > 50  # the shifted test trial stays shifted
    assert torch.allclose(z.repeats[0], s.response(trials.repeats[0]))


def test_standardization_of_a_constant_band_does_not_divide_by_zero():
    stimuli, responses, _ = make()
    for x in stimuli:
        x[1] = 3.0
    s = Standardization.fit(Trials(stimuli, responses, sfreq=100), [0, 1, 2])
    assert (
        s.stimulus_std[1] == 1.0 and torch.isfinite(s.stimulus(torch.as_tensor(stimuli[0], dtype=torch.float32))).all()
    )


def test_window_is_the_stimulus_ending_at_the_frame():
    stimuli, responses, _ = make()  # trials of 50, 55 and 60 frames
    trials = Trials(stimuli, responses, sfreq=100)
    torch.testing.assert_close(trials.window(2, 59, 10), trials[2].stimulus[:, 50:60])
    torch.testing.assert_close(trials.window(0, 9, 10), trials[0].stimulus[:, :10])
    with pytest.raises(ValueError, match=r"frame 8 of trial 0 cannot end a window of 10 frames \(valid 9..49\)"):
        trials.window(0, 8, 10)
    with pytest.raises(ValueError, match=r"frame 55 of trial 1 cannot end a window of 10 frames \(valid 9..54\)"):
        trials.window(1, 55, 10)
    with pytest.raises(ValueError, match=r"trial \[3\] out of range"):
        trials.window(3, 20, 10)


# ------------------------------------------------------------------------------- metadata and shape checks (issue 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channel_names": ["a", "a"]}, r"channel_names must be unique: 'a' names channels \[0, 1\]"),
        ({"names": ["x", "y", "x"]}, r"trial names must be unique: 'x' names trials \[0, 2\]"),
        ({"freqs": [250, np.nan, 1000, 2000]}, r"freqs must be finite; freqs\[1\] is nan \(1 non-finite value\(s\)\)"),
        ({"freqs": [250, 500, 1000, np.inf]}, r"freqs must be finite; freqs\[3\] is inf"),
        (
            {"freqs": [250, 1000, 500, 2000]},
            r"freqs must be strictly increasing \(band 0 the lowest\); freqs\[2\]=500 is not above freqs\[1\]=1000\. "
            r"If the bands run from high to low, reverse both: stimulus\[::-1\], freqs\[::-1\]",
        ),
        ({"freqs": [250, 250, 1000, 2000]}, r"freqs\[1\]=250 is not above freqs\[0\]=250"),
        ({"freqs": [2000, 1000, 500, 250]}, r"freqs\[1\]=1000 is not above freqs\[0\]=2000"),
        ({"freqs": [1, 2, 3, 4, 5]}, r"freqs must give one centre frequency per band \(4\); got 5"),
        (
            {"sfreq": np.array([100.0, 50.0])},
            r"sfreq must be one number \(the frame rate in Hz\); got an array of shape \(2,\)",
        ),
    ],
    ids=[
        "duplicate-channels",
        "duplicate-trials",
        "nan-freqs",
        "inf-freqs",
        "unsorted-freqs",
        "equal-freqs",
        "decreasing-freqs",
        "freqs-length",
        "sfreq-array",
    ],
)
def test_metadata_errors_name_the_argument_and_value(kwargs, message):
    stimuli, responses, _ = make()
    kwargs = {"sfreq": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        Trials(stimuli, responses, **kwargs)


def test_non_numeric_freqs_are_a_type_error():
    stimuli, responses, _ = make()
    with pytest.raises(
        TypeError, match=r"freqs must be numbers \(centre frequencies in Hz\); got \['low', 'b', 'c', 'd'\]"
    ):
        Trials(stimuli, responses, sfreq=100, freqs=["low", "b", "c", "d"])


def test_sfreq_of_size_one_is_a_scalar():
    stimuli, responses, _ = make()
    assert Trials(stimuli, responses, sfreq=np.array([64.0])).sfreq == 64.0  # e.g. read from a file as (1,)
    assert Trials(stimuli, responses, sfreq=torch.tensor(32.0)).sfreq == 32.0
    with pytest.raises(TypeError, match="sfreq must be a number of frames per second; got True"):
        Trials(stimuli, responses, sfreq=True)


@pytest.mark.parametrize(
    "stimulus, response, message",
    [
        (
            np.zeros((0, 50)),
            np.zeros((2, 50)),
            r"stimulus of trial 0 \('trial0'\) has no frequency bands \(shape \(0, 50\)\)",
        ),
        (np.zeros((4, 50)), np.zeros((0, 50)), r"response of trial 0 \('trial0'\) has no channels \(shape \(0, 50\)\)"),
    ],
    ids=["no-bands", "no-channels"],
)
def test_zero_bands_or_channels_are_refused(stimulus, response, message):
    with pytest.raises(ValueError, match=message):
        Trials([stimulus], [response], sfreq=100)


def test_transposed_arrays_are_named_in_the_frame_mismatch_error():
    stimuli, responses, _ = make()  # trials (4, 50), (4, 55), (4, 60); responses (2, T)
    with pytest.raises(
        ValueError,
        match=r"trial 1 .*stimulus has 4 frames but response has 55 .*"
        r"the stimulus looks transposed \(frames, bands\): pass stimulus\.T",
    ):
        Trials([stimuli[0], stimuli[1].T, stimuli[2]], responses, sfreq=100)
    with pytest.raises(
        ValueError,
        match=r"trial 2 .*stimulus has 60 frames but response has 2 .*"
        r"the response looks transposed \(frames, channels\): pass response\.T",
    ):
        Trials(stimuli, [responses[0], responses[1], responses[2].T], sfreq=100)
    with pytest.raises(
        ValueError, match=r"trial 0 .*both look transposed \(frames first\): pass stimulus\.T and response\.T"
    ):
        Trials([x.T for x in stimuli], [y.T for y in responses], sfreq=100)
    with pytest.raises(
        ValueError,
        match=r"trial 1 .*55 frequency bands but trial 0 has 4; every trial needs the same "
        r"bands; its stimulus \(55, 4\) looks transposed: pass stimulus\.T",
    ):
        Trials([stimuli[0], stimuli[1].T], [responses[0], np.ones((2, 4))], sfreq=100)


def test_stimuli_with_more_bands_than_frames_warn_with_the_transpose_hint():
    rng = np.random.default_rng(0)
    stimuli = [rng.random((30, 8)), rng.random((30, 40)), rng.random((30, 12))]  # (frames, bands) mistaken for (F, T)?
    responses = [rng.random((2, x.shape[1])) for x in stimuli]
    with pytest.warns(
        UserWarning,
        match=r"stimulus of trial\(s\) \[0, 2\] has more frequency bands than frames "
        r"\(trial 0: shape \(30, 8\), read as 30 bands x 8 frames\).*pass stimulus\.T",
    ):
        Trials(stimuli, responses, sfreq=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plausible shapes warn about nothing
        Trials(*make()[:2], sfreq=100)


# ------------------------------------------------------------------------------- streaming standardization fit


def test_standardization_matches_numpy_on_pooled_data_with_far_apart_means_and_lengths():
    rng = np.random.default_rng(1)
    lengths, offsets = [3, 2000, 57], [0.0, 1e4, -50.0]
    stimuli, responses = [], []
    for n, offset in zip(lengths, offsets):
        stimuli.append(
            np.stack(
                [
                    1e4 + 1e-2 * rng.standard_normal(n),  # large mean, tiny spread: sum(x^2) - n mean^2 cancels
                    offset + rng.standard_normal(n),  # trial means far apart: the between-trial term dominates
                    np.full(n, 0.1),  # constant: std 1
                ]
            )
        )
        responses.append(np.stack([-1e4 + 1e-2 * rng.standard_normal(n), offset + 3 * rng.standard_normal(n)]))
    trials = Trials(stimuli, responses, sfreq=100)
    s = Standardization.fit(trials, [0, 1, 2])
    x = np.concatenate([t.numpy() for t in trials.stimuli], axis=1).astype(np.float64)
    y = np.concatenate([t.numpy() for t in trials.responses], axis=1).astype(np.float64)
    np.testing.assert_allclose(s.stimulus_mean.numpy(), x.mean(1), rtol=1e-7)
    np.testing.assert_allclose(s.stimulus_std.numpy()[:2], x.std(1)[:2], rtol=2e-7)
    assert s.stimulus_std[2] == 1.0 and s.stimulus_mean[2] == np.float32(0.1)
    np.testing.assert_allclose(s.response_mean.numpy(), y.mean(1), rtol=1e-7)
    np.testing.assert_allclose(s.response_std.numpy(), y.std(1), rtol=2e-7)
    assert s.stimulus_mean.dtype == s.response_std.dtype == torch.float32


def test_standardization_of_a_band_constant_within_but_not_across_trials():
    x0, x1 = np.full((1, 30), 3.0), np.full((1, 10), 5.0)
    s = Standardization.fit(Trials([x0, x1], [np.ones((1, 30)), np.ones((1, 10))], sfreq=100), [0, 1])
    assert float(s.stimulus_mean[0]) == 3.5 and float(s.stimulus_std[0]) == pytest.approx(np.sqrt(0.75), rel=1e-7)
    assert float(s.response_std[0]) == 1.0  # constant over all training trials


def _tensors(value):
    """The tensors in a torch function's (nested tuple / list / dict) arguments or result."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class _TorchAllocations(TorchFunctionMode):
    """Bytes of every new tensor storage a torch function returns while active: an upper bound of the peak of
    torch's allocations (tracemalloc does not see them)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in _tensors((args, kwargs))}
        for t in _tensors(out):
            if t.untyped_storage().data_ptr() not in inputs:  # not a view
                self.bytes += t.untyped_storage().nbytes()
        return out


def test_standardization_fit_needs_about_one_trial_of_extra_memory_not_all_data():
    rng = np.random.default_rng(0)
    stimuli = [rng.random((64, 3000), dtype=np.float32) for _ in range(20)]
    responses = [rng.random((4, 3000), dtype=np.float32) for _ in range(20)]
    trials = Trials(stimuli, responses, sfreq=100)
    one_trial = stimuli[0].nbytes  # 768 kB; all stimuli 15.4 MB
    with _TorchAllocations() as allocated:
        Standardization.fit(trials, range(20))
    tracemalloc.start()
    try:
        Standardization.fit(trials, range(20))
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    extra = allocated.bytes + numpy_peak
    assert extra < 3 * one_trial, (
        f"fit allocated {extra / 1e6:.1f} MB (torch {allocated.bytes / 1e6:.1f} MB); one trial is {one_trial / 1e6:.2f} MB"
    )


def test_repeated_trial_ids_are_refused_by_subset_and_fit():
    trials = Trials(*make()[:2], sfreq=100)
    with pytest.raises(
        ValueError, match=r"trial ids \[0, 2, 0\] list trial\(s\) \[0\] more than once; give each trial id once"
    ):
        trials.subset([0, 2, 0])
    with pytest.raises(ValueError, match=r"standardization trial ids \[1, 1\] list trial\(s\) \[1\] more than once"):
        Standardization.fit(trials, [1, 1])
