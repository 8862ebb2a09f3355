"""Tests of the synthetic ground truth (dstrf.data.synthetic)."""

import numpy as np
import pytest

from dstrf.data.synthetic import NEURON_TYPES, make_stimuli, make_synthetic, synthetic_trials
from dstrf.data.trials import Trials

SMALL = dict(n_trials=4, n_frames=1000, seed=3)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(**SMALL)


def drive(x, w):
    """Direct causal recomputation: sum_{f,k} w[f, k] x[f, t - k], zeros before the trial (no centring)."""
    n = x.shape[1]
    d = np.zeros(n)
    for k in range(w.shape[1]):
        for f in range(w.shape[0]):
            d[k:] += w[f, k] * x[f, : n - k]
    return d


def cat(trials_list):
    return np.concatenate(trials_list, axis=-1)


def corr(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


def stim(data):
    return [x.numpy().astype(np.float64) for x in data.trials.stimuli]


def channel(data, name):
    i = data.trials.channel_names.index(name)
    return [s[i] for s in data.noiseless]


def test_deterministic_and_seeded():
    a, b, c = make_synthetic(**SMALL), make_synthetic(**SMALL), make_synthetic(**{**SMALL, "seed": 4})

    def arrays(d):
        return d.trials.stimuli + d.trials.responses + d.trials.repeats

    for x, y in zip(arrays(a), arrays(b)):
        assert np.array_equal(x.numpy(), y.numpy())
    for name in a.filters:
        assert np.array_equal(a.filters[name], b.filters[name])
        assert not np.allclose(a.filters[name], c.filters[name])
    assert not np.allclose(a.trials.stimuli[0].numpy(), c.trials.stimuli[0].numpy())
    s1, f1 = make_stimuli(2, 300, seed=5)
    s2, _ = make_stimuli(2, 300, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(s1, s2))
    # the noise stream is separate: the noise settings change neither stimuli nor filters
    d = make_synthetic(**{**SMALL, "snr": 3.0, "n_repeats": 2})
    assert np.array_equal(d.trials.stimuli[1].numpy(), a.trials.stimuli[1].numpy())
    assert np.array_equal(d.filters["ln"], a.filters["ln"])


def test_shapes_dtypes_and_stimulus_statistics(data):
    t = data.trials
    assert isinstance(t, Trials) and t.n_trials == 4 and t.n_freqs == 32 and t.n_channels == len(NEURON_TYPES)
    assert t.lengths == [1000] * 4 and t.sfreq == 100.0
    assert t.channel_names == list(NEURON_TYPES) and data.neuron_types == list(NEURON_TYPES)
    assert all(r.shape == (4, 5, 1000) for r in t.repeats)
    assert all(s.shape == (5, 1000) for s in data.noiseless)
    assert data.filters["linear"].shape == (32, 40) and data.filters["shape_change"].shape == (2, 32, 40)
    for w in data.filters.values():
        for wi in w.reshape(-1, 32, 40):
            assert np.isclose(np.linalg.norm(wi), 1.0)
    x = cat(stim(data))
    assert x.min() == 0.0 and 1.5 < x.max() < 5
    silent = (x == 0).all(0).mean()
    assert 0.05 < silent < 0.5  # pauses and gaps sit at the floor
    assert np.isclose(t.freqs[0], 200) and np.isclose(t.freqs[-1], 8000) and np.all(np.diff(t.freqs) > 0)
    stimuli, freqs = make_stimuli(3, [100, 250, 50], n_freqs=8, fmin=100.0, fmax=4000.0)
    assert [s.shape for s in stimuli] == [(8, 100), (8, 250), (8, 50)] and stimuli[0].dtype == np.float32
    assert freqs.min() >= 100 - 1e-9 and freqs.max() <= 4000 + 1e-9
    v = make_synthetic(n_trials=2, n_frames=[300, 500], neurons=["linear", "ln", "linear"], n_repeats=2)
    assert v.trials.lengths == [300, 500] and v.trials.channel_names == ["linear_1", "ln", "linear_2"]
    assert set(v.filters) == {"linear_1", "ln", "linear_2"}


def test_linear_neuron_is_its_filter(data):
    w = data.filters["linear"]
    d = cat([drive(x, w) for x in stim(data)])
    assert corr(d, cat(channel(data, "linear"))) > 0.999
    # reversing the lag order breaks it: the filter is stored with k = 0 as the current frame
    assert corr(cat([drive(x, w[:, ::-1]) for x in stim(data)]), cat(channel(data, "linear"))) < 0.9


def test_ln_is_rectified(data):
    s = cat(channel(data, "ln"))
    at_min = np.isclose(s, s.min()).mean()
    assert 0.2 < at_min < 0.9
    d = cat([drive(x, data.filters["ln"]) for x in stim(data)])
    on = s > s.min()
    assert corr(s[on], d[on]) > 0.999


def test_gain_change_varies_gain(data):
    x = stim(data)
    s = cat(channel(data, "gain_change"))
    d = cat([drive(xi, data.filters["gain_change"]) for xi in x])
    e = cat([np.convolve(xi.sum(0), np.ones(20))[: xi.shape[1]] for xi in x])  # causal 200 ms energy
    lo, hi = e <= np.quantile(e, 1 / 3), e >= np.quantile(e, 2 / 3)
    gain_lo, gain_hi = (np.polyfit(d[m], s[m], 1)[0] for m in (lo, hi))
    assert gain_lo > 1.5 * gain_hi > 0
    f = cat(data.latents["gain_change"])
    assert f.max() / f.min() >= 2


def test_temporal_hold_uses_several_latencies(data):
    x = stim(data)
    w = data.filters["temporal_hold"]
    assert np.all(w[:, 40 - 8 + 1 :] == 0)
    shifted = [np.concatenate([np.zeros((32, j)), w[:, : 40 - j]], axis=1) for j in range(8)]
    dj = np.stack([cat([drive(xi, wj) for xi in x]) for wj in shifted])
    mu = cat(x).mean(1)
    dj -= np.array([(wj * mu[:, None]).sum() for wj in shifted])[:, None]  # the centring of the generator
    s = cat(channel(data, "temporal_hold"))
    assert corr(s, np.maximum(dj, 0).max(0)) > 0.999
    assert corr(s, np.maximum(dj[0], 0)) < 0.98  # not a single-latency LN neuron
    active = dj.max(0) > 0
    wins = np.bincount(dj[:, active].argmax(0), minlength=8) / active.sum()
    assert (wins > 0.02).sum() >= 3
    top2 = np.sort(dj, axis=0)[-2:]
    clear = active & (top2[1] - top2[0] > 1e-6)  # no near-ties between shifts
    assert np.array_equal(cat(data.latents["temporal_hold"])[clear], dj[:, clear].argmax(0))
    assert np.all(cat(data.latents["temporal_hold"])[~active] == -1)


def test_shape_change_switches_filters(data):
    a, b = data.filters["shape_change"]
    assert abs(corr(a, b)) < 0.5
    g = cat(data.latents["shape_change"])
    assert (g < 0.2).mean() > 0.1 and (g > 0.8).mean() > 0.1
    x = stim(data)
    mu = cat(x).mean(1)
    da = cat([drive(xi, a) for xi in x]) - (a * mu[:, None]).sum()
    db = cat([drive(xi, b) for xi in x]) - (b * mu[:, None]).sum()
    s = cat(channel(data, "shape_change"))
    assert corr(s, g * da + (1 - g) * db) > 0.999
    assert corr(s, da) < 0.9 and corr(s, db) < 0.9
    # low-band context opens the gate towards A
    width = 20
    low = cat([np.convolve(xi[:16].sum(0) - xi[16:].sum(0), np.ones(width))[: xi.shape[1]] for xi in x])
    assert corr(low, g) > 0.8


def test_gaussian_noise_repeats_and_ceiling(data):
    s = cat(data.noiseless)
    reps = np.concatenate([r.numpy() for r in data.trials.repeats], axis=-1)
    noise_var = (reps - s[None]).var(axis=(0, 2))
    assert np.allclose(noise_var / s.var(1), 1.0, rtol=0.2)
    assert np.allclose(s.std(1), 1.0)
    for r, y in zip(data.trials.repeats, data.trials.responses):
        assert np.allclose(r.numpy().mean(0), y.numpy(), atol=1e-5)
    c = data.ceiling()
    assert c.shape == (5,) and np.all((c > 0) & (c < 1))
    more = make_synthetic(**{**SMALL, "n_repeats": 16}).ceiling()
    better = make_synthetic(**{**SMALL, "snr": 4.0}).ceiling()
    assert np.all(more > c) and np.all(better > c)
    assert np.allclose(c, np.sqrt(4 / 5), atol=0.03)  # R / (R + 1/snr)


def test_poisson_noise():
    p = make_synthetic(**{**SMALL, "noise": "poisson", "n_repeats": 3})
    reps = np.concatenate([r.numpy() for r in p.trials.repeats], axis=-1)
    assert reps.dtype == np.float32 and reps.min() >= 0 and np.array_equal(reps, np.round(reps))
    rate = cat(p.noiseless)
    assert rate.min() >= 0
    ratio = rate.var(1) / (reps - rate[None]).var(axis=(0, 2))
    assert np.allclose(ratio, 1.0, rtol=0.2)  # snr keeps its meaning
    lin = cat([drive(x, p.filters["linear"]) for x in stim(p)])
    assert corr(rate[0], lin) > 0.999
    c = p.ceiling()
    assert np.all((c > 0) & (c < 1))


def test_synthetic_trials_matches():
    t = synthetic_trials(n_trials=2, n_frames=200, neurons=["ln"], seed=7)
    assert isinstance(t, Trials)
    d = make_synthetic(n_trials=2, n_frames=200, neurons=["ln"], seed=7)
    assert np.array_equal(t.responses[1].numpy(), d.trials.responses[1].numpy())


def test_default_is_fast():
    import time

    start = time.perf_counter()
    make_synthetic()
    assert time.perf_counter() - start < 3.0  # ~0.13 s on an idle core; slack for loaded CI


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"neurons": ["linear", "cubic"]}, "neurons"),
        ({"neurons": []}, "neurons"),
        ({"noise": "laplace"}, "noise"),
        ({"n_trials": 0}, "n_trials"),
        ({"n_frames": 0}, "n_frames"),
        ({"n_frames": [100, 100]}, "n_frames"),
        ({"hold": 40}, "hold"),
        ({"hold": 0}, "hold"),
        ({"lags": 0}, "lags"),
        ({"n_repeats": 0}, "n_repeats"),
        ({"snr": 0.0}, "snr"),
        ({"snr": -1}, "snr"),
        ({"n_freqs": 1}, "n_freqs"),
        ({"sfreq": 0}, "sfreq"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic(**{"n_trials": 3, "n_frames": 100, **kwargs})


def test_unknown_type_lists_valid():
    with pytest.raises(ValueError, match="temporal_hold"):
        make_synthetic(neurons=["cubic"])
    with pytest.raises(ValueError, match="fmin"):
        make_stimuli(1, 10, fmin=500.0, fmax=100.0)
