"""Closed-form time-lagged ridge regression: the linear STRF of mTRF and MNE's ``ReceptiveField``.

For a stimulus standardized per band and lags ``k = 0 .. L - 1``, the lagged design row of frame t is
``x_t = [x_f(t - k)]_{f,k}`` (``D = F * L`` entries; frames before the trial start are 0). Over the scored
frames of the training trials (``t >= warmup``, pooled over trials), with means removed (the bias absorbs
them), per output channel n:

    w_n(alpha) = (Cxx + alpha I)^-1 cxy_n,    b_n = mean(y_n) - mean(x)' w_n,

with ``Cxx = sum_t (x_t - mean x)(x_t - mean x)'`` and ``cxy_n = sum_t (x_t - mean x)(y_n(t) - mean y_n)``.
One eigendecomposition ``Cxx = V diag(lambda) V'`` serves every alpha and every channel:
``w_n(alpha) = V diag(1 / (lambda + alpha)) V' cxy_n``.

**Choosing alpha, per channel, from the training trials only.** The training trials are cut into K inner
folds of whole trials (leave-one-trial-out when there are at most K); each fold's moments are the totals
minus its own trials', so the lagged moments are accumulated once per trial. Each inner model is scored on
its held-out trials by Pearson r per channel, from moments too (no prediction is materialised); the alpha
with the best mean r over the inner folds is chosen per channel, and the final model is fitted on all
training trials with it. Validation and test trials of the outer split never choose anything.

Sums are in float64; the lagged design is built chunk by chunk in time (``chunk_size`` frames at a time), so
memory is ``D^2`` floats plus one chunk, never a ``T x D`` matrix of a long trial.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .linear import LinearSTRF

__all__ = ["RidgeSTRF", "lagged_moments", "laplacian", "DEFAULT_ALPHAS"]

#: Wide enough for standardized data: Cxx's eigenvalues scale with the number of frames (1e3-1e6).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 8, 21))


@dataclass
class _Moments:
    """Sums over the scored frames of one trial (or of several: moments add)."""

    n: float
    sx: np.ndarray  # (D,)
    sy: np.ndarray  # (N,)
    xx: np.ndarray  # (D, D)
    xy: np.ndarray  # (D, N)
    yy: np.ndarray  # (N,)

    def __add__(self, other: _Moments) -> _Moments:
        return _Moments(
            self.n + other.n,
            self.sx + other.sx,
            self.sy + other.sy,
            self.xx + other.xx,
            self.xy + other.xy,
            self.yy + other.yy,
        )

    def __sub__(self, other: _Moments) -> _Moments:
        return _Moments(
            self.n - other.n,
            self.sx - other.sx,
            self.sy - other.sy,
            self.xx - other.xx,
            self.xy - other.xy,
            self.yy - other.yy,
        )

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(Cxx, cxy, mean x, mean y)``: the cross-products about the means."""
        mx, my = self.sx / self.n, self.sy / self.n
        return self.xx - self.n * np.outer(mx, mx), self.xy - self.n * np.outer(mx, my), mx, my


def _lagged(x: np.ndarray, lags: int, start: int, stop: int) -> np.ndarray:
    """Rows ``t = start .. stop - 1`` of the lagged design of ``x`` ``(F, T)``: ``(stop - start, F * L)``, the
    entry ``(t, f * L + k)`` being ``x_f(t - k)`` (0 before the trial start), i.e. the flattening of ``(F, L)``."""
    F_ = x.shape[0]
    padded = np.concatenate([np.zeros((F_, lags - 1), dtype=x.dtype), x[:, :stop]], axis=1)
    # window ending at t (padded index t + L - 1) reversed along lags: column k is frame t - k
    windows = np.lib.stride_tricks.sliding_window_view(padded, lags, axis=1)[:, start:stop, ::-1]  # (F, n, L)
    return np.ascontiguousarray(windows.transpose(1, 0, 2)).reshape(stop - start, F_ * lags)


def lagged_moments(
    stimulus: np.ndarray, response: np.ndarray, lags: int, warmup: int = 0, chunk_size: int = 2048
) -> _Moments:
    """The moments of one trial over frames ``t >= warmup``: stimulus ``(F, T)``, response ``(N, T)``, in
    float64, memory one chunk of ``chunk_size`` frames of the lagged design.

    The lagged cross-products are a shifted cross-correlation, so they are not summed as ``X' X`` (``2 T D^2``
    flops) but from the ``F x D`` cross-correlations of the bands with the lagged design (``2 T F D``: L times
    fewer) plus exact corrections at the two ends of the trial. With ``x`` zero-padded by ``L - 1`` frames and
    ``s = t - k``, the entry for lags ``k <= k' = k + d`` is

        XX[(f, k), (g, k + d)] = sum_{s = w - k}^{T - 1 - k} x_f(s) x_g(s - d)
                               = core_d[f, g] + head_{k,d}[f, g] + tail_{k,d}[f, g],

    ``core`` the sum over the frames every lag k shares (``s = w .. T - L``), ``head`` over the k frames
    ``s = w - k .. w - 1`` and ``tail`` over the ``L - 1 - k`` frames ``s = T - L + 1 .. T - 1 - k`` (padded
    indices, ``w = warmup + L - 1``, ``T`` the padded length); entries with ``k' < k`` by symmetry. Exact: it is
    the same sum, regrouped."""
    x = np.asarray(stimulus, dtype=np.float64)
    y = np.asarray(response, dtype=np.float64)
    F_, T, N, L = x.shape[0], x.shape[1], y.shape[0], lags
    D = F_ * L
    warmup = min(max(int(warmup), 0), T)
    if L == 1 or T - warmup < 2 * L:  # no lags, or too short for a core: the explicit design is cheap
        X, Y = _lagged(x, L, warmup, T), y[:, warmup:].T
        return _Moments(float(T - warmup), X.sum(0), Y.sum(0), X.T @ X, X.T @ Y, (Y * Y).sum(0))
    xp = np.concatenate([np.zeros((F_, L - 1)), x], axis=1)  # xp[:, s] = x(s - L + 1), zeros before the start
    w, Tp = warmup + L - 1, T + L - 1  # scored frames t = w .. Tp - 1 in padded indices

    core = np.zeros((F_, D))
    for start in range(w, Tp - L + 1, chunk_size):
        stop = min(start + chunk_size, Tp - L + 1)
        core += xp[:, start:stop] @ _lagged(xp, L, start, stop)
    head = _lagged(xp, L, w - L + 1, w)  # (L - 1, D): s = w - L + 1 .. w - 1
    tail = _lagged(xp, L, Tp - L + 1, Tp)  # (L - 1, D): s = T - L + 1 .. T - 1
    head_k = np.zeros((F_, D))  # lag k: the k frames before w
    tail_k = xp[:, Tp - L + 1 : Tp] @ tail  # lag k: the first L - 1 - k tail frames
    xx = np.empty((F_, L, F_, L))
    for k in range(L):
        if k:
            head_k += np.outer(xp[:, w - k], head[L - 1 - k])
            tail_k -= np.outer(xp[:, Tp - k], tail[L - 1 - k])
        g = (core + head_k + tail_k).reshape(F_, F_, L)  # [f, g, d]: XX[(f, k), (g, k + d)]
        xx[:, k, :, k:] = g[:, :, : L - k]  # lags k' = k .. L - 1
        xx[:, k + 1 :, :, k] = g[:, :, 1 : L - k].transpose(1, 2, 0)  # k' > k mirrored: XX is symmetric
    xx_full = xx.reshape(D, D)

    csum = np.concatenate([np.zeros((F_, 1)), np.cumsum(xp, axis=1)], axis=1)  # csum[:, s] = sum of xp[:, :s]
    sx = np.stack([csum[:, Tp - k] - csum[:, w - k] for k in range(L)], axis=1).reshape(D)
    yw = y[:, warmup:]
    xy = np.stack([xp[:, w - k : Tp - k] @ yw.T for k in range(L)], axis=1).reshape(D, N)
    return _Moments(float(T - warmup), sx, yw.sum(1), xx_full, xy, (yw * yw).sum(1))


def _inner_folds(n_trials: int, cv: int | str) -> list[list[int]]:
    """Whole-trial inner folds of the training trials: leave-one-trial-out (``cv="loo"`` or at most ``cv``
    trials), else ``cv`` contiguous groups."""
    if cv == "loo" or n_trials <= int(cv):
        return [[i] for i in range(n_trials)]
    bounds = np.linspace(0, n_trials, int(cv) + 1).round().astype(int)
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _held_out_r(w: np.ndarray, b: np.ndarray, m: _Moments) -> np.ndarray:
    """Pearson r per (alpha, channel) of the predictions ``X w + b`` on held-out moments ``m``, without
    predicting: ``w`` ``(A, D, N)``, ``b`` ``(A, N)`` -> ``(A, N)``."""
    n = m.n
    sp = np.einsum("d,adn->an", m.sx, w) + n * b  # sum of predictions
    spp = (w * (m.xx @ w)).sum(1) + 2 * b * (sp - n * b) + n * b * b  # sum of squared predictions
    spy = np.einsum("adn,dn->an", w, m.xy) + b * m.sy  # sum of prediction x response
    cov = spy - sp * m.sy / n
    var_p = spp - sp * sp / n
    var_y = m.yy - m.sy * m.sy / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_p * var_y)
    return np.where((var_p > 1e-12 * np.abs(spp)) & (var_y > 1e-12 * np.abs(m.yy)), r, np.nan)


def laplacian(n_freqs: int, lags: int) -> np.ndarray:
    """The graph Laplacian of the (band, lag) grid, ``(D, D)`` in the lagged design's order (``f * L + k``):
    ``w' Q w = sum over neighbouring bins (w_a - w_b)^2``, neighbours being adjacent lags of one band and
    adjacent bands at one lag. As a penalty it favours smooth STRFs (MNE's ``reg_type="laplacian"``)."""

    def path(n: int) -> np.ndarray:
        q = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
        q[0, 0] = q[-1, -1] = 1 if n > 1 else 0
        return q

    return np.kron(np.eye(n_freqs), path(lags)) + np.kron(path(n_freqs), np.eye(lags))


def _cholesky_is_cheaper(n_alphas: int, dim: int) -> bool:
    """Whether ``n_alphas`` Cholesky factorisations cost less than one eigendecomposition of a ``dim`` x ``dim``
    matrix: float64 on 2 cores, eigh took 10.3x a Cholesky at D = 1000, 10.6x at 1984, 18.6x at 4160."""
    return n_alphas < (10 if dim < 3000 else 18)


def _solve_all(m: _Moments, alphas: np.ndarray, penalty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights for every alpha: ``(A, D, N)`` and biases ``(A, N)``, solving ``(Cxx + alpha Q) w = cxy`` with
    Q the identity (ridge) or ``penalty``. Ridge with many alphas: one eigendecomposition
    ``Cxx = V diag(lambda) V'`` serves them all; few alphas (:func:`_cholesky_is_cheaper`), or another penalty: a
    Cholesky factorisation per alpha. Float64, in torch (its LAPACK is the faster one here)."""
    cxx, cxy, mx, my = (torch.from_numpy(np.ascontiguousarray(v)) for v in m.centred())
    a = torch.from_numpy(np.asarray(alphas, dtype=np.float64))
    if penalty is not None or _cholesky_is_cheaper(len(a), len(cxx)):
        Q = torch.eye(len(cxx), dtype=torch.float64) if penalty is None else torch.from_numpy(penalty)
        ws = []
        for alpha in a:
            factor, info = torch.linalg.cholesky_ex(cxx + alpha * Q)
            if info.item() != 0:
                if penalty is not None:
                    raise ValueError(
                        f"Cxx + {alpha.item():g} Q is not positive definite: the Laplacian penalty "
                        "leaves a direction the data do not constrain; use larger alphas"
                    )
                break  # not positive definite in float64 (a tiny alpha on collinear bands): eigh below
            ws.append(torch.cholesky_solve(cxy, factor))
        else:
            w = torch.stack(ws)
            return w.numpy(), (my[None, :] - torch.einsum("d,adn->an", mx, w)).numpy()
    lam, V = torch.linalg.eigh(cxx)
    lam = lam.clamp(min=0)  # a covariance is positive semi-definite; negatives are rounding
    z = V.T @ cxy  # (D, N)
    w = V @ (z[None] / (lam[None, :, None] + a[:, None, None]))  # (A, D, N)
    return w.numpy(), (my[None, :] - torch.einsum("d,adn->an", mx, w)).numpy()


class RidgeSTRF(LinearSTRF):
    """The linear STRF fitted in closed form by ridge regression, alpha chosen per channel by inner CV.

    Same interface as :class:`LinearSTRF` (``.strf (N, F, L)``, ``.receptive_field``, causal forward), so
    dSTRFs, gradient maps and figures treat it alike. Fitted by :meth:`fit` (the Lightning module calls it
    on the training trials at the start of the fit, and trains no further); see the module docstring for the
    estimator.

    Args:
        n_freqs, n_outputs, lags: as :class:`LinearSTRF`.
        alphas: the regularisation grid, all > 0 (default :data:`DEFAULT_ALPHAS`, 1e-2 .. 1e8).
        cv: inner folds of whole training trials (``"loo"``: one per trial).
        fallback_alpha: with fewer than 2 training trials there is no inner CV: refuse (None, default), or use
            this alpha for every channel, with a warning.
        chunk_size: frames of the lagged design held at once.
        penalty: ``"ridge"`` (``alpha |w|^2``) or ``"laplacian"`` (``alpha w' Q w``, Q the graph Laplacian of
            the band x lag grid: :func:`laplacian`; smooth STRFs, solved by a Cholesky factorisation per alpha).

    After :meth:`fit`: ``alpha (N,)`` the chosen alphas, ``cv_r (A, N)`` the mean inner-CV r per alpha and
    channel (NaN where undefined), ``alphas (A,)`` the grid; all buffers, so they travel with checkpoints.
    """

    closed_form = True
    alphas: torch.Tensor  # buffers (register_buffer in __init__)
    alpha: torch.Tensor
    cv_r: torch.Tensor

    def __init__(
        self,
        n_freqs: int,
        n_outputs: int,
        lags: int = 65,
        alphas: Sequence[float] | None = None,
        cv: int | str = 5,
        fallback_alpha: float | None = None,
        chunk_size: int = 2048,
        penalty: str = "ridge",
    ) -> None:
        super().__init__(n_freqs, n_outputs, lags=lags)
        grid = np.asarray(DEFAULT_ALPHAS if alphas is None else list(alphas), dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ValueError(f"alphas must be a non-empty list of positive, finite numbers; got {list(grid)}")
        if not (cv == "loo" or (isinstance(cv, int) and not isinstance(cv, bool) and cv >= 2)):
            raise ValueError(f"cv must be 'loo' or a number of inner folds >= 2; got {cv!r}")
        if fallback_alpha is not None and not float(fallback_alpha) > 0:
            raise ValueError(f"fallback_alpha must be a positive number (or null: refuse); got {fallback_alpha}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of frames; got {chunk_size}")
        if penalty not in ("ridge", "laplacian"):
            raise ValueError(f"penalty must be 'ridge' or 'laplacian'; got {penalty!r}")
        self.penalty = penalty
        self.cv, self.fallback_alpha, self.chunk_size = cv, fallback_alpha, int(chunk_size)
        with torch.no_grad():
            self.weight.zero_()
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.register_buffer("alphas", torch.as_tensor(np.sort(grid)))
        self.register_buffer("alpha", torch.full((self.n_outputs,), float("nan"), dtype=torch.float64))
        self.register_buffer("cv_r", torch.full((len(grid), self.n_outputs), float("nan"), dtype=torch.float64))

    @torch.no_grad()
    def fit(
        self,
        stimuli: Sequence[torch.Tensor | np.ndarray],
        responses: Sequence[torch.Tensor | np.ndarray],
        warmup: int | None = None,
    ) -> RidgeSTRF:
        """Fit on training trials: ``stimuli[i]`` ``(F, T_i)``, ``responses[i]`` ``(N, T_i)`` (standardized as
        the model will see them), scoring frames ``t >= warmup`` (default ``lags - 1``: full windows)."""
        if len(stimuli) != len(responses) or not stimuli:
            raise ValueError(
                f"fit needs as many stimuli as responses, at least one; got {len(stimuli)} and {len(responses)}"
            )
        warmup = self.lags - 1 if warmup is None else int(warmup)
        moments = [
            lagged_moments(_numpy(x), _numpy(y), self.lags, warmup, self.chunk_size) for x, y in zip(stimuli, responses)
        ]
        total = sum(moments[1:], moments[0])
        if total.n < 2:
            raise ValueError(
                f"the training trials have {int(total.n)} frames past the warm-up of {warmup}; "
                "a ridge fit needs at least 2"
            )
        alphas = self.alphas.cpu().numpy()
        Q = laplacian(self.n_freqs, self.lags) if self.penalty == "laplacian" else None
        self.check_training_trials(len(moments))
        if len(moments) < 2:
            warnings.warn(
                f"RidgeSTRF: {len(moments)} training trial, no inner cross-validation: alpha = "
                f"{self.fallback_alpha} for every channel",
                RuntimeWarning,
                stacklevel=2,
            )
            assert self.fallback_alpha is not None  # check_training_trials refused the fit otherwise
            chosen = np.full(self.n_outputs, float(self.fallback_alpha))
            curve = np.full((len(alphas), self.n_outputs), np.nan)
        else:
            scores = []
            for fold in _inner_folds(len(moments), self.cv):
                held = sum((moments[i] for i in fold[1:]), moments[fold[0]])
                w, b = _solve_all(total - held, alphas, Q)
                scores.append(_held_out_r(w, b, held))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: a constant channel
                curve = np.nanmean(np.stack(scores), axis=0)  # (A, N)
            chosen = alphas[np.where(np.isfinite(curve), curve, -np.inf).argmax(axis=0)]
        grid = np.unique(chosen)  # only the alphas some channel chose
        w, b = _solve_all(total, grid, Q)
        index = np.searchsorted(grid, chosen)
        W = w[index, :, np.arange(self.n_outputs)]  # (N, D)
        B = b[index, np.arange(self.n_outputs)]
        self.weight.copy_(torch.as_tensor(W.reshape(self.n_outputs, self.n_freqs, self.lags)))
        self.bias.copy_(torch.as_tensor(B))
        self.alpha.copy_(torch.as_tensor(chosen))
        self.cv_r.copy_(torch.as_tensor(curve))
        return self

    def check_training_trials(self, n_trials: int) -> None:
        """Refuse a fit whose alpha no inner cross-validation can choose (fewer than 2 training trials),
        unless ``fallback_alpha`` is set."""
        if n_trials < 2 and self.fallback_alpha is None:
            raise ValueError(
                f"fallback_alpha=None and {n_trials} training trial: RidgeSTRF chooses alpha by "
                "cross-validation over the training trials, which needs at least 2; give more training "
                "trials, or set fallback_alpha to use one alpha for every channel"
            )

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (the chosen alphas are set)."""
        return bool(torch.isfinite(self.alpha).all())

    def cv_summary(self, channel_names: Sequence[str] | None = None) -> dict:
        """The chosen alpha per channel and the inner-CV curve, for ``metrics.json``."""
        names = list(channel_names) if channel_names is not None else [f"ch{n}" for n in range(self.n_outputs)]
        return {
            "alphas": self.alphas.tolist(),
            "alpha": dict(zip(names, self.alpha.tolist())),
            "cv": self.cv,
            "penalty": self.penalty,
            "cv_r": self.cv_r.T.tolist(),
        }

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alphas={len(self.alphas)}, cv={self.cv!r}, penalty={self.penalty!r}"


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
