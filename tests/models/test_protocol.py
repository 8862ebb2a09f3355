"""The encoder protocol: every dstrf encoder satisfies it and declares what it can do, and any other module
gets the documented defaults (or what its forward accepts)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import dstrf.models
from dstrf.models import (
    LNSTRF,
    ConvNet2D,
    DeepEncoder,
    Encoder,
    EncoderBase,
    EncoderCapabilities,
    LinearSTRF,
    RidgeSTRF,
    StateNet,
    encoder_capabilities,
)

from ..estimate.stand_ins import Centered, WithoutWindows

F, N = 9, 3

MODELS = {
    "linear": lambda: LinearSTRF(F, N, lags=6),
    "ln": lambda: LNSTRF(F, N, lags=6),
    "deep": lambda: DeepEncoder(F, N, hidden=4, kernel_size=3, dilations=(1, 2), activation="leaky_relu"),
    "conv2d": lambda: ConvNet2D(F, N, channels=2, n_layers=2, hidden=4),
    "state": lambda: StateNet(F, N, kernel_size=3, stride=2, channels=2),
    "ridge": lambda: RidgeSTRF(F, N, lags=6),
}

# (receptive field, windowed, window_output, stateful, positive_output) of each, as the models document them
EXPECTED = {
    "linear": (6, True, False, False, False),
    "ln": (6, True, False, False, True),
    "deep": (7, True, True, False, False),
    "conv2d": (17, True, False, False, True),
    "state": (None, False, False, True, True),
    "ridge": (6, True, False, False, False),
}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().eval()


def test_the_protocol_is_exported_from_dstrf_models():
    for name in ("Encoder", "EncoderBase", "EncoderCapabilities", "encoder_capabilities"):
        assert name in dstrf.models.__all__
    assert dstrf.models.Encoder is Encoder


@pytest.mark.parametrize("name", list(MODELS))
def test_every_dstrf_encoder_is_an_encoder_with_its_capabilities(name):
    model = make(name)
    assert isinstance(model, Encoder)
    assert isinstance(model, EncoderBase)
    receptive_field, windowed, window_output, stateful, positive = EXPECTED[name]
    caps = encoder_capabilities(model)
    assert caps == EncoderCapabilities(
        n_freqs=F,
        n_outputs=N,
        has_receptive_field=True,
        receptive_field=receptive_field,
        causal_padding=windowed,
        windowed=windowed,
        window_output=window_output,
        stateful=stateful,
        linear_readout=4 if name == "deep" else None,  # DeepEncoder: a 1x1 readout over its 4 hidden units
        positive_output=positive,
    )
    assert caps.padding_value == 0.0
    # the declarations are the models' own attributes, not something inferred
    assert (model.windowed, model.stateful, model.positive_output) == (windowed, stateful, positive)
    assert model.receptive_field == receptive_field


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e[1]])
def test_windowed_encoders_run_valid_windows(name):
    """``windowed`` is true to what forward does: without causal padding, only the outputs whose whole window
    lies in the input, equal to the padded run's."""
    model = make(name)
    R = model.receptive_field
    x = torch.randn(2, F, 20)
    valid = model(x, causal_padding=False)
    assert valid.shape == (2, N, 20 - R + 1)
    torch.testing.assert_close(valid, model(x)[:, :, R - 1 :])
    if encoder_capabilities(model).window_output:
        windows = x[:, :, -R:]
        torch.testing.assert_close(model.window_output(windows), model(x)[:, :, -1])


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if not e[1]])
def test_encoders_that_are_not_windowed_do_not_take_causal_padding(name):
    with pytest.raises(TypeError):
        make(name)(torch.randn(1, F, 10), causal_padding=False)


def test_a_stateful_encoder_runs_in_pieces():
    model = make("state")
    x = torch.randn(2, F, 30)
    head, state = model(x[:, :, :12], return_state=True)
    torch.testing.assert_close(torch.cat([head, model(x[:, :, 12:], state=state)], -1), model(x))


def test_a_plain_module_gets_the_documented_defaults():
    model = nn.Conv1d(F, N, 3)
    assert not isinstance(model, Encoder)
    caps = encoder_capabilities(model)
    assert caps == EncoderCapabilities(
        n_freqs=None,
        n_outputs=None,
        has_receptive_field=False,
        receptive_field=None,
        causal_padding=False,
        windowed=False,
        window_output=False,
        stateful=False,
        linear_readout=None,
        positive_output=False,
    )
    assert caps.padding_value == 0.0


def test_stand_ins_that_declare_some_members_get_those_and_the_defaults():
    centered = encoder_capabilities(Centered(F, N))  # receptive_field and n_freqs, nothing else
    assert (centered.has_receptive_field, centered.receptive_field, centered.n_freqs, centered.n_outputs) == (
        True,
        5,
        F,
        None,
    )
    assert not (centered.windowed or centered.window_output or centered.stateful or centered.positive_output)

    wrapped = WithoutWindows(make("deep"))  # forward(x) only: no window path even though its inner model has one
    assert not isinstance(wrapped, Encoder)  # no n_outputs, no flags
    caps = encoder_capabilities(wrapped)
    assert (caps.receptive_field, caps.n_freqs) == (7, F)
    assert not (caps.windowed or caps.causal_padding or caps.window_output or caps.stateful)


class _Padded(nn.Module):
    receptive_field = 3

    def forward(self, x, causal_padding=True):
        return x


class _OnlyWindowOutput(nn.Module):
    receptive_field = 3

    def forward(self, x):
        return x

    def window_output(self, windows):
        return windows[..., -1]


class _Recurrent(nn.Module):
    receptive_field = None

    def forward(self, x, state=None, return_state=False):
        return (x, state) if return_state else x


class _StateOnly(nn.Module):
    receptive_field = None

    def forward(self, x, state=None):
        return x


class _SaysNotWindowed(_OnlyWindowOutput):
    """A wrapper whose window_output exists whatever it wraps: its own flag decides."""

    windowed = False

    def forward(self, x, causal_padding=True):
        return x


def test_an_undeclared_module_is_read_from_its_forward():
    padded = encoder_capabilities(_Padded())
    assert (padded.causal_padding, padded.windowed, padded.window_output) == (True, True, False)
    only = encoder_capabilities(_OnlyWindowOutput())  # the window path through window_output alone
    assert (only.causal_padding, only.windowed, only.window_output) == (False, True, True)
    assert encoder_capabilities(_Recurrent()).stateful
    assert not encoder_capabilities(_StateOnly()).stateful  # return_state is needed too
    assert not encoder_capabilities(_Padded()).stateful


def test_a_declared_flag_wins_over_the_signature_and_window_output():
    caps = encoder_capabilities(_SaysNotWindowed())
    assert (caps.causal_padding, caps.windowed, caps.window_output) == (False, False, False)

    class Declared(_Recurrent):
        stateful = False

    assert not encoder_capabilities(Declared()).stateful


def test_padding_value_is_the_models_own():
    class RawUnits(_Padded):
        def __init__(self):
            super().__init__()
            self.register_buffer("padding_value", torch.arange(4.0))

    model = RawUnits()
    assert encoder_capabilities(model).padding_value is model.padding_value

    class Floor(_Padded):
        padding_value = -2.5

    assert encoder_capabilities(Floor()).padding_value == -2.5


def test_a_subclass_of_encoder_base_starts_with_the_defaults():
    class Minimal(EncoderBase):
        def __init__(self):
            super().__init__()
            self.n_freqs, self.n_outputs, self.receptive_field = F, N, 1
            self.weight = nn.Parameter(torch.ones(N, F))

        def forward(self, x):
            return torch.einsum("nf,bft->bnt", self.weight, x)

    model = Minimal()
    assert isinstance(model, Encoder)
    caps = encoder_capabilities(model)
    assert (caps.windowed, caps.causal_padding, caps.window_output, caps.stateful, caps.positive_output) == (
        False,
        False,
        False,
        False,
        False,
    )
    assert (caps.n_freqs, caps.n_outputs, caps.receptive_field) == (F, N, 1)


def test_capabilities_are_frozen():
    caps = encoder_capabilities(make("linear"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.windowed = False  # type: ignore[misc]


def test_the_data_units_wrapper_reports_its_encoders_window_path():
    from dstrf.lit import EncoderModule

    module = EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 4, "dilations": [1, 2]}, F, N)
    wrapper = module.data_units()
    caps = encoder_capabilities(wrapper)
    assert (caps.windowed, caps.causal_padding, caps.window_output) == (True, True, True)
    assert caps.padding_value is wrapper.stimulus_mean
    assert (caps.receptive_field, caps.n_freqs) == (module.encoder.receptive_field, F)

    module.encoder = WithoutWindows(module.encoder)
    caps = encoder_capabilities(module.data_units())
    assert (caps.windowed, caps.causal_padding, caps.window_output) == (False, False, False)

    module = EncoderModule({"_target_": "dstrf.models.StateNet", "kernel_size": 3, "stride": 2, "channels": 2}, F, N)
    caps = encoder_capabilities(module.data_units())
    assert (caps.windowed, caps.window_output, caps.receptive_field) == (False, False, None)
