import pytest
import torch

from dstrf.estimate import dstrf
from dstrf.models import LNSTRF, ConvNet2D, DeepEncoder, LinearSTRF, StateNet

from .stand_ins import Centered, WithoutWindows

F, N, T = 8, 3, 70


def encoders():
    torch.manual_seed(0)
    return {
        "linear": LinearSTRF(F, N, lags=6),
        "ln": LNSTRF(F, N, lags=6),
        "deep": DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2, 4)),
        "convnet2d": ConvNet2D(F, N, channels=3, kernel_size=(3, 5), n_layers=2, hidden=5),
        "statenet": StateNet(F, N, kernel_size=3, stride=2, channels=2),
    }


def reference(model, x, lags):
    """The slow, obviously right dSTRF: the full Jacobian, then each output's window of L input frames."""
    jac = torch.autograd.functional.jacobian(lambda inp: model(inp[None])[0], x)  # (N, T, F, T)
    n_frames = x.shape[1]
    W = torch.zeros(n_frames, jac.shape[0], x.shape[0], lags, dtype=x.dtype)
    for t in range(n_frames):
        for k in range(min(lags, t + 1)):
            W[t, :, :, k] = jac[:, t, :, t - k]
    return W


@pytest.mark.parametrize("name", list(encoders()))
def test_equals_the_autograd_jacobian(name):
    model = encoders()[name].double().eval()
    x = torch.randn(F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lags = model.receptive_field or 12
    expected = reference(model, x, lags)
    # small chunks and batches exercise the chunk seams and split batches of phases
    got = dstrf(model, x, lags=lags, chunk_size=17, batch_size=7, dtype=torch.float64)
    assert got.shape == (T, N, F, lags)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(encoders()))
def test_on_a_gpu_equals_the_cpu_result(name):
    model = encoders()[name].double().eval()
    x = torch.randn(F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lags = model.receptive_field or 12
    cpu = dstrf(model, x, lags=lags, chunk_size=17, batch_size=7, dtype=torch.float64)
    gpu = dstrf(model.cuda(), x.cuda(), lags=lags, chunk_size=17, batch_size=7, dtype=torch.float64)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["deep", "linear"])
def test_output_is_exactly_bias_plus_dstrf_times_window(name):
    model = encoders()[name]
    x = torch.randn(F, T, generator=torch.Generator().manual_seed(2))
    W = dstrf(model, x)
    L = W.shape[-1]
    padded = torch.nn.functional.pad(x, (L - 1, 0))
    windows = torch.stack([padded[:, t : t + L].flip(-1) for t in range(T)])  # (T, F, L), lag order
    bias = model.readout.bias if name == "deep" else model.bias
    reconstructed = bias[None, :] + torch.einsum("tnfk,tfk->tn", W, windows)
    with torch.no_grad():
        torch.testing.assert_close(reconstructed, model(x[None])[0].T, rtol=1e-5, atol=1e-5)


def test_linear_strf_dstrf_is_its_kernel_at_every_frame():
    model = encoders()["linear"]
    W = dstrf(model, torch.randn(F, T))
    L = model.receptive_field
    torch.testing.assert_close(W[L - 1 :], model.strf.detach()[None].expand(T - L + 1, -1, -1, -1))
    # before the trial start the window holds padding, not data: those lags are zero
    assert torch.all(W[0, :, :, 1:] == 0) and torch.equal(W[0, :, :, 0], model.strf.detach()[:, :, 0])


def test_channels_times_and_storage_type_select_the_same_numbers():
    model = encoders()["deep"]
    x = torch.randn(F, T)
    full = dstrf(model, x)
    part = dstrf(model, x, channels=[2, 0], times=[65, 3, 40], dtype=torch.float16)
    assert part.dtype == torch.float16 and part.shape == (3, 2, F, full.shape[-1])
    torch.testing.assert_close(part.float(), full[[65, 3, 40]][:, [2, 0]], rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(dstrf(model, x, times=slice(10, 20)), full[10:20])
    fewer = dstrf(model, x, lags=4)  # a truncation to the most recent frames is allowed
    torch.testing.assert_close(fewer, full[..., :4])


def test_leaves_the_model_as_it_was():
    model = encoders()["deep"]
    model.train()
    model.readout.weight.grad = torch.ones_like(model.readout.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dstrf(model, torch.randn(F, T))
    assert model.training
    assert torch.equal(model.readout.weight.grad, torch.ones_like(model.readout.weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "readout.weight")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bad_input_gets_clear_errors():
    models = encoders()
    with pytest.raises(ValueError, match=r"lags=7 exceeds the receptive field of LinearSTRF \(6 frames\)"):
        dstrf(models["linear"], torch.randn(F, T), lags=7)
    with pytest.raises(ValueError, match="StateNet is recurrent .* pass lags"):
        dstrf(models["statenet"], torch.randn(F, T))
    with pytest.raises(ValueError, match=r"takes 8 frequency bands; x has 5"):
        dstrf(models["deep"], torch.randn(5, T))
    with pytest.raises(ValueError, match=r"\(freqs, frames\)"):
        dstrf(models["deep"], torch.randn(1, F, T))
    with pytest.raises(ValueError, match="not causal: its output at frame 8 depends on frame 10"):
        dstrf(Centered(F, N), torch.randn(F, T))
    with pytest.raises(ValueError, match=r"channels \[3\] out of range"):
        dstrf(models["deep"], torch.randn(F, T), channels=[3])


@pytest.mark.parametrize("name", ["deep", "convnet2d"])
def test_phase_comb_path_equals_the_jacobian_too(name):
    model = WithoutWindows(encoders()[name]).double().eval()
    x = torch.randn(F, T, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    expected = reference(model, x, model.receptive_field)
    torch.testing.assert_close(
        dstrf(model, x, chunk_size=23, batch_size=5, dtype=torch.float64), expected, rtol=1e-9, atol=1e-12
    )


def test_every_submodule_gets_its_own_mode_back():
    from dstrf.estimate import gradmap

    model = DeepEncoder(4, 2, hidden=6)
    model.train()
    frozen = list(model.modules())[2]
    frozen.eval()  # e.g. a frozen layer inside a model being trained
    modes = [m.training for m in model.modules()]
    x = torch.randn(4, 80)
    dstrf(model, x)
    assert [m.training for m in model.modules()] == modes
    gradmap(model, x0=x)
    assert [m.training for m in model.modules()] == modes
    with pytest.raises(ValueError, match=r"times \[80\] out of range"):
        dstrf(model, x, times=[80])  # an error raised in eval mode
    assert [m.training for m in model.modules()] == modes


def test_data_units_wrapper_of_an_encoder_without_a_window_path_uses_its_plain_forward():
    from dstrf.lit import EncoderModule

    module = EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 4, "dilations": [1, 2]}, F, N)
    module.encoder = WithoutWindows(module.encoder)  # no causal_padding argument, no window_output
    model = module.data_units().double()
    x = torch.randn(F, 30, dtype=torch.float64)
    expected = torch.autograd.functional.jacobian(lambda s: model(s[None])[0], x)  # (N, T, F, T)
    W = dstrf(model, x, dtype=torch.float64)
    lags = model.receptive_field
    for t in (lags, 20, 29):
        window = expected[:, t, :, t - lags + 1 : t + 1].flip(-1)
        torch.testing.assert_close(W[t], window)


def test_no_module_shadows_the_function_dstrf_estimate_dstrf():
    """The engine's module is ``jacobian``. With a module ``dstrf/estimate/dstrf.py``, any ``import
    dstrf.estimate.dstrf`` (or a tool importing every submodule) rebound ``dstrf.estimate.dstrf`` to the module."""
    import importlib
    import importlib.util
    import types

    estimate = importlib.import_module("dstrf.estimate")
    for name in (
        "dstrf.inspect",
        "dstrf.lit.callbacks",
        "dstrf.sweep.posthoc",
        "dstrf.estimate.jacobian",
        "dstrf.estimate.gradmap",
        "dstrf.estimate.jackknife",
    ):
        importlib.import_module(name)
    assert importlib.util.find_spec("dstrf.estimate.dstrf") is None
    assert callable(estimate.dstrf) and not isinstance(estimate.dstrf, types.ModuleType)
    assert estimate.dstrf is importlib.import_module("dstrf.estimate.jacobian").dstrf


def test_the_hidden_unit_route_equals_the_per_channel_route():
    """DeepEncoder's readout is linear over H hidden units: W[t, n] = sum_h U[n, h] dh_h/dX_t, H backward passes."""
    from dstrf.models import encoder_capabilities

    torch.manual_seed(0)
    model = DeepEncoder(6, 9, hidden=4, kernel_size=3, dilations=(1, 2))  # N = 9 > H = 4: the route applies
    assert encoder_capabilities(model).linear_readout == 4
    x = torch.randn(6, 120)
    per_channel = dstrf(model, x, hidden_units=False, dtype=torch.float64)
    hidden = dstrf(model, x, hidden_units=True, dtype=torch.float64)
    torch.testing.assert_close(hidden, per_channel, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dstrf(model, x, channels=[7, 2], times=[90, 3]), per_channel[[90, 3]][:, [7, 2]].float())
    assert float(per_channel.abs().max()) > 0
    with pytest.raises(ValueError, match="hidden_units=True needs a linear readout"):
        dstrf(LinearSTRF(6, 2, lags=5), x, hidden_units=True)


def test_the_hidden_unit_route_in_data_units():
    from dstrf.lit.module import DataUnitsEncoder, EncoderModule
    from dstrf.models import encoder_capabilities

    torch.manual_seed(1)
    module = EncoderModule(
        {"_target_": "dstrf.models.DeepEncoder", "hidden": 3, "kernel_size": 3, "dilations": [1, 2]}, 5, 7
    )
    module.stimulus_mean.copy_(torch.randn(5))
    module.stimulus_std.copy_(torch.rand(5) + 0.5)
    module.response_std.copy_(torch.rand(7) + 0.5)
    model = DataUnitsEncoder(module)
    assert encoder_capabilities(model).linear_readout == 3
    x = torch.randn(5, 80) * 2 + 1
    torch.testing.assert_close(
        dstrf(model, x, hidden_units=True), dstrf(model, x, hidden_units=False), rtol=1e-4, atol=1e-6
    )
