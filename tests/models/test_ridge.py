"""RidgeSTRF: closed-form ridge equal to the textbook solution on the explicit design, alpha per channel by
inner CV over training trials only, and bad settings refused."""

import numpy as np
import pytest
import torch

from dstrf.models import ClosedFormEncoder, LinearSTRF, RidgeSTRF
from dstrf.models.ridge import _held_out_r, _inner_folds, _lagged, _solve_all, lagged_moments

F_, N_, L_ = 4, 3, 6


def _data(n_trials=5, noise=0.3, seed=0, lengths=(300, 250, 400, 350, 280, 320)):
    rng = np.random.default_rng(seed)
    truth = LinearSTRF(F_, N_, lags=L_)
    with torch.no_grad():
        truth.weight.copy_(torch.randn(N_, F_, L_, generator=torch.Generator().manual_seed(seed)))
        truth.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        xs = [rng.standard_normal((F_, T)) for T in lengths[:n_trials]]
        ys = [
            truth(torch.tensor(x, dtype=torch.float32)[None])[0].double().numpy()
            + noise * rng.standard_normal((N_, x.shape[1]))
            for x in xs
        ]
    return truth, xs, ys


def _explicit_ridge(xs, ys, alpha, warmup):
    """The textbook solution on the materialised, mean-centred lagged design."""
    X = np.concatenate([_lagged(x, L_, warmup, x.shape[1]) for x in xs])
    Y = np.concatenate([y[:, warmup:].T for y in ys])
    mx, my = X.mean(0), Y.mean(0)
    w = np.linalg.solve((X - mx).T @ (X - mx) + alpha * np.eye(X.shape[1]), (X - mx).T @ (Y - my))
    return w.T.reshape(N_, F_, L_), my - mx @ w


def test_the_lagged_design_holds_past_frames_in_lag_order():
    x = np.arange(2 * 7, dtype=float).reshape(2, 7)
    X = _lagged(x, 3, 0, 7)  # row t: [x0(t), x0(t-1), x0(t-2), x1(t), x1(t-1), x1(t-2)], 0 before the start
    np.testing.assert_array_equal(X[0], [0, 0, 0, 7, 0, 0])
    np.testing.assert_array_equal(X[4], [4, 3, 2, 11, 10, 9])
    np.testing.assert_array_equal(_lagged(x, 3, 2, 5), X[2:5])


@pytest.mark.parametrize(
    "n_freqs, lags, n_frames, warmup, chunk_size",
    [
        (4, 6, 300, 5, 7),  # the default warm-up: full windows only
        (4, 6, 300, 0, 2048),  # warm-up 0: zero-padded frames before the start enter the sums
        (3, 5, 40, 7, 3),  # a core of a few frames
        (3, 5, 12, 2, 2048),  # shorter than two receptive fields: the explicit design
        (2, 1, 50, 0, 16),  # no lags
        (5, 7, 100, 30, 1),  # a long warm-up, one frame per chunk
    ],
)
def test_lagged_moments_regrouped_by_lag_equal_the_sums_over_the_explicit_design(
    n_freqs, lags, n_frames, warmup, chunk_size
):
    rng = np.random.default_rng(n_frames)
    x, y = rng.standard_normal((n_freqs, n_frames)), rng.standard_normal((2, n_frames))
    m = lagged_moments(x, y, lags, warmup, chunk_size)
    X, Y = _lagged(x, lags, warmup, n_frames), y[:, warmup:].T
    assert m.n == n_frames - warmup
    np.testing.assert_allclose(m.xx, X.T @ X, atol=1e-10)
    np.testing.assert_allclose(m.sx, X.sum(0), atol=1e-10)
    np.testing.assert_allclose(m.xy, X.T @ Y, atol=1e-10)
    np.testing.assert_allclose(m.sy, Y.sum(0), atol=1e-10)
    np.testing.assert_allclose(m.yy, (Y * Y).sum(0), atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 7, 2048])
def test_a_single_alpha_fit_equals_the_textbook_ridge(chunk_size):
    _, xs, ys = _data()
    model = RidgeSTRF(F_, N_, lags=L_, alphas=[3.0], chunk_size=chunk_size).fit(xs, ys, warmup=L_ - 1)
    weight, bias = _explicit_ridge(xs, ys, 3.0, L_ - 1)
    np.testing.assert_allclose(model.strf.numpy(), weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), bias, rtol=1e-5, atol=1e-6)
    assert model.alpha.tolist() == [3.0] * N_ and model.fitted


def test_held_out_r_from_moments_equals_r_of_explicit_predictions():
    _, xs, ys = _data()
    moments = [lagged_moments(x, y, L_, 2) for x, y in zip(xs, ys)]
    train = moments[0] + moments[1] + moments[2]
    held = moments[3] + moments[4]
    alphas = np.array([0.1, 10.0, 1e4])
    w, b = _solve_all(train, alphas)
    r = _held_out_r(w, b, held)
    for a in range(len(alphas)):
        pred = np.concatenate([_lagged(x, L_, 2, x.shape[1]) @ w[a] + b[a] for x in xs[3:]])
        target = np.concatenate([y[:, 2:].T for y in ys[3:]])
        expected = [np.corrcoef(pred[:, n], target[:, n])[0, 1] for n in range(N_)]
        np.testing.assert_allclose(r[a], expected, rtol=1e-9)


def test_alpha_is_chosen_per_channel_by_inner_cv_and_the_strf_is_recovered():
    truth, xs, ys = _data(noise=0.05)
    model = RidgeSTRF(F_, N_, lags=L_, cv="loo").fit(xs, ys)
    assert model.cv_r.shape == (len(model.alphas), N_) and torch.isfinite(model.cv_r).all()
    best = model.alphas[model.cv_r.argmax(0)]
    np.testing.assert_array_equal(model.alpha.numpy(), best.numpy())  # the chosen alpha is the curve's best
    corr = np.corrcoef(model.strf.numpy().ravel(), truth.strf.detach().numpy().ravel())[0, 1]
    assert corr > 0.999


def test_inner_folds_are_whole_trials():
    assert _inner_folds(4, 5) == [[0], [1], [2], [3]]
    assert _inner_folds(10, 3) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert _inner_folds(3, "loo") == [[0], [1], [2]]


def test_a_noisier_channel_gets_a_larger_alpha():
    truth, xs, ys = _data(noise=0.05, n_trials=6)
    rng = np.random.default_rng(1)
    for y in ys:
        y[2] += 8.0 * rng.standard_normal(y.shape[1])  # channel 2 is mostly noise
    model = RidgeSTRF(F_, N_, lags=L_).fit(xs, ys)
    assert model.alpha[2] > model.alpha[0] and model.alpha[2] > model.alpha[1]


def test_bad_settings_and_too_few_trials():
    with pytest.raises(ValueError, match="alphas must be a non-empty list of positive"):
        RidgeSTRF(F_, N_, alphas=[1.0, 0.0])
    with pytest.raises(ValueError, match="alphas must be"):
        RidgeSTRF(F_, N_, alphas=[])
    with pytest.raises(ValueError, match="cv must be 'loo' or a number of inner folds >= 2"):
        RidgeSTRF(F_, N_, cv=1)
    _, xs, ys = _data(n_trials=1)
    with pytest.raises(
        ValueError, match="fallback_alpha=None and 1 training trial: RidgeSTRF chooses alpha by cross-validation"
    ):
        RidgeSTRF(F_, N_, lags=L_).fit(xs, ys)
    with pytest.warns(RuntimeWarning, match="no inner cross-validation: alpha = 10.0"):
        model = RidgeSTRF(F_, N_, lags=L_, fallback_alpha=10.0).fit(xs, ys)
    weight, _ = _explicit_ridge(xs, ys, 10.0, L_ - 1)
    np.testing.assert_allclose(model.strf.numpy(), weight, rtol=1e-5, atol=1e-6)


def test_it_is_a_linear_strf_to_everything_downstream():
    from dstrf.estimate import dstrf

    _, xs, ys = _data()
    model = RidgeSTRF(F_, N_, lags=L_).fit(xs, ys)
    assert isinstance(model, ClosedFormEncoder) and not isinstance(LinearSTRF(F_, N_), ClosedFormEncoder)
    assert model.receptive_field == L_ and not any(p.requires_grad for p in model.parameters())
    x = torch.tensor(xs[0][:, :40], dtype=torch.float32)
    W = dstrf(model, x)  # (T, N, F, L): the same kernel at every frame past the warm-up
    np.testing.assert_allclose(W[L_:].numpy(), np.broadcast_to(model.strf.numpy(), W[L_:].shape), atol=1e-6)


def test_the_laplacian_is_the_sum_of_squared_neighbour_differences():
    from dstrf.models.ridge import laplacian

    w = np.random.default_rng(0).standard_normal((3, 4))  # (F, L)
    expected = ((w[:, 1:] - w[:, :-1]) ** 2).sum() + ((w[1:] - w[:-1]) ** 2).sum()
    np.testing.assert_allclose(w.ravel() @ laplacian(3, 4) @ w.ravel(), expected)


def test_a_laplacian_penalty_solves_its_own_normal_equations_and_smooths():
    from dstrf.models.ridge import laplacian

    _, xs, ys = _data(noise=2.0)
    model = RidgeSTRF(F_, N_, lags=L_, alphas=[300.0], penalty="laplacian").fit(xs, ys, warmup=L_ - 1)
    X = np.concatenate([_lagged(x, L_, L_ - 1, x.shape[1]) for x in xs])
    Y = np.concatenate([y[:, L_ - 1 :].T for y in ys])
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    w = np.linalg.solve(Xc.T @ Xc + 300.0 * laplacian(F_, L_), Xc.T @ Yc)
    np.testing.assert_allclose(model.strf.numpy(), w.T.reshape(N_, F_, L_), rtol=1e-5, atol=1e-6)
    ridge = RidgeSTRF(F_, N_, lags=L_, alphas=[300.0]).fit(xs, ys, warmup=L_ - 1)
    roughness = lambda m: float(np.abs(np.diff(m.strf.numpy(), axis=-1)).sum())  # noqa: E731
    assert roughness(model) < roughness(ridge)
    with pytest.raises(ValueError, match="penalty must be 'ridge' or 'laplacian'"):
        RidgeSTRF(F_, N_, penalty="l1")


def test_a_cholesky_per_alpha_and_one_eigendecomposition_for_all_give_the_same_weights():
    from dstrf.models.ridge import _cholesky_is_cheaper

    _, xs, ys = _data()
    m = sum(
        (lagged_moments(x, y, L_, L_ - 1) for x, y in zip(xs[1:], ys[1:])), lagged_moments(xs[0], ys[0], L_, L_ - 1)
    )
    many = np.logspace(-2, 6, 18)  # eigh
    assert not _cholesky_is_cheaper(len(many), F_ * L_) and _cholesky_is_cheaper(3, F_ * L_)
    w_eig, b_eig = _solve_all(m, many)
    w_cho, b_cho = _solve_all(m, many[[0, 4, 8]])  # Cholesky
    np.testing.assert_allclose(w_cho, w_eig[[0, 4, 8]], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(b_cho, b_eig[[0, 4, 8]], rtol=1e-8, atol=1e-12)
