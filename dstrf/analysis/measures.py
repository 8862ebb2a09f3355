"""Nonlinearity measures of dSTRFs (Keshishian et al., eLife 2020): one value per channel.

For one channel, ``W_t`` is the ``(F, L)`` filter the model applies at frame t and M the ``T x (F*L)`` matrix
whose rows are the vectorised ``W_t``. ``corr`` is Pearson's correlation of two such vectors over all ``F*L``
entries. ``S_s`` shifts a filter along the lag axis, without wrapping:

    (S_s W)[f, k] = W[f, k + s]   if 0 <= k + s < L,   else 0

so s > 0 moves the filter toward the current frame (shorter latency) and s < 0 away from it.

- **complexity** = ``sum_i s_i / max_i s_i`` over the singular values of M (rows not mean-centred): 1 when
  every ``W_t`` is a multiple of one filter (a linear model, a pure gain change), larger the more distinct
  filters the model switches between.
- **gain change**: how much the size of ``W_t`` varies over t; three variants, see :func:`gain_change`.
- **temporal hold**: for tau = 1..tau_max, over all t, ``a0 = corr(W_t, W_{t+tau})`` and
  ``a1 = corr(W_t, S_tau W_{t+tau})``; a one-sided Wilcoxon signed-rank test of ``a1 > a0`` per tau; the hold
  is the number of consecutive significant tau from tau = 1: for how many frames the model keeps an input
  event's effect, moving it along the lags as time passes.
- **shape change**: every ``W_t`` is aligned to the mean filter by the lag shift ``s_t`` (``|s_t| <=
  max_shift``) that maximises ``corr(S_s W_t, mean)``; the mean is recomputed from the aligned filters until
  the shifts stop changing; the shape change is the complexity of the aligned set: what varies once
  latency shifts are taken out.

**Frames whose W_t is all zero** (the model's output is locally constant there: every unit off, a rectified
output at zero, every bin zeroed by the jackknife mask) hold no filter. Every measure leaves them out: they
add nothing to M's singular values, are not in the gain statistics (unless ``include_zero_frames=True``),
form no temporal-hold pair and are not aligned. So inserting such frames changes no complexity, gain change
or shape change; for the temporal hold it only removes the pairs that straddle them. A channel with no
nonzero frame gets NaN for every measure.

Every function takes ``W (T, N, F, L)`` (a torch tensor, a numpy array, a dSTRF file written by
:func:`dstrf.estimate.dstrf` with ``out=`` or its path), reads it one channel and one block of frames at a
time, and returns a float64 numpy array with one value per chosen channel; ``details=True`` also returns one
details object per channel. Computation is in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
from numpy.lib.stride_tricks import as_strided

from ..validation import positive_int
from .inputs import DEFAULT_CHUNK, ChannelData, DSTRFSource, check_alpha

__all__ = [
    "complexity",
    "gain_change",
    "temporal_hold",
    "shape_change",
    "GAIN_VARIANTS",
    "ComplexityDetails",
    "GainChangeDetails",
    "TemporalHoldDetails",
    "ShapeChangeDetails",
]

#: Gain-change variants by name; aliases name where each comes from.
GAIN_VARIANTS = {
    "norm_cv": "norm_cv",
    "norm_std": "norm_std",
    "naplab": "norm_std",
    "entry_std": "entry_std",
    "matlab": "entry_std",
}
# A vector whose variance is below this fraction of its sum of squares is constant up to round-off:
# its correlation with anything is undefined.
_CONSTANT = 1e-12
# Differences a1 - a0 are rounded to this many decimals before ranking: differences that are equal, or zero, in
# exact arithmetic (say, two filters that overlap neither unshifted nor shifted) then tie, and zeros are dropped,
# instead of being ranked, and signed, by round-off.
_DECIMALS = 12
# Above this size LAPACK's symmetric eigensolver in torch (MKL) is ~1.7x faster than numpy's (OpenBLAS); below
# it numpy's call overhead is smaller.
_TORCH_EIG_MIN = 1000


# ---------------------------------------------------------------------------------------------------------------
# details


@dataclass
class ComplexityDetails:
    """``singular_values``: M's nonzero singular values, descending (``complexity = sum / first``)."""

    channel: int
    value: float
    singular_values: np.ndarray


@dataclass
class GainChangeDetails:
    """The gain time course: ``norm (T,)`` = ``||W_t||_F``, ``entry_std (T,)`` = std of ``W_t``'s entries;
    ``used (T,)``: the frames the statistic is over."""

    channel: int
    value: float
    variant: str
    norm: np.ndarray
    entry_std: np.ndarray
    used: np.ndarray


@dataclass
class TemporalHoldDetails:
    """Per tau = ``taus`` (1..tau_max): ``p_values`` (one-sided Wilcoxon, NaN where no pair differs),
    ``effect_sizes`` (matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` in [-1, 1], > 0 when
    a1 tends to exceed a0), ``median_differences`` ``median(a1 - a0)``, ``mean_a0``, ``mean_a1`` and
    ``n_pairs`` (pairs with both correlations defined)."""

    channel: int
    value: float
    alpha: float
    taus: np.ndarray
    p_values: np.ndarray
    effect_sizes: np.ndarray
    median_differences: np.ndarray
    mean_a0: np.ndarray
    mean_a1: np.ndarray
    n_pairs: np.ndarray


@dataclass
class ShapeChangeDetails:
    """``shifts (T,)``: ``s_t`` of every frame (0 where not ``aligned``, i.e. all-zero frames),
    ``aligned_mean (F, L)``: the mean of the aligned filters, ``n_iter`` alignment passes, ``converged``
    (the shifts stopped changing before ``max_iter``), ``singular_values`` of the aligned set."""

    channel: int
    value: float
    shifts: np.ndarray
    aligned: np.ndarray
    aligned_mean: np.ndarray
    n_iter: int
    converged: bool
    singular_values: np.ndarray


# ---------------------------------------------------------------------------------------------------------------
# shared pieces


@contextmanager
def _opened(W) -> Iterator[DSTRFSource]:
    """A DSTRFSource for W, closed afterwards if this call opened a file."""
    if isinstance(W, DSTRFSource):
        yield W
        return
    source = DSTRFSource(W)
    try:
        yield source
    finally:
        source.close()


def _each_channel(W, channels, chunk_size, measure, details: bool):
    """Run ``measure(ChannelData) -> details object`` on every chosen channel: values (N,) [, details]."""
    chunk_size = positive_int(chunk_size, "chunk_size")
    with _opened(W) as source:
        found = [measure(source.channel(c, p, chunk_size)) for c, p in source.select(channels)]
    values = np.array([d.value for d in found], dtype=np.float64)
    return (values, found) if details else values


def _nonzero(flat: np.ndarray) -> np.ndarray:
    """Rows ``(n, D)`` with any nonzero entry."""
    return np.any(flat != 0, axis=1)


def _prefix_over_lags(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sums over lags of each frame's sum and sum of squares: ``(n, L + 1)`` each, column k =
    sum over lags < k. The sum over any lag range ``[a, b)`` of a frame is then ``c[:, b] - c[:, a]``."""
    n, L, _ = X.shape
    sums, squares = np.zeros((n, L + 1)), np.zeros((n, L + 1))
    np.cumsum(X.sum(2), axis=1, out=sums[:, 1:])
    np.cumsum(np.einsum("nlf,nlf->nl", X, X), axis=1, out=squares[:, 1:])
    return sums, squares


def _centred_square(total: np.ndarray, squares: np.ndarray, dim: int) -> np.ndarray:
    """``sum (x - mean)^2 = sum x^2 - (sum x)^2 / D``, set to 0 where x is constant up to round-off."""
    v = squares - total * total / dim
    return np.where(v > _CONSTANT * squares, v, 0.0)


def _shift(x: np.ndarray, s: int) -> np.ndarray:
    """``S_s x`` of one lag-major filter ``(L, F)``: ``out[k] = x[k + s]``, zero where ``k + s`` is outside."""
    out = np.zeros_like(x)
    L = len(x)
    if s >= 0:
        out[: L - s] = x[s:]
    else:
        out[-s:] = x[: L + s]
    return out


def _shift_frames(X: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """``S_{s_t} X_t`` for every frame of a block ``(n, L, F)``: the frames with the same shift as one slice."""
    out = np.zeros_like(X)
    L = X.shape[1]
    for s in np.unique(shifts):  # a loop over the distinct shifts, not over frames
        rows = np.nonzero(shifts == s)[0]
        if s >= 0:
            out[rows, : L - s] = X[rows, s:]
        else:
            out[rows, -s:] = X[rows, : L + s]
    return out


def _eigvalsh(gram: np.ndarray) -> np.ndarray:
    if gram.shape[0] >= _TORCH_EIG_MIN:
        return torch.linalg.eigvalsh(torch.from_numpy(gram)).numpy()
    return np.linalg.eigvalsh(gram)


class _Spectrum:
    """Singular values of a matrix M whose rows arrive block by block, in memory bounded by ``D^2``.

    M's singular values are the square roots of the eigenvalues of ``M M^T`` (T' x T') and of ``M^T M``
    (D x D); the smaller one is used. Rows are kept while there are at most D of them (they take no more than
    the D x D Gram would); after that they are folded into ``M^T M`` chunk by chunk. All-zero rows change
    neither Gram matrix and are dropped.
    """

    rows: list[np.ndarray]
    gram: np.ndarray | None

    def __init__(self, dim: int) -> None:
        self.dim, self.rows, self.n_rows, self.gram = dim, [], 0, None

    def add(self, rows: np.ndarray) -> None:
        """Add rows ``(n, D)``; they are kept by reference, so they must not change afterwards (blocks of a
        channel never do)."""
        nonzero = _nonzero(rows)
        if not nonzero.all():
            rows = rows[nonzero]
        if not len(rows):
            return
        self.n_rows += len(rows)
        if self.gram is None and self.n_rows <= self.dim:
            self.rows.append(rows)
            return
        if self.gram is None:
            self.gram = np.zeros((self.dim, self.dim))
            for kept in self.rows:
                self.gram += kept.T @ kept  # numpy runs A.T @ A as one symmetric rank-k update (syrk)
            self.rows = []
        self.gram += rows.T @ rows

    def singular_values(self) -> np.ndarray:
        """Descending. Eigenvalues below ``lambda_max * max(T', D) * eps`` (numpy's numerical-rank tolerance,
        applied to the Gram matrix) are round-off and left out: a rank-one M gives exactly one singular value,
        and singular values below about ``1e-6 s_max`` (``sqrt(max(T', D) eps)``), which the Gram matrix
        cannot resolve, add nothing (the float32 round-off of stored dSTRFs is about ``1e-10 s_max``)."""
        if self.gram is None:
            if not self.rows:
                return np.zeros(0)
            m = self.rows[0] if len(self.rows) == 1 else np.concatenate(self.rows)
            gram = m @ m.T
        else:
            gram = self.gram
        keep = np.diag(gram) > 0  # entries that are zero in every frame (e.g. masked bins) add only zero eigenvalues
        if not keep.all():
            gram = gram[np.ix_(keep, keep)]
        eig = _eigvalsh(gram)[::-1]
        eig = eig[eig > eig[0] * max(self.n_rows, self.dim) * np.finfo(np.float64).eps]
        return np.sqrt(eig)


def _ratio(singular_values: np.ndarray) -> float:
    return float(singular_values.sum() / singular_values[0]) if len(singular_values) else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# complexity


def _complexity(channel: ChannelData) -> ComplexityDetails:
    spectrum = _Spectrum(channel.shape[1] * channel.shape[2])
    for _, _, X in channel.blocks():
        spectrum.add(X.reshape(len(X), -1))
    s = spectrum.singular_values()
    return ComplexityDetails(channel.channel, _ratio(s), s)


def complexity(W, channels: Sequence[int] | None = None, *, details: bool = False, chunk_size: int = DEFAULT_CHUNK):
    """Complexity per channel: ``sum_i s_i / max_i s_i`` over the singular values of M ``(T x F*L)``.

    1 (to round-off) when every ``W_t`` is a multiple of one filter; up to ``min(T, F*L)``.

    Computed from the eigenvalues of the smaller Gram matrix (``M M^T`` while at most ``F*L`` nonzero frames
    have been read, else ``M^T M`` accumulated chunk by chunk), so T can be 10^5 frames in ``(F*L)^2`` floats of
    memory (138 MB for 64 bands x 65 lags).

    Parameters
    ----------
    W : ``(T, N, F, L)``
        dSTRFs: tensor, array, dSTRF file or its path.
    channels : sequence of int, optional
        Channel numbers (positions along N; a file's stored channel numbers), default all.
    details : bool
        Also return a :class:`ComplexityDetails` per channel (the singular values).
    chunk_size : int
        Frames per block when the channel is read from a source too large to keep in memory.

    Returns
    -------
    values : float64 array ``(n_channels,)`` [, list of ComplexityDetails]
    """
    return _each_channel(W, channels, chunk_size, _complexity, details)


# ---------------------------------------------------------------------------------------------------------------
# gain change


def _frame_sizes(channel: ChannelData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (T,): the Frobenius norm, the (population) std of the entries, and whether it is nonzero."""
    T, L, F = channel.shape
    dim = L * F
    norm, entry_std, nonzero = np.zeros(T), np.zeros(T), np.zeros(T, dtype=bool)
    for start, stop, X in channel.blocks():
        flat = X.reshape(len(X), -1)
        squares = np.einsum("ij,ij->i", flat, flat)
        norm[start:stop] = np.sqrt(squares)
        entry_std[start:stop] = np.sqrt(np.maximum(squares / dim - (flat.sum(1) / dim) ** 2, 0.0))
        nonzero[start:stop] = _nonzero(flat)
    return norm, entry_std, nonzero


def _gain_change(channel: ChannelData, variant: str, include_zero_frames: bool) -> GainChangeDetails:
    norm, entry_std, nonzero = _frame_sizes(channel)
    used = np.ones_like(nonzero) if include_zero_frames else nonzero
    if not nonzero.any():
        value = float("nan")
    elif variant == "norm_cv":
        value = float(norm[used].std() / norm[used].mean())
    elif variant == "norm_std":
        value = float(norm[used].std())
    else:
        value = float(entry_std[used].std())
    return GainChangeDetails(channel.channel, value, variant, norm, entry_std, used)


def gain_change(
    W,
    variant: str = "norm_cv",
    channels: Sequence[int] | None = None,
    *,
    include_zero_frames: bool = False,
    details: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Gain change per channel: how much the size of ``W_t`` varies over t (stds with ddof = 0).

    Variants (``variant=``):

    - ``"norm_cv"`` (default): ``std_t ||W_t||_F / mean_t ||W_t||_F``, the coefficient of variation of the
      Frobenius norm. Scale-free: dSTRFs are in units of response per stimulus unit, which change with
      standardization, the response's scale and jackknife averaging; the CV does not (multiplying W by c
      leaves it unchanged), so channels, models and subjects can be compared. It is 0 for a constant gain
      and, for ``W_t = g(t) W``, exactly the CV of g.
    - ``"norm_std"`` (alias ``"naplab"``): ``std_t ||W_t||_F``, as naplab/DSTRF; in W's units.
    - ``"entry_std"`` (alias ``"matlab"``): ``std_t std_{f,k} W_t[f, k]``, the std over time of each frame's
      entry std, as the original MATLAB code; in W's units.

    All-zero frames are left out by default (see the module docstring), so inserted silence changes nothing.
    An all-zero ``W_t`` can also be a real gain of 0, e.g. a rectified neuron below threshold; pass
    ``include_zero_frames=True`` to count such frames as gain 0.

    Returns
    -------
    values : float64 array ``(n_channels,)`` [, list of GainChangeDetails with the gain time course]
    """
    if variant not in GAIN_VARIANTS:
        raise ValueError(f"unknown gain-change variant {variant!r}; valid: {sorted(GAIN_VARIANTS)}")
    canonical = GAIN_VARIANTS[variant]
    return _each_channel(W, channels, chunk_size, lambda c: _gain_change(c, canonical, include_zero_frames), details)


# ---------------------------------------------------------------------------------------------------------------
# temporal hold


def _lagged_products(flat: np.ndarray, n: int, tau_max: int) -> np.ndarray:
    """``P[i, tau - 1] = <x_i, x_{i + tau}>`` for rows ``i < n`` of ``flat (n_ext, D)``; 0 past the last row.

    A band of the Gram matrix ``flat flat^T``, computed as GEMMs of a run of rows against the rows up to
    tau_max ahead of it: a few times the products needed, at matrix-multiply speed.
    """
    n_ext = len(flat)
    out = np.zeros((n, tau_max))
    step = 32  # rows per GEMM: wide enough for BLAS, narrow enough to waste little outside the band
    for r0 in range(0, n, step):  # runs of rows, each one GEMM (not a loop over frames)
        r1 = min(r0 + step, n)
        gram = flat[r0:r1] @ flat[r0 + 1 : min(r1 + tau_max, n_ext)].T  # gram[i, j] = <x_{r0+i}, x_{r0+1+j}>
        if not gram.shape[1]:  # the last frame of the trial: no later frame
            continue
        i = np.arange(r1 - r0)[:, None]
        j = i + np.arange(tau_max)[None, :]
        out[r0:r1] = np.where(j < gram.shape[1], gram[i, np.minimum(j, gram.shape[1] - 1)], 0.0)
    return out


def _shifted_products(X: np.ndarray, n: int, tau_max: int) -> np.ndarray:
    """``P[i, tau - 1] = <x_i, S_tau x_{i+tau}> = sum_{k < L - tau} <X[i, k], X[i + tau, k + tau]>`` for frames
    ``i < n`` of the lag-major block ``X (n_ext, L, F)``; 0 past the last frame.

    Bin ``(t, k)`` and bin ``(t + tau, k + tau)`` weigh the same input frame ``u = t - k``. So with
    ``V_u[k] = X[u + k, k]`` (the weights every output puts on input frame u, by lag), every product needed is
    an entry of ``Q_u = V_u V_u^T`` (L x L, one batched GEMM over u): ``P[t, tau] = sum_k Q_{t-k}[k, k + tau]``.
    """
    n_ext, L, F = X.shape
    # V[u'] row k = X[u' + k - (L - 1), k] (u' = u + L - 1 >= 0), zero outside the block: filled one lag at a time
    V = np.zeros((n + L - 1, L, F))
    for k in range(L):
        count = min(n_ext, n + k)
        V[L - 1 - k : L - 1 - k + count, k] = X[:count, k]
    Q = V @ V.transpose(0, 2, 1)  # (n + L - 1, L, L)
    item = Q.itemsize
    # view[i, tau - 1, k] = Q[i + L - 1 - k, k, k + tau]: flat offset (L-1) L^2 + 1 + i L^2 + (tau-1) + k (L+1-L^2).
    # Every offset lies in Q for i < n, k < L, tau <= tau_max < L (min L^2, max (n+L-2) L^2 + tau_max);
    # k >= L - tau reads a valid but unrelated entry, which the mask zeroes.
    start = (L - 1) * L * L + 1
    diag = as_strided(
        Q.reshape(-1)[start:],
        shape=(n, tau_max, L),
        strides=(L * L * item, item, (L + 1 - L * L) * item),
        writeable=False,
    )
    mask = (np.arange(L)[None, :] < L - np.arange(1, tau_max + 1)[:, None]).astype(np.float64)
    out = np.einsum("itk,tk->it", diag, mask)
    out[np.arange(n)[:, None] + np.arange(1, tau_max + 1)[None, :] >= n_ext] = 0.0
    return out


def _hold_differences(channel: ChannelData, tau_max: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``a0, a1 (T, tau_max)`` for every frame t and tau, NaN where the pair is left out (t + tau past the end,
    an all-zero frame, or a correlation undefined because a vector is constant); whether any frame is nonzero."""
    T, L, F = channel.shape
    dim = L * F
    a0, a1 = np.full((T, tau_max), np.nan), np.full((T, tau_max), np.nan)
    taus = np.arange(1, tau_max + 1)
    any_nonzero = False
    for start, stop, X in channel.blocks(overlap=tau_max):
        n, n_ext = stop - start, len(X)
        flat = X.reshape(n_ext, dim)
        sums, squares = _prefix_over_lags(X)
        nonzero = _nonzero(flat)
        any_nonzero = any_nonzero or bool(nonzero[:n].any())
        cross0 = _lagged_products(flat, n, tau_max)
        cross1 = _shifted_products(X, n, tau_max)
        later = np.minimum(np.arange(n)[:, None] + taus[None, :], n_ext - 1)  # frame t + tau in the block
        # x = W_t, y = W_{t+tau}, z = S_tau y (the lags >= tau of y)
        sx, qx = sums[:n, L][:, None], squares[:n, L][:, None]
        sy, qy = sums[later, L], squares[later, L]
        sz, qz = sy - sums[later, taus[None, :]], qy - squares[later, taus[None, :]]
        vx, vy, vz = _centred_square(sx, qx, dim), _centred_square(sy, qy, dim), _centred_square(sz, qz, dim)
        ok = (
            (np.arange(n)[:, None] + taus[None, :] < n_ext)
            & nonzero[:n, None]
            & nonzero[later]
            & (vx > 0)
            & (vy > 0)
            & (vz > 0)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            a0[start:stop] = np.where(ok, (cross0 - sx * sy / dim) / np.sqrt(vx * vy), np.nan)
            a1[start:stop] = np.where(ok, (cross1 - sx * sz / dim) / np.sqrt(vx * vz), np.nan)
    return a0, a1, any_nonzero


def _wilcoxon_greater(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Wilcoxon signed-rank test of ``d > 0`` for every column of ``d (T, tau_max)`` (NaN = absent):
    p-values and rank-biserial effect sizes (tau_max,).

    The test scipy's ``wilcoxon(d, alternative="greater")`` makes of each column (zero differences dropped),
    with the columns grouped by the method scipy picks (by the column's length n and whether it has ties or
    zeros):

    - n > 50, or 13 < n <= 50 with ties or zeros: the normal approximation with tie and continuity
      correction; all such columns in one vectorised scipy call, left-aligned and padded with zeros (dropped);
    - n <= 50 without ties or zeros: scipy's exact null distribution, one call per column;
    - n <= 13 with ties or zeros: the exact sign-flip null distribution of the tied ranks, enumerated here
      (``2^n`` sign patterns, scipy's exhaustive permutation test, which takes scipy up to a second per column).
    """
    columns = [d[~np.isnan(d)] for d in differences.T]
    counts = np.array([len(c) for c in columns])
    nonzero = [c[c != 0] for c in columns]
    n_nonzero = np.array([len(c) for c in nonzero])
    tied = np.array([len(c) > len(nz) or len(np.unique(np.abs(nz))) < len(nz) for c, nz in zip(columns, nonzero)])
    p, r_plus = np.full(len(columns), np.nan), np.full(len(columns), np.nan)
    testable = n_nonzero > 0
    asymptotic = np.nonzero(testable & ((counts > 50) | (tied & (counts > 13))))[0]
    if len(asymptotic):
        packed = np.zeros((len(asymptotic), counts[asymptotic].max()))
        for row, i in enumerate(asymptotic):
            packed[row, : counts[i]] = columns[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            result = scipy.stats.wilcoxon(packed, alternative="greater", method="asymptotic", axis=1)
        p[asymptotic], r_plus[asymptotic] = result.pvalue, result.statistic
    for i in np.nonzero(testable & ~tied & (counts <= 50))[0]:
        result = scipy.stats.wilcoxon(columns[i], alternative="greater", method="exact")
        p[i], r_plus[i] = result.pvalue, result.statistic
    for i in np.nonzero(testable & tied & (counts <= 13))[0]:
        p[i], r_plus[i] = _sign_flip_test(nonzero[i])
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = 2 * r_plus / (n_nonzero * (n_nonzero + 1) / 2) - 1
    return p, effect


def _sign_flip_test(d: np.ndarray) -> tuple[float, float]:
    """Exact one-sided signed-rank test of nonzero differences ``d`` (n <= 13): ``R+`` = the sum of the
    (tie-averaged) ranks of ``|d|`` where d > 0, and ``p = P(R+ >= observed)`` over all ``2^n`` sign patterns
    (with scipy's relative tolerance for equal values, 100 eps)."""
    ranks = scipy.stats.rankdata(np.abs(d))
    observed = float(ranks[d > 0].sum())
    patterns = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))[None, :]) & 1
    null = patterns @ ranks
    tolerance = abs(100 * np.finfo(np.float64).eps * observed)
    return float(np.count_nonzero(null >= observed - tolerance) / len(null)), observed


def _temporal_hold(channel: ChannelData, tau_max: int | None, alpha: float) -> TemporalHoldDetails:
    L = channel.shape[1]
    tau_max = _check_tau_max(tau_max, L)
    a0, a1, any_nonzero = _hold_differences(channel, tau_max)
    differences = a1 - a0
    differences = np.round(differences, _DECIMALS)
    p, effect = _wilcoxon_greater(differences)
    significant = p < alpha  # NaN (no pair differs) is not significant
    hold = float(np.argmin(significant) if not significant.all() else tau_max) if any_nonzero else float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a tau without pairs: NaN is the answer
        median = np.nanmedian(differences, axis=0)
        mean0, mean1 = np.nanmean(a0, axis=0), np.nanmean(a1, axis=0)
    return TemporalHoldDetails(
        channel.channel,
        hold,
        alpha,
        np.arange(1, tau_max + 1),
        p,
        effect,
        median,
        mean0,
        mean1,
        (~np.isnan(differences)).sum(0),
    )


def _check_tau_max(tau_max, n_lags: int) -> int:
    if n_lags < 2:
        raise ValueError(f"temporal hold shifts filters along the lags; W has only {n_lags} lag")
    if tau_max is None:
        return n_lags - 1
    tau_max = positive_int(tau_max, "tau_max")
    if tau_max > n_lags - 1:
        raise ValueError(
            f"tau_max must be at most L - 1 = {n_lags - 1} (a shift by L lags leaves nothing); got {tau_max}"
        )
    return tau_max


def temporal_hold(
    W,
    tau_max: int | None = None,
    alpha: float = 0.05,
    channels: Sequence[int] | None = None,
    *,
    details: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Temporal hold per channel, in frames (0 .. tau_max).

    For tau = 1..tau_max and every frame t with t + tau in the trial::

        a0(t, tau) = corr(W_t, W_{t+tau})
        a1(t, tau) = corr(W_t, S_tau W_{t+tau}),   (S_tau W)[f, k] = W[f, k + tau] (0 for k + tau >= L)

    ``S_tau`` moves ``W_{t+tau}`` tau lags toward the current frame: if an input event that drove the neuron
    at lag k at time t still drives it tau frames later (at lag k + tau), a1 > a0. A one-sided Wilcoxon
    signed-rank test of ``a1 > a0`` over t (scipy, zero differences dropped) gives a p-value per tau; the
    temporal hold is the number of consecutive tau = 1, 2, ... with p < alpha.

    Pairs with an all-zero frame are left out (not significant), and so are pairs whose correlation is
    undefined (a constant vector, e.g. ``S_tau W_{t+tau}`` when all of ``W_{t+tau}`` lies at lags < tau). W's
    frames must be consecutive. Differences ``a1 - a0`` are rounded to 12 decimals before ranking, so that
    differences equal in exact arithmetic tie (and zeros drop out) instead of being ranked by round-off.

    Caveats of the definition: neighbouring pairs overlap, so the tests are not independent and p-values are
    optimistic (the consecutive-tau rule guards against isolated false positives, not against a systematic
    bias). Pearson's correlation subtracts each vector's mean and the zero fill changes the shifted filter's
    mean, so for filters whose entries are mostly of one sign ``a1`` can exceed ``a0`` even on pairs whose
    filters do not overlap at all; dSTRFs with inhibitory sidebands have means near zero.

    Computed for all frames and lags at once: ``<W_t, W_{t+tau}>`` as a band of ``M M^T`` (GEMMs of runs of
    frames), ``<W_t, S_tau W_{t+tau}>`` from the lag x lag Gram matrices of the weights on each input frame
    (see ``_shifted_products``), means and norms of the shifted filters from cumulative sums over lags.
    Memory: one block of frames, and ``a0``, ``a1`` for every (t, tau) (``2 T tau_max`` floats).

    Parameters
    ----------
    W : ``(T, N, F, L)``
    tau_max : int, optional
        Largest shift tested (1 .. L - 1; default L - 1, every shift the window allows: the count stops at
        the first non-significant tau anyway).
    alpha : float
        Significance level in (0, 1).
    channels, details, chunk_size
        As in :func:`complexity`; details are :class:`TemporalHoldDetails` (per-tau p-values, effect sizes).

    Returns
    -------
    values : float64 array ``(n_channels,)`` [, list of TemporalHoldDetails]
    """
    alpha = check_alpha(alpha)
    with _opened(W) as source:
        source.require_consecutive_frames("temporal hold")
        _check_tau_max(tau_max, source.n_lags)
        return _each_channel(source, channels, chunk_size, lambda c: _temporal_hold(c, tau_max, alpha), details)


# ---------------------------------------------------------------------------------------------------------------
# shape change


def _shift_order(max_shift: int) -> np.ndarray:
    """Candidate shifts 0, -1, 1, -2, 2, ...: argmax takes the first of equal correlations, the smallest shift."""
    return np.array([0] + [s for m in range(1, max_shift + 1) for s in (-m, m)], dtype=np.int64)


def _align(
    channel: ChannelData, mean: np.ndarray, order: np.ndarray, nonzero: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One alignment pass: the best shift of every frame against ``mean (L, F)`` and the sum of the aligned frames.

    For all frames and shifts at once: ``corr(S_s W_t, m) = <S_s W_t, m - mean(m)> / (|S_s W_t - its mean|
    |m - mean(m)|)``, and ``<S_s W_t, m_c> = <W_t, S_{-s} m_c>``, so the numerators are one GEMM of the frames
    with the bank of shifted centred means; the shifted frames' sums and sums of squares come from cumulative
    sums over lags (the lags ``[max(0, s), min(L, L + s))`` are kept).
    """
    T, L, F = channel.shape
    dim = L * F
    centred = mean - mean.mean()
    vm = float((centred * centred).sum())
    shifts = np.zeros(T, dtype=np.int64)
    aligned_sum = np.zeros((L, F))
    bank = np.stack([_shift(centred, -s).reshape(-1) for s in order], axis=1)  # (D, J), J = 2 max_shift + 1
    low, high = np.maximum(0, order), np.minimum(L, L + order)
    for start, stop, X in channel.blocks():
        n = stop - start
        flat = X.reshape(n, dim)
        sums, squares = _prefix_over_lags(X)
        s_sum, s_sq = sums[:, high] - sums[:, low], squares[:, high] - squares[:, low]
        vs = _centred_square(s_sum, s_sq, dim)
        if vm > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = np.where(vs > 0, (flat @ bank) / np.sqrt(vs * vm), -np.inf)
        else:  # a constant mean correlates with nothing: no alignment
            corr = np.full((n, len(order)), -np.inf)
        best = np.argmax(corr, axis=1)  # all -inf (a constant mean or frame): index 0, shift 0
        used = nonzero[start:stop]
        shifts[start:stop] = np.where(used, order[best], 0)
        # sum of the aligned frames: the frames summed per shift (one GEMM with the shifts that occur), each
        # group's sum shifted once
        present = np.unique(best[used])
        groups = (best[:, None] == present[None, :]) & used[:, None]
        for j, total in zip(present, (groups.T.astype(np.float64) @ flat).reshape(len(present), L, F)):
            aligned_sum += _shift(total, int(order[j]))
    return shifts, aligned_sum


def _shape_change(
    channel: ChannelData, max_shift: int | None, max_iter: int, unaligned: ComplexityDetails | None = None
) -> ShapeChangeDetails:
    """``unaligned``: the channel's complexity details, if known; reused when no frame moves."""
    T, L, F = channel.shape
    max_shift = _check_max_shift(max_shift, L)
    nonzero = np.zeros(T, dtype=bool)
    total = np.zeros((L, F))
    for start, stop, X in channel.blocks():
        nonzero[start:stop] = _nonzero(X.reshape(len(X), -1))
        total += X.sum(0)  # all-zero frames add nothing
    n_used = int(nonzero.sum())
    if not n_used:
        return ShapeChangeDetails(
            channel.channel, float("nan"), np.zeros(T, dtype=np.int64), nonzero, np.zeros((F, L)), 0, True, np.zeros(0)
        )
    order = _shift_order(max_shift)
    mean, shifts, converged, n_iter = total / n_used, np.zeros(T, dtype=np.int64), False, 0
    while n_iter < max_iter and not converged:
        new, aligned_sum = _align(channel, mean, order, nonzero)
        n_iter += 1
        converged = bool(np.array_equal(new, shifts))
        shifts, mean = new, aligned_sum / n_used
    if unaligned is not None and not shifts.any():  # nothing moved: the aligned set is the set
        s = unaligned.singular_values
    else:
        spectrum = _Spectrum(L * F)
        for start, stop, X in channel.blocks():
            spectrum.add(_shift_frames(X, shifts[start:stop]).reshape(stop - start, -1))
        s = spectrum.singular_values()
    return ShapeChangeDetails(channel.channel, _ratio(s), shifts, nonzero, mean.T.copy(), n_iter, converged, s)


def _check_max_shift(max_shift, n_lags: int) -> int:
    if max_shift is None:
        return n_lags // 2
    max_shift = positive_int(max_shift, "max_shift", minimum=0)
    if max_shift > n_lags - 1:
        raise ValueError(f"max_shift must be at most L - 1 = {n_lags - 1}; got {max_shift}")
    return max_shift


def shape_change(
    W,
    max_shift: int | None = None,
    channels: Sequence[int] | None = None,
    *,
    max_iter: int = 20,
    details: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Shape change per channel: the complexity of the dSTRFs once each is aligned in latency to their mean.

    Starting from the mean ``m`` of the nonzero ``W_t``, repeat until no shift changes (or ``max_iter``
    passes)::

        s_t = argmax_{|s| <= max_shift} corr(S_s W_t, m)      (ties: the smallest |s|)
        m   = mean_t S_{s_t} W_t

    then return the complexity of ``{S_{s_t} W_t}``. ``S_s`` is the non-circular, zero-filled lag shift of the
    module docstring. 1 (to round-off) when the filters differ only in latency and gain; larger when their
    shapes differ.

    Each pass reads the frames once: one GEMM of the frames with the ``2 max_shift + 1`` shifted copies of the
    centred mean gives every correlation (no loop over frames or shifts).

    Parameters
    ----------
    W : ``(T, N, F, L)``
    max_shift : int, optional
        Largest lag shift (0 .. L - 1; default L // 2, so a feature anywhere in the window can be moved to
        its middle, and the mean's peak can be reached from half the window away).
    max_iter : int
        Most alignment passes.
    channels, details, chunk_size
        As in :func:`complexity`; details are :class:`ShapeChangeDetails` (per-frame shifts, aligned mean).

    Returns
    -------
    values : float64 array ``(n_channels,)`` [, list of ShapeChangeDetails]
    """
    max_iter = positive_int(max_iter, "max_iter")
    with _opened(W) as source:
        _check_max_shift(max_shift, source.n_lags)
        return _each_channel(source, channels, chunk_size, lambda c: _shape_change(c, max_shift, max_iter), details)
