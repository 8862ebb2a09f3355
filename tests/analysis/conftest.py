"""dSTRFs with known structure, and a brute-force reference of the measures' definitions.

Filters are lag-indexed like dSTRFs: ``W[t, f, k]``, k = lags into the past. Features are zero-mean over
frequency at every lag (an excitatory band with inhibitory flanks, like an STRF's sidebands), so a feature
keeps mean zero wherever it is shifted or cut by the window edge.
"""

import numpy as np
import scipy.stats


def feature(rng, n_freqs, width=4, centre=None):
    """``(F, width)`` zero-mean-over-frequency feature at a random (or the given) band."""
    f0 = rng.uniform(min(3, n_freqs / 2), max(n_freqs - 3, n_freqs / 2)) if centre is None else centre
    f = np.arange(n_freqs)
    profile = np.exp(-0.5 * ((f - f0) / 1.0) ** 2) - 0.5 * np.exp(-0.5 * ((f - f0) / 2.5) ** 2)
    profile -= profile.mean()
    return profile[:, None] * np.hanning(width + 2)[1:-1][None, :]


def smooth_strf(rng, n_freqs, n_lags):
    """A generic (not zero-mean) filter ``(F, L)``."""
    w = np.zeros((n_freqs, n_lags))
    w[:, 2:6] += feature(rng, n_freqs)
    w += 0.3 * rng.standard_normal((n_freqs, n_lags))
    return w


def linear(T, n_freqs, n_lags, rng):
    return np.broadcast_to(smooth_strf(rng, n_freqs, n_lags), (T, n_freqs, n_lags)).copy()


def gains(T, rng):
    """A positive gain time course g(t) with large variation."""
    return np.exp(0.6 * np.sin(np.arange(T) / 7.0) + 0.3 * rng.standard_normal(T))


def pure_gain(T, n_freqs, n_lags, rng):
    return gains(T, rng)[:, None, None] * smooth_strf(rng, n_freqs, n_lags)[None]


def held(T, n_freqs, n_lags, h, rng, width=4):
    """Runs of h frames in which one input event drives the neuron at growing latency: frame j of a run holds
    the feature at lags ``base + j .. base + j + width - 1`` (base random in [0, L // 2) per run, a random
    gain per run). Returns W ``(T, F, L)`` and the feature's latency per frame."""
    W, latency = np.zeros((T, n_freqs, n_lags)), np.zeros(T, dtype=int)
    feat = feature(rng, n_freqs, width)
    t = 0
    while t < T:
        base, gain = rng.integers(0, n_lags // 2), rng.uniform(0.5, 2.0)
        for j in range(min(h, T - t)):
            W[t, :, base + j : base + j + width] = gain * feat
            latency[t] = base + j
            t += 1
    return W, latency


def switch(T, n_freqs, n_lags, rng):
    """A switch between two filters of different shape (low- and high-frequency), in runs of 5-30 frames."""
    a = np.zeros((n_freqs, n_lags))
    b = np.zeros((n_freqs, n_lags))
    a[:, 3:7] = feature(rng, n_freqs, centre=n_freqs * 0.25)
    b[:, 3:7] = feature(rng, n_freqs, centre=n_freqs * 0.75)
    runs = np.cumsum(rng.integers(5, 30, size=T))
    which = (np.searchsorted(runs, np.arange(T), side="right") % 2).astype(bool)
    return np.where(which[:, None, None], a[None], b[None])


def with_zero_frames(W, where, length):
    """W ``(T, ...)`` with ``length`` all-zero frames inserted before each frame index in ``where``."""
    pieces, last = [], 0
    for p in sorted(where):
        pieces += [W[last:p], np.zeros((length,) + W.shape[1:], W.dtype)]
        last = p
    return np.concatenate(pieces + [W[last:]])


# --- brute force, straight from the definitions -------------------------------------------------------------


def shift(w, s):
    """``(S_s w)[f, k] = w[f, k + s]``, zero-filled, for one (F, L) filter."""
    out = np.zeros_like(w)
    L = w.shape[-1]
    for k in range(L):
        if 0 <= k + s < L:
            out[:, k] = w[:, k + s]
    return out


def corr(x, y):
    x, y = x.ravel(), y.ravel()
    if x.var() <= 1e-12 * (x**2).mean() or y.var() <= 1e-12 * (y**2).mean():  # constant: no correlation
        return np.nan
    return np.corrcoef(x, y)[0, 1]


def brute_complexity(X):
    s = np.linalg.svd(X.reshape(len(X), -1), compute_uv=False)
    return s.sum() / s.max()


def brute_hold(X, tau_max, alpha=0.05):
    nonzero = [np.any(x != 0) for x in X]
    p = []
    for tau in range(1, tau_max + 1):
        d = []
        for t in range(len(X) - tau):
            if nonzero[t] and nonzero[t + tau]:
                a0, a1 = corr(X[t], X[t + tau]), corr(X[t], shift(X[t + tau], tau))
                if not (np.isnan(a0) or np.isnan(a1)):
                    d.append(round(a1 - a0, 12))
        p.append(scipy.stats.wilcoxon(d, alternative="greater").pvalue if np.any(np.array(d) != 0) else np.nan)
    significant = np.array(p) < alpha
    return (int(np.argmin(significant)) if not significant.all() else tau_max), np.array(p)


def brute_shape(X, max_shift, max_iter=20):
    nonzero = np.array([np.any(x != 0) for x in X])
    order = [0] + [s for m in range(1, max_shift + 1) for s in (-m, m)]
    mean, shifts = X[nonzero].mean(0), np.zeros(len(X), dtype=int)
    for _ in range(max_iter):
        new = np.zeros(len(X), dtype=int)
        for t in np.nonzero(nonzero)[0]:
            c = [corr(shift(X[t], s), mean) for s in order]
            c = [-np.inf if np.isnan(v) else v for v in c]
            new[t] = order[int(np.argmax(c))]
        done = np.array_equal(new, shifts)
        shifts = new
        mean = np.mean([shift(X[t], shifts[t]) for t in np.nonzero(nonzero)[0]], axis=0)
        if done:
            break
    aligned = np.array([shift(X[t], shifts[t]) for t in np.nonzero(nonzero)[0]])
    return brute_complexity(aligned), shifts
