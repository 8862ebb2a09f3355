import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn
from torch import nn

from dstrf.data.synthetic import make_stimuli
from dstrf.estimate import InactiveGradmapWarning, OptimalStimulus, gradmap, optimal_stimulus
from dstrf.models import LNSTRF, ConvNet2D, DeepEncoder, LinearSTRF, StateNet

from .stand_ins import Centered, WithoutWindows

F, N, T = 8, 3, 30
TOL = dict(rtol=1e-4, atol=1e-5)  # float32


def encoders():
    torch.manual_seed(0)
    models = {
        "linear": LinearSTRF(F, N, lags=6),
        "ln": LNSTRF(F, N, lags=6),
        "deep": DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2, 4)),
        "deep_leaky": DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2, 3), activation="leaky_relu"),
        "convnet2d": ConvNet2D(F, N, channels=3, kernel_size=(3, 5), n_layers=2, hidden=5),
        "gru": StateNet(F, N, kernel_size=3, stride=2, channels=2),
        "lstm": StateNet(F, N, kernel_size=3, stride=2, channels=2, rnn="lstm"),
    }
    with torch.no_grad():  # away from the initial values, so that biases and slopes matter
        for model in models.values():
            for name, p in model.named_parameters():
                if "bias" in name or "log_" in name:
                    p.add_(0.3 * torch.randn_like(p))
    return models


def data_windows(n_frames=T, count=1, seed=0):
    """Windows of a speech-like synthetic trial, standardized per band (what the models take)."""
    (x,), _ = make_stimuli(1, 400, n_freqs=F, seed=seed)
    x = torch.as_tensor(x)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    starts = np.linspace(0, x.shape[1] - n_frames, count).astype(int)
    return [x[:, s : s + n_frames].clone() for s in starts]


def reference(model, x0, lags, readout="last"):
    """The obviously right map: the full Jacobian of every neuron's readout with respect to the whole of x0."""

    def readouts(x):
        out = model(x[None])[0]
        return out[:, -1] if readout == "last" else out[:, -lags:].mean(-1)

    jac = torch.autograd.functional.jacobian(readouts, x0)  # (N, F, T)
    return jac[..., -lags:].flip(-1)  # lag order: k = 0 is the last frame


def lags_of(model):
    return model.receptive_field or 12


# ------------------------------------------------------------------------------------- closed forms


def test_linear_strf_gradmap_is_its_kernel_anywhere():
    model = encoders()["linear"]
    torch.testing.assert_close(gradmap(model), model.strf.detach())
    torch.testing.assert_close(gradmap(model, x0=torch.randn(F, 20)), model.strf.detach())
    torch.testing.assert_close(gradmap(model, convention="paper"), -model.strf.detach())


def test_ln_gradmap_is_the_slope_at_the_bias_times_the_kernel():
    model = encoders()["ln"]
    alpha, beta = model.nonlinearity.alpha.detach(), model.nonlinearity.beta.detach()
    b = model.linear.bias.detach()
    slope = alpha * torch.sigmoid(beta * b)  # d/dz alpha softplus(beta z) / beta at z = b
    expected = slope[:, None, None] * model.strf.detach()
    torch.testing.assert_close(gradmap(model), expected)
    torch.testing.assert_close(gradmap(model, convention="paper"), -expected)
    torch.testing.assert_close(gradmap(model, readout="mean"), _mean_readout_ln(model))


def _mean_readout_ln(model):
    """Mean readout at the null stimulus: frame t of the window sees lags 0..t of it, all at slope s'(b)."""
    L = model.lags
    alpha, beta = model.nonlinearity.alpha.detach(), model.nonlinearity.beta.detach()
    slope = alpha * torch.sigmoid(beta * model.linear.bias.detach())
    # input frame u = L-1-k of the window reaches the outputs t = u .. L-1 through lag t - u
    W = model.strf.detach()
    G = torch.zeros_like(W)
    for k in range(L):
        u = L - 1 - k
        for t in range(u, L):
            G[:, :, k] += W[:, :, t - u]
    return slope[:, None, None] * G / L


# --------------------------------------------------------------------------- against plain autograd


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("name", ["ln", "deep", "deep_leaky", "convnet2d", "gru", "lstm"])
def test_equals_the_per_neuron_autograd_reference(name, readout):
    model = encoders()[name].eval()
    x0 = torch.randn(F, T, generator=torch.Generator().manual_seed(1))
    lags = lags_of(model)
    expected = reference(model, x0, lags, readout)
    got = gradmap(model, lags=lags, x0=x0, readout=readout, chunk_size=2)  # split chunks
    assert got.shape == (N, F, lags) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, **TOL)
    assert expected.abs().max() > 1e-3  # not trivially zero
    # a selection of neurons, in the given order, and fewer lags than the receptive field
    torch.testing.assert_close(
        gradmap(model, lags=lags, x0=x0, readout=readout, neurons=[2, 0]), expected[[2, 0]], **TOL
    )
    torch.testing.assert_close(
        gradmap(model, lags=4, x0=x0, readout=readout, neurons=1), reference(model, x0, 4, readout)[[1]], **TOL
    )


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("name", ["convnet2d", "gru", "deep_leaky"])
def test_population_map_is_the_map_of_the_mean_response(name, readout):
    model = encoders()[name].eval()
    x0 = torch.randn(F, T, generator=torch.Generator().manual_seed(2))
    lags = lags_of(model)
    expected = reference(model, x0, lags, readout)[[0, 2]].mean(0, keepdim=True)
    torch.testing.assert_close(gradmap(model, lags, x0, readout, population=[0, 2]), expected, **TOL)
    torch.testing.assert_close(gradmap(model, lags, x0, readout, neurons=[0, 2], population=True), expected, **TOL)
    everyone = reference(model, x0, lags, readout).mean(0, keepdim=True)
    torch.testing.assert_close(gradmap(model, lags, x0, readout, population=True), everyone, **TOL)


@pytest.mark.parametrize("name", ["ln", "deep_leaky", "convnet2d", "gru"])
def test_null_stimulus_is_zeros_and_the_frames_before_it_are_the_same_padding(name):
    model = encoders()[name].eval()
    lags = lags_of(model)
    for readout in ("last", "mean"):
        got = gradmap(model, lags=lags, readout=readout)
        torch.testing.assert_close(got, reference(model, torch.zeros(F, lags), lags, readout), **TOL)
    if model.receptive_field:  # a window shorter than the receptive field: the model pads with the same zeros
        long = torch.zeros(F, 3 * model.receptive_field)
        torch.testing.assert_close(gradmap(model, lags=3), reference(model, long, 3), **TOL)


class RawUnits(nn.Module):
    """Takes raw units and standardizes them first; it pads with the mean, its null stimulus (``padding_value``)."""

    def __init__(self, inner, mean, std):
        super().__init__()
        self.inner, self.receptive_field, self.n_freqs = inner, inner.receptive_field, inner.n_freqs
        self.register_buffer("padding_value", mean)
        self.register_buffer("std", std)

    def forward(self, x, causal_padding=True):
        return self.inner((x - self.padding_value[:, None]) / self.std[:, None], causal_padding)


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_null_stimulus_of_a_model_in_raw_units_is_its_padding_value(readout):
    inner = encoders()["convnet2d"]
    mean, std = torch.rand(F) * 3, torch.rand(F) + 0.5
    raw = RawUnits(inner, mean, std)
    expected = gradmap(inner, readout=readout) / std[None, :, None]  # chain rule through the standardization
    torch.testing.assert_close(gradmap(raw, readout=readout), expected, **TOL)
    torch.testing.assert_close(
        gradmap(raw, lags=3, readout=readout),
        reference(raw.eval(), mean[:, None].expand(F, 40).clone(), 3, readout),
        **TOL,
    )


@pytest.mark.parametrize("name", ["deep", "convnet2d"])
def test_model_without_a_window_path_gives_the_same_map(name):
    model = encoders()[name]
    x0 = torch.randn(F, T)
    for readout in ("last", "mean"):
        torch.testing.assert_close(
            gradmap(WithoutWindows(model), x0=x0, readout=readout), gradmap(model, x0=x0, readout=readout), **TOL
        )


def test_falls_back_to_one_backward_pass_per_neuron_without_batching_rules(monkeypatch):
    model = encoders()["gru"]
    x0 = torch.randn(F, T)
    expected = gradmap(model, lags=10, x0=x0, chunk_size=2)
    real = torch.autograd.grad
    calls = {"batched": 0}

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            calls["batched"] += 1
            raise RuntimeError("Batching rule not implemented for aten::_fused_rnn_backward")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    got = gradmap(model, lags=10, x0=x0, chunk_size=2)
    assert calls["batched"] == 1  # tried once, then per neuron
    torch.testing.assert_close(got, expected, **TOL)


# ---------------------------------------------------------------------------- the model is untouched


class CausalBatchNormNet(nn.Module):
    """Causal conv -> BatchNorm -> ReLU -> dropout -> readout: train mode would change the map and the stats."""

    receptive_field = 4
    n_freqs = F

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(F, 5, 4)
        self.norm = nn.BatchNorm1d(5)
        self.drop = nn.Dropout(0.5)
        self.readout = nn.Conv1d(5, N, 1)
        with torch.no_grad():
            self.norm.running_mean.normal_()
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.readout(self.drop(torch.relu(self.norm(self.conv(Fn.pad(x, (3, 0)))))))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, {
        n: p.requires_grad for n, p in model.named_parameters()
    }


@pytest.mark.parametrize("name", ["batchnorm", "convnet2d_dropout", "deep_dropout", "gru"])
def test_model_mode_parameters_and_grads_are_left_as_they_were(name):
    torch.manual_seed(3)
    model = {
        "batchnorm": CausalBatchNormNet,
        "convnet2d_dropout": lambda: ConvNet2D(F, N, channels=3, kernel_size=(3, 5), n_layers=2, hidden=5, dropout=0.5),
        "deep_dropout": lambda: DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2), dropout=0.5),
        "gru": lambda: StateNet(F, N, kernel_size=3, stride=2, channels=2),
    }[name]()
    lags = model.receptive_field or 8
    x0 = data_windows()[0]
    expected = gradmap(model.eval(), lags=lags, x0=x0)
    model.train()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 7.0)
    state, requires = _snapshot(model)
    for _ in range(2):  # train-mode dropout / batch statistics would make these differ
        torch.testing.assert_close(gradmap(model, lags=lags, x0=x0), expected)
    result = optimal_stimulus(model, 0, steps=5, lags=lags, x0=x0, progress=False)
    assert result.stimulus.shape == (F, lags)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(params[0].grad, torch.full_like(params[0], 7.0))
    assert all(p.grad is None for p in params[1:])
    after, requires_after = _snapshot(model)
    assert requires_after == requires and all(torch.equal(v, after[k]) for k, v in state.items())


def test_mode_is_restored_when_the_computation_fails():
    model = encoders()["convnet2d"].train()

    class Boom(Exception):
        pass

    def explode(*args):
        raise Boom

    model.fc2.register_forward_hook(lambda *args: explode() if not model.training else None)
    with pytest.raises(Boom):
        gradmap(model)
    assert model.training
    with pytest.raises(Boom):
        optimal_stimulus(model, 0, steps=3, progress=False)
    assert model.training


def test_works_inside_no_grad_and_with_a_requires_grad_x0():
    model = encoders()["convnet2d"]
    x0 = torch.randn(F, T, requires_grad=True)
    with torch.no_grad():
        got = gradmap(model, x0=x0)
    torch.testing.assert_close(got, reference(model.eval(), x0.detach(), model.receptive_field), **TOL)
    assert x0.grad is None


# ------------------------------------------------------------------------------- a stack of references


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("name", ["deep", "convnet2d", "gru"])
def test_a_stack_of_windows_gives_the_mean_of_their_maps(name, readout):
    model = encoders()[name].eval()
    lags = lags_of(model)
    windows = data_windows(T, count=5)
    expected = torch.stack([reference(model, w, lags, readout) for w in windows]).mean(0)
    got = gradmap(model, lags=lags, x0=torch.stack(windows), readout=readout, chunk_size=2)
    torch.testing.assert_close(got, expected, **TOL)
    first = reference(model, windows[0], lags, readout)
    assert (got - first).abs().max() > 0.05 * expected.abs().max() > 0  # the mean, not one window's map
    # a stack of one window is that window's map; a population averages over the stack too
    torch.testing.assert_close(gradmap(model, lags, windows[0][None], readout), first, **TOL)
    population = gradmap(model, lags, torch.stack(windows), readout, population=[0, 2])
    torch.testing.assert_close(population, expected[[0, 2]].mean(0, keepdim=True), **TOL)


def test_the_mean_map_over_data_windows_is_the_mean_dstrf_at_their_frames():
    from dstrf.estimate import dstrf

    model = encoders()["deep"].eval()
    (x,), _ = make_stimuli(1, 300, n_freqs=F, seed=3)
    x = torch.as_tensor(x)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    lags = model.receptive_field
    frames = [40, 95, 170, 299]
    windows = torch.stack([x[:, t - lags + 1 : t + 1] for t in frames])
    expected = dstrf(model, x, times=frames).mean(0)  # (N, F, L)
    torch.testing.assert_close(gradmap(model, x0=windows), expected, **TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveGradmapWarning)  # informative where the null stimulus is flat
        assert torch.all(gradmap(model, x0=windows).flatten(1).abs().amax(1) > 0)


# ----------------------------------------------------------------------------------------- warnings


def test_bias_free_relu_network_at_the_null_stimulus_warns_and_a_data_window_fixes_it():
    model = encoders()["deep"]
    with pytest.warns(InactiveGradmapWarning, match=r"neurons \[0, 1, 2\].*all zeros.*every unit off.*pass x0="):
        zero = gradmap(model)
    assert torch.all(zero == 0)
    with pytest.warns(InactiveGradmapWarning, match="population map"):
        gradmap(model, population=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveGradmapWarning)
        informative = gradmap(model, x0=data_windows()[0])
    assert torch.all(informative.flatten(1).abs().amax(1) > 0)


def test_the_warning_names_only_the_flat_neurons():
    model = encoders()["linear"]
    with torch.no_grad():
        model.weight[1] = 0
    with pytest.warns(InactiveGradmapWarning, match=r"map of neuron \[1\] \(1 of 3\) is all zeros") as record:
        gradmap(model)
    assert "readout='mean'" in str(record[0].message)  # no ReLU is off: the other readout may help
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveGradmapWarning)
        gradmap(model, neurons=[0, 2])


# -------------------------------------------------------------------------------- optimal stimulus


@pytest.mark.parametrize("name", ["deep", "ln"])
def test_optimal_stimulus_drives_the_neuron_beyond_the_data_within_the_range(name, capsys):
    model = encoders()[name]
    lags = model.receptive_field
    windows = data_windows(lags, count=40)
    noise = list(torch.randn(40, F, lags, generator=torch.Generator().manual_seed(5)))

    def response(x):
        with torch.no_grad():
            return float(model.eval()(x[None])[0, 1, -1])

    result = optimal_stimulus(model, 1, steps=200, lr=0.1, x0=windows[0], progress=False)
    assert isinstance(result, OptimalStimulus) and result.stimulus.shape == (F, lags)
    assert result.response.shape == (201,) and result.neurons == [1]
    assert result.stimulus.abs().max() <= 3.0 + 1e-6  # the default constraint: range (-3, 3)
    final = response(result.stimulus)
    np.testing.assert_allclose(result.response[-1], final, rtol=1e-5)
    np.testing.assert_allclose(result.response[0], response(windows[0].clamp(-3, 3)), rtol=1e-5)
    seen = [response(w) for w in windows + noise]
    spread = max(seen) - min(seen)
    assert final > max(seen) + spread  # well above the data and random stimuli, not just above x0
    assert result.gain > 0 and result.response[-1] >= result.response[:10].max()
    assert capsys.readouterr().err == ""  # progress=False: no bar


def test_optimal_stimulus_norm_constraint_snapshots_population_and_progress_bar(capsys):
    model = encoders()["convnet2d"]
    radius = 5.0
    result = optimal_stimulus(model, [0, 2], steps=60, constraint=("norm", radius), snapshots=20, progress=True)
    assert torch.linalg.vector_norm(result.stimulus) <= radius * (1 + 1e-5)
    assert [s for s, _ in result.snapshots] == [0, 20, 40, 60]
    torch.testing.assert_close(result.snapshots[-1][1], result.stimulus)
    assert torch.all(result.snapshots[0][1] == 0)  # x0: the null stimulus
    with torch.no_grad():
        mean = model.eval()(result.stimulus[None])[0, [0, 2], -1].mean()
    np.testing.assert_allclose(result.response[-1], float(mean), rtol=1e-5)
    assert result.response[-1] > result.response[0]
    assert "optimal stimulus" in capsys.readouterr().err


def test_optimal_stimulus_of_a_recurrent_model_keeps_the_context_of_a_longer_x0():
    model = encoders()["gru"]
    x0 = data_windows(40)[0]
    result = optimal_stimulus(model, 0, steps=50, lags=10, x0=x0, readout="mean", snapshots=[0, 50], progress=False)
    assert result.stimulus.shape == (F, 10)
    torch.testing.assert_close(result.snapshots[0][1], x0[:, -10:].clamp(-3, 3))
    with torch.no_grad():
        full = torch.cat([x0[:, :30], result.stimulus], dim=1)
        mean = model.eval()(full[None])[0, 0, -10:].mean()
    np.testing.assert_allclose(result.response[-1], float(mean), rtol=1e-5)
    assert result.response[-1] > result.response[0]


def test_optimal_stimulus_from_a_flat_point_warns():
    with pytest.warns(InactiveGradmapWarning, match="cannot move"):
        result = optimal_stimulus(encoders()["deep"], 0, steps=3, progress=False)
    assert torch.all(result.stimulus == 0)


# ------------------------------------------------------------------------------------------- errors


def test_bad_input_gets_clear_errors():
    m = encoders()
    with pytest.raises(ValueError, match="StateNet is recurrent .* pass lags"):
        gradmap(m["gru"])
    with pytest.raises(ValueError, match="StateNet is recurrent .* pass lags"):
        optimal_stimulus(m["gru"], 0, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"lags=7 exceeds the receptive field of LinearSTRF \(6 frames\)"):
        gradmap(m["linear"], lags=7)
    with pytest.raises(ValueError, match=r"takes 8 frequency bands; x0 has 5"):
        gradmap(m["deep"], x0=torch.randn(5, 40))
    with pytest.raises(ValueError, match=r"x0 must be one stimulus window \(freqs, frames\), or a stack"):
        gradmap(m["deep"], x0=torch.randn(1, 1, F, 40))
    with pytest.raises(ValueError, match=r"a stack of no windows"):
        gradmap(m["deep"], x0=torch.randn(0, F, 40))
    with pytest.raises(ValueError, match=r"x0 must be one stimulus window \(freqs, frames\); got shape"):
        optimal_stimulus(m["deep"], 0, steps=1, x0=torch.randn(2, F, 40), progress=False)
    with pytest.raises(ValueError, match=r"takes 8 frequency bands; x0 has 5"):
        gradmap(m["deep"], x0=torch.randn(2, 5, 40))
    with pytest.raises(ValueError, match="x0 has 10 frames, fewer than lags=12"):
        gradmap(m["gru"], lags=12, x0=torch.randn(F, 10))
    with pytest.raises(ValueError, match="readout must be one of"):
        gradmap(m["deep"], readout="first")
    with pytest.raises(ValueError, match="convention must be one of"):
        gradmap(m["deep"], convention="inhibitory")
    with pytest.raises(ValueError, match=r"neurons \[3\] out of range: valid 0..2"):
        gradmap(m["deep"], neurons=[3])
    with pytest.raises(ValueError, match=r"neurons \[5\] out of range"):
        gradmap(m["deep"], population=[0, 5])
    with pytest.raises(ValueError, match="not both"):
        gradmap(m["deep"], neurons=[0], population=[1])
    with pytest.raises(ValueError, match=r"neurons \[3\] out of range"):
        optimal_stimulus(m["convnet2d"], 3, steps=1, progress=False)
    with pytest.raises(ValueError, match="constraint must be None, \\('range', lo, hi\\)"):
        optimal_stimulus(m["convnet2d"], 0, constraint=("box", 1), progress=False)
    with pytest.raises(ValueError, match="constraint must be"):
        optimal_stimulus(m["convnet2d"], 0, constraint=("range", 3, -3), progress=False)
    with pytest.raises(ValueError, match="not causal"):
        gradmap(Centered(F, N))


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_recurrent_context_runs_without_a_graph_and_gives_the_full_sequence_gradient(rnn):
    torch.manual_seed(3)
    model = StateNet(F, N, kernel_size=3, stride=2, channels=2, rnn=rnn).eval()
    x0 = torch.randn(F, 40)
    lags = 6
    leaf = x0.clone().requires_grad_(True)
    output = model(leaf[None])[0, :, -1]  # the whole sequence in one graph: the reference
    reference = torch.stack(
        [torch.autograd.grad(output[n], leaf, retain_graph=True)[0][:, -lags:].flip(-1) for n in range(N)]
    )
    assert reference[:, :, lags - 1].abs().max() > 0  # the oldest frame of the window reaches the readout
    torch.testing.assert_close(gradmap(model, lags=lags, x0=x0), reference, rtol=1e-5, atol=1e-7)
    y, state = model(x0[None, :, :34], return_state=True)
    torch.testing.assert_close(model(x0[None, :, 34:], state=state), model(x0[None])[:, :, 34:])
