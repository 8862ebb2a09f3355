import numpy as np
import pytest
import torch

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
        (_nan_stimulus, ValueError, r"stimulus of trial 1 \('trial1'\) contains 1 non-finite value\(s\) \(NaN\), the first at index \(2, 7\)"),
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
    with pytest.raises(ValueError, match=r"trial 2 \('short'\) has 20 frames, fewer than the model's receptive field of 25"):
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
    assert s.stimulus_std[1] == 1.0 and torch.isfinite(s.stimulus(torch.as_tensor(stimuli[0], dtype=torch.float32))).all()


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
