"""Conventions every encoder in dstrf.models must satisfy, plus model-specific exactness checks."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dstrf.models import LNSTRF, ConvNet2D, DeepEncoder, LinearSTRF, ParametricSoftplus, StateNet

F_, N_, B_ = 16, 3, 2
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"

# Small versions of every encoder; DeepEncoder uses LeakyReLU so no lag of its gradient is dead by chance.
SMALL = {
    "linear": lambda **kw: LinearSTRF(F_, N_, lags=20, **kw),
    "ln": lambda **kw: LNSTRF(F_, N_, lags=20, **kw),
    "deep": lambda **kw: DeepEncoder(
        F_, N_, hidden=16, kernel_size=3, dilations=(1, 2, 4), activation="leaky_relu", **kw
    ),
    "conv2d": lambda **kw: ConvNet2D(F_, N_, channels=4, n_layers=2, hidden=8, **kw),
    "state": lambda **kw: StateNet(F_, N_, channels=3, **kw),
}
NAMES = list(SMALL)


def make(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SMALL[name](**kw)


def stim(t: int = 120, b: int = B_, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, F_, t, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype(name: str) -> None:
    y = make(name)(stim())
    assert y.shape == (B_, N_, 120)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_causal(name: str) -> None:
    model = make(name).eval()
    x = stim()
    y = model(x)
    for t in (0, 37, 118):
        x2 = x.clone()
        x2[:, :, t + 1 :] = torch.randn_like(x2[:, :, t + 1 :]) * 5
        y2 = model(x2)
        assert torch.equal(y[:, :, : t + 1], y2[:, :, : t + 1])
        assert not torch.equal(y[:, :, t + 1 :], y2[:, :, t + 1 :])


@pytest.mark.parametrize("name", NAMES)
def test_receptive_field_is_gradient_support(name: str) -> None:
    model = make(name).double().eval()
    rf = model.receptive_field
    t_len = 120 if rf is None else rf + 40
    x = stim(t_len, b=1, dtype=torch.float64).requires_grad_(True)
    t = t_len - 1
    model(x)[0, 1, t].backward()
    support = (x.grad[0].abs() > 0).any(dim=0).nonzero().flatten()
    if rf is None:
        assert isinstance(model, StateNet)
        assert support.tolist() == list(range(t + 1))  # reaches back to frame 0
    else:
        assert support.tolist() == list(range(t - rf + 1, t + 1))


def test_receptive_fields_of_defaults() -> None:
    assert LinearSTRF(F_, N_).receptive_field == 65
    assert LNSTRF(F_, N_).receptive_field == 65
    assert DeepEncoder(F_, N_).receptive_field == 65
    assert ConvNet2D(F_, N_).receptive_field == 25
    assert StateNet(F_, N_).receptive_field is None


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_agree_without_dropout(name: str) -> None:
    model = make(name)
    x = stim()
    y_train = model.train()(x)
    y_eval = model.eval()(x)
    assert torch.equal(y_train, y_eval)


@pytest.mark.parametrize("name", ["deep", "conv2d"])
def test_dropout_only_in_training(name: str) -> None:
    model = make(name, dropout=0.5)
    x = stim()
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_raises(name: str) -> None:
    model = make(name)
    with pytest.raises(ValueError, match=r"16 freqs.*got shape \(4, 8, 100\)"):
        model(torch.zeros(4, 8, 100))
    with pytest.raises(ValueError, match=r"16 freqs.*got shape \(16, 100\)"):
        model(torch.zeros(16, 100))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="n_freqs >= 7"):
        ConvNet2D(6, N_)
    with pytest.raises(ValueError, match="n_freqs >= kernel_size=7"):
        StateNet(6, N_)
    with pytest.raises(ValueError, match="activation"):
        DeepEncoder(F_, N_, activation="tanh")
    with pytest.raises(ValueError, match="rnn"):
        StateNet(F_, N_, rnn="elman")
    with pytest.raises(ValueError, match="kernel_size must have 2 entries"):
        ConvNet2D(F_, N_, kernel_size=(3, 9, 1))
    with pytest.raises(ValueError, match="dropout"):
        DeepEncoder(F_, N_, dropout=1.0)
    with pytest.raises(ValueError, match="lags"):
        LinearSTRF(F_, N_, lags=0)


def test_linear_strf_matches_numpy() -> None:
    model = make("linear")
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = stim(50)
    y = model(x).detach().numpy()
    w, b, xn = model.weight.detach().numpy(), model.bias.detach().numpy(), x.numpy()
    n_out, n_f, n_lags = w.shape
    expected = np.tile(b[None, :, None], (B_, 1, 50)).astype(np.float64)
    for t in range(50):
        for k in range(min(n_lags, t + 1)):  # frames before 0 are zero padding
            expected[:, :, t] += np.einsum("nf,bf->bn", w[:, :, k], xn[:, :, t - k])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert model.strf.shape == (N_, F_, 20)
    assert LNSTRF(F_, N_, lags=20).strf.shape == (N_, F_, 20)


def test_ln_strf_is_linear_then_softplus() -> None:
    model = make("ln")
    x = stim()
    assert isinstance(model.linear, LinearSTRF)
    assert isinstance(model.nonlinearity, ParametricSoftplus)
    assert torch.equal(model(x), model.nonlinearity(model.linear(x)))
    assert model.strf is model.linear.weight


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_deep_encoder_dstrf_is_exact(activation: str) -> None:
    torch.manual_seed(0)
    model = DeepEncoder(F_, N_, hidden=16, activation=activation).double().eval()
    x = stim(100, b=1, dtype=torch.float64)
    y = model(x)
    bias = model.readout.bias
    for t in (30, 99):  # one window overlapping the zero padding, one fully inside the trial
        for n in range(N_):
            xg = x.clone().requires_grad_(True)
            out = model(xg)[0, n, t]
            (jac,) = torch.autograd.grad(out, xg)
            assert jac.abs().sum() > 0  # not a dead unit: the identity says something
            recon = bias[n] + (jac * x).sum()
            torch.testing.assert_close(recon, y[0, n, t], rtol=1e-10, atol=1e-10)


def test_deep_encoder_accepts_list_dilations() -> None:
    model = DeepEncoder(F_, N_, hidden=8, dilations=[1, 2])
    assert model.dilations == (1, 2)
    assert model.receptive_field == 1 + 4 * 3


def test_statenet_lstm() -> None:
    torch.manual_seed(0)
    model = StateNet(F_, N_, rnn="lstm")
    assert isinstance(model.rnn, torch.nn.LSTM)
    assert model.state_size == 7 * ((F_ - 7) // 3 + 1)
    assert model(stim()).shape == (B_, N_, 120)


def test_parametric_softplus_positive_and_trainable() -> None:
    torch.manual_seed(0)
    act = ParametricSoftplus(N_)
    torch.testing.assert_close(act.alpha, torch.ones(N_))
    torch.testing.assert_close(act.beta, torch.ones(N_))
    z = torch.linspace(-30, 30, 200).expand(2, N_, 200)
    y = act(z)
    assert (y > 0).all()
    assert torch.allclose(y[..., -1], z[..., -1], rtol=1e-6)  # unit slope for large z
    # Minimising the output pulls alpha towards 0 with large steps; it must stay positive.
    opt = torch.optim.SGD(act.parameters(), lr=5.0)
    for _ in range(100):
        opt.zero_grad()
        act(z).mean().backward()
        opt.step()
    assert torch.isfinite(act.alpha).all() and torch.isfinite(act.beta).all()
    assert (act.alpha > 0).all() and (act.beta > 0).all()
    assert act.alpha.max() < 0.5  # it did move
    assert (act(z) > 0).all()


CONFIGS = sorted(CONF_DIR.glob("*.yaml"))


def test_every_model_has_a_config() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"linear_strf", "ln_strf", "deep_encoder", "convnet2d", "statenet"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates(path: Path) -> None:
    cfg = OmegaConf.load(path)
    assert "n_freqs" not in cfg and "n_outputs" not in cfg
    model = instantiate(cfg, n_freqs=F_, n_outputs=N_)
    y = model(stim(80))
    assert y.shape == (B_, N_, 80)
    assert torch.isfinite(y).all()
    # Every hyperparameter is in the config and equals the constructor default.
    params = inspect.signature(type(model)).parameters
    hyper = {k: p.default for k, p in params.items() if k not in ("n_freqs", "n_outputs")}
    assert set(hyper) == set(cfg) - {"_target_"}
    for key, default in hyper.items():
        value = OmegaConf.to_object(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        assert (tuple(value) if isinstance(value, list) else value) == default, key
