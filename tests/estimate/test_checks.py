"""The checks shared by dstrf, gradmap, optimal_stimulus and jackknife_dstrf (dstrf.estimate.checks): a NaN in
the stimulus or the weights, sizes below 1, a stimulus without frames and non-finite results are errors that
say where, never a finite-looking (or "not causal") answer."""

import math

import pytest
import torch
from torch import nn

from dstrf.estimate import dstrf, gradmap, jackknife_dstrf, optimal_stimulus
from dstrf.models import DeepEncoder, LinearSTRF
from dstrf.validation import positive_int

from .stand_ins import Overflow, WithoutWindows

F, N, T = 8, 3, 60


def deep(seed=0):
    torch.manual_seed(seed)
    return DeepEncoder(F, N, hidden=6, kernel_size=3, dilations=(1, 2))


def stimulus(n_frames=T):
    return torch.randn(F, n_frames, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------- the stimulus


def test_a_nan_in_the_stimulus_names_the_first_band_and_frame_in_time_order():
    x = stimulus()
    x[1, 30] = float("nan")
    x[6, 10] = float("inf")  # earlier in time, though in a higher band: this one is the first
    message = r"x has 2 non-finite values \(NaN or Inf\); the first is inf at band 6, frame 10"
    with pytest.raises(ValueError, match=message):
        dstrf(deep(), x)
    with pytest.raises(ValueError, match=message):
        dstrf(deep(), x, times=[50])  # also when the frames asked for do not reach it
    with pytest.raises(ValueError, match=message):
        jackknife_dstrf([deep(0), deep(1)], x)


def test_a_nan_in_x0_is_an_error_of_gradmap_and_optimal_stimulus():
    x0 = stimulus(20)
    x0[3, 19] = float("nan")
    message = r"x0 has 1 non-finite values \(NaN or Inf\); the first is nan at band 3, frame 19"
    with pytest.raises(ValueError, match=message):
        gradmap(deep(), x0=x0)
    with pytest.raises(ValueError, match=message):
        optimal_stimulus(deep(), 0, steps=2, x0=x0, progress=False)


def test_a_stimulus_without_frames_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x has no frames \(shape \(8, 0\)\): give a stimulus of at least one frame"):
        dstrf(deep(), torch.zeros(F, 0))
    with pytest.raises(ValueError, match=r"x has no frames \(shape \(8, 0\)\)"):
        jackknife_dstrf([deep()], torch.zeros(F, 0))


# ---------------------------------------------------------------------------------------------- the model


def test_nan_weights_name_the_parameter_instead_of_calling_the_model_not_causal():
    model = deep()
    with torch.no_grad():
        model.convs[1].weight[0, 0, :2] = float("nan")
        model.readout.weight[0, 0] = float("inf")
    n = model.convs[1].weight.numel()
    message = (
        rf"model parameter 'convs.1.weight' of DeepEncoder has 2 non-finite values \(2 NaN, 0 Inf\) of {n} "
        r"\(and 1 more tensors\): the fit diverged"
    )
    with pytest.raises(ValueError, match=message):
        dstrf(model, stimulus())
    with pytest.raises(ValueError, match=message):
        gradmap(model, x0=stimulus(20))
    with pytest.raises(ValueError, match=message):
        optimal_stimulus(model, 0, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"models\[1\] \(of 2\): " + message):
        jackknife_dstrf([deep(), model], stimulus())


def test_an_infinite_buffer_is_named_too():
    from dstrf.lit import EncoderModule

    module = EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 4, "dilations": [1, 2]}, F, N)
    model = module.data_units()
    model.stimulus_std[5] = float("inf")  # e.g. standardization statistics of a broken data file
    with pytest.raises(
        ValueError,
        match=r"model buffer 'stimulus_std' of DataUnitsEncoder has 1 non-finite values "
        r"\(0 NaN, 1 Inf\) of 8",
    ):
        dstrf(model, stimulus())


# ----------------------------------------------------------------------------------------------- the sizes


@pytest.mark.parametrize(
    "name, value", [("chunk_size", 0), ("chunk_size", -5), ("chunk_size", 2.5), ("batch_size", 0), ("batch_size", -1)]
)
def test_chunk_and_batch_sizes_below_one_are_errors(name, value):
    # before: chunk_size=0 fell back to the default, -5 never ended, batch_size=-1 gave zeros on this path
    model = WithoutWindows(deep())
    with pytest.raises(ValueError, match=rf"{name} must be a positive whole number of .*; got {value}"):
        dstrf(model, stimulus(), **{name: value})
    with pytest.raises(ValueError, match=rf"chunk_size must be a positive whole number of output frames; got {value}"):
        jackknife_dstrf([deep()], stimulus(), chunk_size=value)


def test_gradmap_lags_and_chunk_size_below_one_are_errors():
    with pytest.raises(ValueError, match=r"lags must be a positive whole number of frames; got 0"):
        gradmap(deep(), lags=0)
    with pytest.raises(ValueError, match=r"lags must be a positive whole number of frames; got -3"):
        optimal_stimulus(deep(), 0, lags=-3, progress=False)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive whole number of neurons; got 0"):
        gradmap(deep(), chunk_size=0)
    with pytest.raises(ValueError, match=r"lr must be a positive finite number; got inf"):
        optimal_stimulus(deep(), 0, lr=math.inf, progress=False)


def test_a_sum_that_overflows_is_not_taken_for_a_nan():
    from dstrf.estimate.checks import first_non_finite

    big = torch.full((4, 5), 3e38)  # every entry finite, their float32 sum is not
    assert first_non_finite(big) is None
    big[2, 3] = float("nan")
    big[3, 0] = -float("inf")
    assert first_non_finite(big) == (2, (2, 3))
    assert first_non_finite(torch.ones(3, dtype=torch.int64)) is None and first_non_finite(torch.zeros(0)) is None


def test_positive_int_takes_whole_numbers_only():
    assert positive_int(3, "lags", "frames") == 3 and positive_int(4.0, "lags", "frames") == 4
    for bad in (True, 0, -1, 1.5, "3", None):
        with pytest.raises(ValueError, match=r"lags must be a positive whole number of frames"):
            positive_int(bad, "lags", "frames")


# --------------------------------------------------------------------------------------------- the results


def test_a_model_that_overflows_on_finite_input_is_an_error_naming_the_frame():
    model = Overflow(F, 2)
    x = 0.1 * stimulus()
    x[:, 40:] = 10.0  # the probe (first 11 frames) is fine; from frame 42, whose 3-frame window is all 10, it overflows
    with pytest.raises(
        ValueError,
        match=r"the dSTRF of Overflow has \d+ non-finite values, the first at frame 42, "
        r"channel 0, although its weights and input are finite",
    ):
        dstrf(model, x)
    assert torch.isfinite(dstrf(model, x, times=range(42))).all()  # the frames before are fine
    with pytest.raises(
        ValueError,
        match=r"the gradient of output 0 at frame 5 on a probe of 11 frames of Overflow "
        r"has \d+ non-finite values, the first at band 0, frame 3",
    ):
        dstrf(model, torch.full((F, T), 10.0))  # the probe of the causality check itself


def test_a_float16_overflow_of_the_stored_dstrf_is_an_error_not_inf():
    model = LinearSTRF(F, N, lags=4)
    with torch.no_grad():
        model.weight.fill_(1e5)  # fine in float32, beyond float16's 65504
    with pytest.raises(
        ValueError,
        match=r"the dSTRF of LinearSTRF has .* the first at frame 0, channel 0.* too large "
        r"for torch.float16",
    ):
        dstrf(model, stimulus(), dtype=torch.float16)


def test_gradmap_and_optimal_stimulus_of_an_overflowing_model_are_errors():
    model = Overflow(F, 2)
    with pytest.raises(
        ValueError,
        match=r"the gradient map of Overflow has 48 non-finite values, the first at "
        r"neuron 0, band 0, lag 0",
    ):
        gradmap(model, x0=torch.full((F, 10), 10.0))
    with pytest.raises(
        ValueError,
        match=r"the population map of Overflow has 24 non-finite values, the first at "
        r"map 0, band 0, lag 0",
    ):
        gradmap(model, x0=torch.full((F, 10), 20.0), population=True)  # the mean halves each gradient: 20, not 10
    with pytest.raises(
        ValueError,
        match=r"the readout of neuron\(s\) \[0\] of Cliff became inf after [1-9]\d* steps: "
        r"the stimulus ran where the model overflows",
    ):
        optimal_stimulus(Cliff(), 0, steps=50, lr=0.5, x0=torch.zeros(F, 1), constraint=None, progress=False)


class Cliff(nn.Module):
    """Linear in each frame while the frame's mean stays <= 1, infinite beyond: the ascent walks off the cliff."""

    receptive_field, n_freqs = 1, F

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(N, F))

    def forward(self, x):
        return torch.where(x.mean(1, keepdim=True) > 1, math.inf, torch.einsum("nf,bft->bnt", self.weight, x))
