"""Synthetic ground truth: speech-like spectrograms and neurons with known (non)linearities.

Everything is seeded and deterministic (numpy ``Generator`` streams ``[seed, 0]`` for stimuli, ``[seed, 1]`` for
filters, ``[seed, 2]`` for noise, so changing the noise never changes the stimuli or filters), fast and offline.

Conventions (README, "Conventions"): stimuli ``(F, T)``, responses ``(N, T)``, repeats ``(R, N, T)``, filters
``(F, L)`` with lag index k = k frames in the past (k = 0 is the current frame). Frames before a trial start are
silence, i.e. the stimulus floor 0. The drive of a filter W is

    d(t) = sum_{f, k} W[f, k] * (x_f(t - k) - mu_f),      x_f(t) = 0 for t < 0,

with mu_f the per-band mean over all trials, so d is linear in the stimulus with an intercept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dstrf.data.trials import Trials

__all__ = ["NEURON_TYPES", "NOISE_TYPES", "SyntheticData", "make_stimuli", "make_synthetic", "synthetic_trials"]

NEURON_TYPES = ("linear", "ln", "gain_change", "temporal_hold", "shape_change")
NOISE_TYPES = ("gaussian", "poisson")
CONTEXT_S = 0.2  # window (s) of the causal running means of stimulus energy (gain_change, shape_change)
LN_QUANTILE = 0.6  # "ln" threshold theta: this quantile of its drive (fires ~40% of the frames)
GAIN_C = 4.0  # gain_change: s = d / (1 + GAIN_C * e), e = energy / its 95th percentile -> factor 1 .. ~5
GATE_K = 4.0  # shape_change: g = sigmoid(GATE_K * z), z = standardized low-minus-high band energy


def _lengths(n_trials, n_frames) -> list[int]:
    if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)) or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1; got {n_trials!r}")
    lengths = [n_frames] * int(n_trials) if isinstance(n_frames, (int, np.integer)) else list(n_frames)
    if len(lengths) != n_trials:
        raise ValueError(f"n_frames must be an int or one length per trial ({n_trials}); got {len(lengths)} lengths")
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in lengths):
        raise ValueError(f"n_frames must be positive integers; got {n_frames!r}")
    return [int(n) for n in lengths]


def _running_mean(e: np.ndarray, width: int) -> np.ndarray:
    """Causal mean of ``e`` (..., T) over the last ``width`` frames (the current one included), zeros before t=0."""
    c = np.cumsum(np.concatenate([np.zeros(e.shape[:-1] + (width,)), e], axis=-1), axis=-1)
    return (c[..., width:] - c[..., :-width]) / width


def _syllables(rng: np.random.Generator, n: int, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Syllable envelope (T,) in [0, 1] (exact zeros in gaps and pauses) and a per-syllable spectral slope (T,)."""
    env, slope = np.zeros(n), np.zeros(n)
    pos = -rng.uniform(0, 0.3) * sfreq
    while pos < n:
        if rng.random() < 0.06:  # silent pause of 200-600 ms
            pos += rng.uniform(0.2, 0.6) * sfreq
            continue
        ioi = sfreq / rng.uniform(2.0, 8.0)  # syllable rate 2-8 Hz
        dur = ioi * rng.uniform(0.8, 0.95)  # the rest of the interval is a gap
        idx = np.arange(max(int(np.ceil(pos)), 0), min(int(np.ceil(pos + dur)), n))
        env[idx] = rng.uniform(0.6, 1.0) * np.sqrt(np.clip(np.sin(np.pi * (idx - pos) / dur), 0, None))
        slope[idx] = rng.uniform(-1.5, 1.5)  # vowel-like (low-heavy) .. fricative-like (high-heavy)
        pos += ioi
    return env, slope


def make_stimuli(n_trials, n_frames, n_freqs=32, sfreq=100.0, fmin=200.0, fmax=8000.0, seed=0):
    """Speech-like log-amplitude spectrograms.

    ``x_f(t) = max(0, a(t) * (1.4 + 0.6 * r_f(t) + b(t) * u_f + 0.1 * eps))``: ``a(t)`` a syllable envelope
    (random 2-8 Hz onsets, gaps and 200-600 ms silent pauses where ``x = 0``, the floor), ``r`` a sum of three
    dynamic moving ripples ``cos(2 pi (int w(t) dt + Omega * o_f) + phi) / sqrt(3)`` (density ``|Omega| <= 1.5``
    cycles/octave, rate ``w(t)`` 1-8 Hz drifting slowly), ``u_f`` in [-0.5, 0.5] the band's octave position and
    ``b(t)`` in [-1.5, 1.5] a spectral tilt drawn per syllable (vowel-like low-heavy .. fricative-like
    high-heavy). Values are roughly in [0, 3] ("dB above the floor", scaled); about 20% of frames are silent.

    Parameters
    ----------
    n_trials : int
    n_frames : int or sequence of int
        Frames per trial (one value for all, or one per trial).
    n_freqs, sfreq, fmin, fmax, seed
        Number of bands, frame rate (Hz), lowest and highest centre frequency (Hz), random seed.

    Returns
    -------
    stimuli : list of float32 arrays (F, T_i)
    freqs : float64 array (F,)
        Log-spaced centre frequencies in Hz, increasing from fmin to fmax.
    """
    lengths = _lengths(n_trials, n_frames)
    if isinstance(n_freqs, bool) or not isinstance(n_freqs, (int, np.integer)) or n_freqs < 2:
        raise ValueError(f"n_freqs must be an integer >= 2; got {n_freqs!r}")
    if not sfreq > 0:
        raise ValueError(f"sfreq must be positive; got {sfreq!r}")
    if not 0 < fmin < fmax:
        raise ValueError(f"need 0 < fmin < fmax; got fmin={fmin!r}, fmax={fmax!r}")
    rng = np.random.default_rng([seed, 0])
    freqs = np.geomspace(fmin, fmax, n_freqs)
    octs = np.log2(freqs / fmin)
    u = octs / octs[-1] - 0.5
    stimuli = []
    for n in lengths:
        env, slope = _syllables(rng, n, sfreq)
        t = np.arange(n) / sfreq
        ripple = np.zeros((n_freqs, n))
        for _ in range(3):
            drift = np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
            rate = rng.uniform(2.0, 5.0) * np.exp(0.45 * drift)  # 1-8 Hz, drifting over seconds
            phase = 2 * np.pi * np.cumsum(rate) / sfreq
            density = rng.uniform(-1.5, 1.5)
            ripple += np.cos(phase[None] + 2 * np.pi * density * octs[:, None] + rng.uniform(0, 2 * np.pi))
        level = 1.4 + 0.6 * ripple / np.sqrt(3) + slope[None] * u[:, None] + 0.1 * rng.standard_normal((n_freqs, n))
        stimuli.append(np.clip(env[None] * level, 0, None).astype(np.float32))
    return stimuli, freqs


def _strf(rng, octs, lags, sfreq, bf=None) -> np.ndarray:
    """Gabor-like STRF (F, L): excitation at (bf, latency 20-60 ms), a weaker inhibitory sideband at the same
    latency 0.8 octave away and a later inhibitory rebound at bf; unit Frobenius norm. Excitation dominates
    (positive net weight), so silence (x = 0 < mu) gives a below-average drive."""
    bf = rng.uniform(0.2, 0.8) * octs[-1] if bf is None else bf
    lat, tw, bw = rng.uniform(0.02, 0.06), 0.015, 0.35  # latency, temporal and spectral widths (s, s, oct)
    side = bf + rng.choice([-0.8, 0.8])
    k = np.arange(lags) / sfreq

    def g(x, m, s):
        return np.exp(-0.5 * ((x - m) / s) ** 2)

    w = (
        g(octs, bf, bw)[:, None] * g(k, lat, tw)[None]
        - 0.4 * g(octs, side, bw)[:, None] * g(k, lat, tw)[None]
        - 0.25 * g(octs, bf, 1.2 * bw)[:, None] * g(k, lat + 2.5 * tw, 1.5 * tw)[None]
    )
    return w / np.linalg.norm(w)


def _drives(stimuli, mu, filters) -> list[np.ndarray]:
    """Causal drives ``d_m(t) = sum_{f,k} W_m[f,k] (x_f(t-k) - mu_f)`` of filters (M, F, L): per trial (M, T)."""
    m, _, lags = filters.shape
    out = []
    for x in stimuli:
        xc = np.concatenate([np.zeros((x.shape[0], lags - 1)), x.astype(np.float64)], axis=1) - mu[:, None]
        n = x.shape[1]
        out.append(sum(filters[:, :, k] @ xc[:, lags - 1 - k : lags - 1 - k + n] for k in range(lags)))
    return out


@dataclass
class SyntheticData:
    """Synthetic stimuli, responses and the ground truth that generated them.

    Attributes
    ----------
    trials : Trials
        Responses are the mean over repeats; ``trials.repeats`` holds the (R, N, T) single repeats.
    noiseless : list of (N, T) float64 arrays
        The true response of every channel, in the units of the responses (the Poisson rate for Poisson noise).
    filters : dict
        Channel name -> its true filter (F, L), or (2, F, L) = (A, B) for "shape_change".
    neuron_types : list of str
        The type of every channel.
    latents : dict
        Channel name -> per trial (T,) hidden state: the divisive factor ``1 + c e(t)`` ("gain_change"), the gate
        ``g(t)`` ("shape_change"), the winning shift ``argmax_j d_j(t)`` ("temporal_hold"; -1 where no d_j > 0).
    """

    trials: Trials
    noiseless: list[np.ndarray]
    filters: dict[str, np.ndarray]
    neuron_types: list[str]
    latents: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def ceiling(self) -> np.ndarray:
        """Per channel (N,): Pearson r of the noiseless and the trial-averaged response over all trials concatenated."""
        s = np.concatenate(self.noiseless, axis=1)
        y = np.concatenate([r.numpy() for r in self.trials.responses], axis=1).astype(np.float64)
        s, y = s - s.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
        return (s * y).sum(1) / np.sqrt((s * s).sum(1) * (y * y).sum(1))


def make_synthetic(
    n_trials=10,
    n_frames=2000,
    n_freqs=32,
    sfreq=100.0,
    neurons=NEURON_TYPES,
    lags=40,
    hold=8,
    n_repeats=4,
    noise="gaussian",
    snr=1.0,
    seed=0,
) -> SyntheticData:
    """Synthetic dataset of neurons with known receptive fields and nonlinearities.

    With ``d`` the drive of a unit-norm filter (module docstring), ``e(t)`` the causal mean over the last 200 ms
    of the total energy ``sum_f x_f`` and ``c_low``/``c_high`` the same for the lower/upper half of the bands:

    - ``linear``: ``s = d``;
    - ``ln``: ``s = max(d - theta, 0)``, theta the 60% quantile of d;
    - ``gain_change``: ``s = d / (1 + 4 e / e95)``, e95 the 95th percentile of e (factor 1 to ~5);
    - ``temporal_hold``: ``s = max_{0 <= j < hold} max(d_j, 0)``, d_j the drive of the filter delayed by j
      lags (the returned filter is j = 0; its last ``hold - 1`` lags are zero so every shift fits);
    - ``shape_change``: ``s = g d_A + (1 - g) d_B``, ``g = sigmoid(4 z)``, z = ``c_low - c_high``
      standardized over all frames; A is tuned to low and B to high frequencies.

    Each s is divided by its standard deviation over all trials (no mean removed, so linear stays affine).
    Noise: ``"gaussian"``: repeat ``y_r = s + eps / sqrt(snr)``, eps ~ N(0, 1); ``"poisson"``: ``y_r ~
    Poisson(lam)``, ``lam = a (s - min s) / mean(s - min s)`` with ``a = snr / var((s - min s) / mean(s - min s))``
    so that signal variance / noise variance of one repeat is ``snr`` too; ``noiseless`` is then ``lam``.

    Parameters
    ----------
    n_trials, n_frames, n_freqs, sfreq, seed
        As in :func:`make_stimuli` (default 10 trials x 2000 frames x 32 bands at 100 Hz).
    neurons : sequence of str
        One entry of ``NEURON_TYPES`` per channel; a repeated type gets channel names ``type_1, type_2, ...``.
    lags : int
        Filter length L in frames (default 40 = 400 ms at 100 Hz).
    hold : int
        Number of latencies of the temporal_hold neuron, 1 <= hold < lags.
    n_repeats : int
        Repeats R per trial.
    noise : {"gaussian", "poisson"}
    snr : float
        Signal variance / noise variance of one repeat (> 0).

    Returns
    -------
    SyntheticData
    """
    lengths = _lengths(n_trials, n_frames)
    neurons = [neurons] if isinstance(neurons, str) else [str(n) for n in neurons]
    if not neurons:
        raise ValueError(f"neurons must name at least one of {NEURON_TYPES}; got none")
    bad = [n for n in neurons if n not in NEURON_TYPES]
    if bad:
        raise ValueError(f"neurons: unknown neuron type(s) {bad}; valid types are {NEURON_TYPES}")
    for name, value, low in (("lags", lags, 1), ("hold", hold, 1), ("n_repeats", n_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if hold >= lags:
        raise ValueError(f"hold must be smaller than lags ({lags}); got hold={hold!r}")
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {NOISE_TYPES}; got {noise!r}")
    if not (isinstance(snr, (int, float, np.number)) and np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number; got {snr!r}")

    stimuli, freqs = make_stimuli(n_trials, lengths, n_freqs, sfreq, seed=seed)
    octs = np.log2(freqs / freqs[0])
    mu = np.concatenate(stimuli, axis=1).mean(1, dtype=np.float64)
    width = max(int(round(CONTEXT_S * sfreq)), 1)
    energy = [_running_mean(x.sum(0, dtype=np.float64), width) for x in stimuli]
    half = n_freqs // 2
    contrast = [
        _running_mean(x[:half].sum(0, dtype=np.float64) - x[half:].sum(0, dtype=np.float64), width) for x in stimuli
    ]
    e95 = max(np.percentile(np.concatenate(energy), 95), 1e-12)
    cc = np.concatenate(contrast)
    z_mean, z_std = cc.mean(), max(cc.std(), 1e-12)

    counts = {n: neurons.count(n) for n in neurons}
    seen: dict[str, int] = {}
    names = []
    for n in neurons:
        seen[n] = seen.get(n, 0) + 1
        names.append(f"{n}_{seen[n]}" if counts[n] > 1 else n)

    rng = np.random.default_rng([seed, 1])
    filters, latents, signals = {}, {}, []
    for kind, name in zip(neurons, names):
        if kind == "shape_change":
            w = np.stack(
                [
                    _strf(rng, octs, lags, sfreq, bf=rng.uniform(0.15, 0.3) * octs[-1]),
                    _strf(rng, octs, lags, sfreq, bf=rng.uniform(0.7, 0.85) * octs[-1]),
                ]
            )
            d_a, d_b = zip(*(tuple(d) for d in _drives(stimuli, mu, w)))
            gate = [1 / (1 + np.exp(-GATE_K * (c - z_mean) / z_std)) for c in contrast]
            s = [g * a + (1 - g) * b for g, a, b in zip(gate, d_a, d_b)]
            latents[name] = gate
        elif kind == "temporal_hold":
            w = _strf(rng, octs, lags, sfreq)
            w[:, lags - hold + 1 :] = 0
            w /= np.linalg.norm(w)
            shifted = np.stack(
                [np.concatenate([np.zeros((n_freqs, j)), w[:, : lags - j]], axis=1) for j in range(hold)]
            )
            d = _drives(stimuli, mu, shifted)
            s = [np.maximum(dj, 0).max(0) for dj in d]
            latents[name] = [np.where(dj.max(0) > 0, dj.argmax(0), -1) for dj in d]
        else:
            w = _strf(rng, octs, lags, sfreq)
            d = [dd[0] for dd in _drives(stimuli, mu, w[None])]
            if kind == "ln":
                theta = np.quantile(np.concatenate(d), LN_QUANTILE)
                s = [np.maximum(dd - theta, 0) for dd in d]
            elif kind == "gain_change":
                factor = [1 + GAIN_C * e / e95 for e in energy]
                s = [dd / fa for dd, fa in zip(d, factor)]
                latents[name] = factor
            else:
                s = d
        filters[name] = w
        sd = max(np.concatenate(s).std(), 1e-12)
        signals.append([si / sd for si in s])
    noiseless = [np.stack([sig[i] for sig in signals]) for i in range(len(lengths))]

    rng = np.random.default_rng([seed, 2])
    if noise == "poisson":
        flat = np.concatenate(noiseless, axis=1)
        lo = flat.min(1, keepdims=True)
        mean = np.maximum((flat - lo).mean(1, keepdims=True), 1e-12)
        scale = snr / np.maximum(((flat - lo) / mean).var(1, keepdims=True), 1e-12)
        noiseless = [scale * (s - lo) / mean for s in noiseless]
        repeats = [rng.poisson(np.broadcast_to(s, (n_repeats,) + s.shape)).astype(np.float32) for s in noiseless]
    else:
        repeats = [
            (s + rng.standard_normal((n_repeats,) + s.shape) / np.sqrt(snr)).astype(np.float32) for s in noiseless
        ]
    trials = Trials(
        stimuli,
        [r.mean(0) for r in repeats],
        sfreq,
        freqs=freqs,
        channel_names=names,
        repeats=repeats,
        names=[f"synthetic{i}" for i in range(len(lengths))],
    )
    return SyntheticData(trials, noiseless, filters, list(neurons), latents)


def synthetic_trials(**kwargs) -> Trials:
    """``make_synthetic(**kwargs).trials``: the Trials alone, e.g. as a Hydra ``_target_``."""
    return make_synthetic(**kwargs).trials
