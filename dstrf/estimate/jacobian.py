"""Dynamic STRFs: the Jacobian of every output frame with respect to its input window, computed in bulk.

For an encoder f with outputs ``yhat_n(t)`` and input ``x (F, T)``, the dSTRF is

    W[t, n, f, k] = d yhat_n(t) / d x_f(t - k),        k = 0 .. L-1 (k = 0: the current frame).

When every hidden layer is bias-free with (Leaky)ReLU activations and the readout is linear with bias b (the
DeepEncoder), the network is piecewise linear and positively homogeneous, so ``yhat_n(t) = b_n + <W_t, X_t>``
holds exactly; otherwise W_t is the first-order approximation at the stimulus.

How it is computed, instead of one backward pass per output element:

- **Finite receptive field R** (every model but the recurrent ones): outputs R or more frames apart share no
  input frame. So the outputs of channel n at t = s, s + R, s + 2R, ... can be summed and differentiated
  together: the gradient at input frame u belongs to the one summed output t with t - R < u <= t. The R
  phases s and the channels become a batch of cotangents for ``torch.autograd.grad(is_grads_batched=True)``:
  a forward pass per chunk of frames and one batched backward give every W_t of the chunk.
- **Encoders that can run without their causal padding** (``forward(x, causal_padding=False)``, as dstrf's
  finite-receptive-field models): each output frame's window of R input frames becomes one batch element and
  runs through the network "valid", producing exactly that one output. Nothing is computed that the dSTRF does
  not use (no padding, no neighbouring outputs), which is what counts on a FLOP-bound CPU; the channels are
  batched cotangents. The windows are padded before the trial start with the model's ``padding_value``
  (default 0), the value its own causal padding stands for, so the result is the same.
- **Recurrent models** (``receptive_field is None``): every output depends on the whole past, so each output
  frame gets its own cotangent (still batched), after a forward pass from the start of the trial, which sets
  the recurrent state. ``lags`` is then required: W is truncated to the L most recent frames, while the model
  itself uses all of them.

Frames before the start of the trial are padding, not data: W is 0 there (k > t).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast, overload

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import encoder_capabilities
from ..validation import positive_int
from .checks import check_finite_result, check_model, check_stimulus
from .storage import DSTRFFile, _Writer, fingerprint

__all__ = ["dstrf"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside; afterwards every submodule back in its own mode (also on errors), so a
    model with, say, frozen batch-norm layers inside a training model comes back exactly as it was."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _as_input(model: nn.Module, x, device: torch.device, dtype: torch.dtype, what: str = "x") -> torch.Tensor:
    """The checked stimulus (:func:`dstrf.estimate.checks.check_stimulus`) on the model's device and dtype."""
    return check_stimulus(model, x, what).to(device=device, dtype=dtype)


def _select(values, n: int, what: str) -> np.ndarray:
    if values is None:
        return np.arange(n)
    if isinstance(values, slice):
        return np.arange(n)[values]
    selected = np.asarray(values, dtype=np.int64).reshape(-1)
    bad = selected[(selected < 0) | (selected >= n)]
    if bad.size:
        raise ValueError(f"{what} {bad.tolist()[:5]} out of range: valid 0..{n - 1}")
    return selected


def _check_causal(model: nn.Module, x: torch.Tensor, receptive_field: int | None, lags: int) -> None:
    """One probe: the gradient of a mid-probe output must vanish after its frame (and before its window).

    The probe is the first few windows of the stimulus, not the whole trial, so it costs the same for any T.
    """
    x = x[:, : 3 * (receptive_field or lags) + 2]
    n_frames = x.shape[-1]
    t = n_frames // 2
    probe = x[None].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(probe)[0, 0, t], probe)
    # NaN != 0, so a non-finite gradient would look like a dependence on every frame: "not causal"
    check_finite_result(
        grad[0],
        model,
        f"the gradient of output 0 at frame {t} on a probe of {n_frames} frames",
        ("band", "frame"),
        (np.arange(x.shape[0]), np.arange(n_frames)),
    )
    support = grad[0].abs().sum(0).nonzero().flatten()
    if support.numel() and int(support.max()) > t:
        raise ValueError(
            f"{type(model).__name__} is not causal: its output at frame {t} depends on frame {int(support.max())}. "
            "dSTRFs are defined for causal encoders (output at t from inputs at t' <= t)."
        )
    if receptive_field is not None and support.numel() and int(support.min()) < t - receptive_field + 1:
        raise ValueError(
            f"{type(model).__name__}.receptive_field says {receptive_field} frames, but its output at frame {t} "
            f"depends on frame {int(support.min())}; fix the model's receptive_field"
        )


@overload
def dstrf(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    channels: Sequence[int] | np.ndarray | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    out: None = None,
    progress: bool | None = None,
    hidden_units: bool | None = None,
) -> torch.Tensor: ...
@overload
def dstrf(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    channels: Sequence[int] | np.ndarray | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    *,
    out: str | os.PathLike,
    progress: bool | None = None,
    hidden_units: bool | None = None,
) -> DSTRFFile: ...
@overload
def dstrf(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    channels: Sequence[int] | np.ndarray | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    out: str | os.PathLike | None = None,
    progress: bool | None = None,
    hidden_units: bool | None = None,
) -> torch.Tensor | DSTRFFile: ...
def dstrf(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    channels: Sequence[int] | np.ndarray | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    out: str | os.PathLike | None = None,
    progress: bool | None = None,
    hidden_units: bool | None = None,
) -> torch.Tensor | DSTRFFile:
    """The dSTRF of one trial: ``W[t, n, f, k] = d yhat_n(t) / d x_f(t - k)``.

    Parameters
    ----------
    model : nn.Module
        A causal encoder ``(B, F, T) -> (B, N, T)`` with ``receptive_field`` (dstrf's models, or any such
        module). It runs in eval mode; its mode, parameters and their ``.grad`` are left as they were.
    x : ``(F, T)``
        The stimulus of one trial, as the model sees it (standardized).
    lags : int, optional
        L, the number of past frames (current one included). Default: the receptive field; required for
        recurrent models, where it truncates the window. More than the receptive field is an error.
    channels : sequence of int, optional
        Output channels to compute (default all), in this order.
    times : sequence of int or slice, optional
        Output frames to compute (default all), in this order.
    chunk_size : int, optional
        Output frames per forward pass (default 4 receptive fields, at least 256), >= 1. Peak memory grows with
        it, not with T.
    batch_size : int
        Cotangents per batched backward pass (channels x phases), >= 1; lower it if memory is short.
    dtype : torch.dtype
        Storage type of the result (float32; float16 halves the memory, also on disk; bfloat16 in memory
        only). Computation stays in the model's precision.
    out : path, optional
        Write the result chunk by chunk to this HDF5 file instead of returning it in memory; peak memory is
        then bounded by ``chunk_size``, not by T (see :mod:`dstrf.estimate.storage`). An existing file with the
        same result (same weights, stimulus and selection) is returned as it is; one with a different result
        is an error, never overwritten.
    progress : bool, optional
        A progress bar over the output frames; default: on when writing a file (``out``), off in memory.
    hidden_units : bool, optional
        For a model with a linear readout over H hidden units (``window_features`` and ``readout_weight``, as
        :class:`~dstrf.models.DeepEncoder`): take the Jacobian of the H hidden units and multiply it by the
        readout, ``W[t, n] = sum_h U[n, h] dh_h(t) / dX_t``, so the backward passes number H, not N. Default:
        where it applies and fewer hidden units than channels are asked for; ``False`` forces the
        per-channel route (the same result up to float rounding, tested), ``True`` the hidden one.

    Returns
    -------
    torch.Tensor ``(len(times), len(channels), F, L)`` on the CPU, or with ``out`` the :class:`DSTRFFile`.

    Raises
    ------
    ValueError
        For a stimulus with NaN/Inf (naming the band and frame of the first), no frames or the wrong number of
        bands; a model with NaN/Inf weights (naming the first such parameter: a diverged fit), a non-causal one
        or one whose ``receptive_field`` disagrees with ``lags``; ``chunk_size`` or ``batch_size`` < 1; a result
        that is not finite (naming the frame and channel).
    """
    receptive_field, lags = check_model(model, lags)
    chunk_size = None if chunk_size is None else positive_int(chunk_size, "chunk_size", "output frames")
    batch_size = positive_int(batch_size, "batch_size", "cotangents")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    compute_dtype = parameter.dtype if parameter is not None else torch.float32
    x = _as_input(model, x, device, compute_dtype)
    n_freqs, n_frames = x.shape
    sink: torch.Tensor | _Writer | None = None
    try:
        with eval_mode(model), torch.enable_grad():
            n_outputs = model(x[None, :, : min(n_frames, 8)]).shape[1]
            channels_ = _select(channels, n_outputs, "channels")
            times_ = _select(times, n_frames, "times")
            _check_causal(model, x, receptive_field, lags)
            shape = (len(times_), len(channels_), n_freqs, lags)
            if out is not None:
                opened = _open_output(Path(out), model, x, lags, receptive_field, channels_, times_, dtype, shape)
                if isinstance(opened, DSTRFFile):
                    return opened  # this very result is on disk already
                sink = opened
            else:
                sink = torch.zeros(shape, dtype=dtype)
            span = receptive_field or lags
            default_chunk = 128 if receptive_field is not None and _windowed(model) else max(256, 4 * span)
            chunk = chunk_size or default_chunk
            order = np.argsort(times_, kind="stable")
            sorted_times = times_[order]
            start = 0
            show = progress if progress is not None else out is not None
            bar = tqdm(total=len(order), unit="frame", desc="dSTRF", disable=not show, leave=False)
            while start < len(order):
                # the requested frames that fall within `chunk` frames of the first one
                stop = int(np.searchsorted(sorted_times, int(sorted_times[start]) + chunk, side="left"))
                rows = order[start:stop]
                if receptive_field is not None and _windowed(model):
                    values = _window_chunk(
                        model, x, receptive_field, lags, channels_, times_[rows], batch_size, dtype, hidden_units
                    )
                else:
                    values = _chunk(model, x, receptive_field, lags, channels_, times_[rows], batch_size, dtype)
                check_finite_result(values, model, "the dSTRF", ("frame", "channel"), (times_[rows], channels_), dtype)
                if isinstance(sink, _Writer):
                    sink.write(rows, values)
                else:
                    sink[torch.as_tensor(rows)] = values
                start = stop
                bar.update(len(rows))
            bar.close()
            if isinstance(sink, _Writer):
                sink.finish()
                return DSTRFFile(sink.path)
            return sink
    except BaseException:
        if isinstance(sink, _Writer):
            sink.abort()  # the .partial file stays, marked unfinished; nothing finished is touched
        raise


def _windowed(model: nn.Module) -> bool:
    """Whether the model can run windows without its causal padding (see :func:`dstrf.models.encoder_capabilities`:
    a wrapper such as :class:`dstrf.lit.DataUnitsEncoder` says so itself, since its ``window_output`` exists
    whatever the encoder it wraps)."""
    return encoder_capabilities(model).windowed


def _window_chunk(
    model: nn.Module,
    x: torch.Tensor,
    receptive_field: int,
    lags: int,
    channels: np.ndarray,
    times: np.ndarray,
    batch_size: int,
    dtype: torch.dtype,
    hidden_units: bool | None = None,
) -> torch.Tensor:
    """W for the output frames ``times``, one batch element per output window (see the module docstring)."""
    n_freqs = x.shape[0]
    capabilities = encoder_capabilities(model)
    pad = torch.as_tensor(capabilities.padding_value, dtype=x.dtype, device=x.device)
    before = (
        pad.reshape(-1, 1).expand(n_freqs, receptive_field - 1)
        if pad.ndim
        else pad.expand(n_freqs, receptive_field - 1)
    )
    padded = torch.cat([before, x], dim=1)  # frame t of x is column t + R - 1
    index = torch.as_tensor(times, device=x.device)[:, None] + torch.arange(receptive_field, device=x.device)
    windows = padded[:, index].permute(1, 0, 2).detach().requires_grad_(True)  # (Tc, F, R), oldest frame first
    hidden = capabilities.linear_readout
    if hidden_units and hidden is None:
        raise ValueError(
            f"hidden_units=True needs a linear readout over hidden units (window_features and readout_weight); "
            f"{type(model).__name__} has none"
        )
    if hidden is not None and (hidden_units or (hidden_units is None and len(channels) > hidden)):
        features = cast(Callable[[torch.Tensor], torch.Tensor], model.window_features)(windows)  # (Tc, H)
        jacobian = _window_jacobian(features, windows, np.arange(hidden), times, lags, batch_size)  # (Tc, H, F, L)
        weight = cast(torch.Tensor, model.readout_weight).detach()[torch.as_tensor(channels)].cpu()  # (N', H)
        # float64 results contract in float64; others in the model's precision (a float32 matmul is 2x faster)
        work = torch.float64 if dtype == torch.float64 else jacobian.dtype
        weight = weight.to(work)
        result = torch.zeros((len(times), len(channels), n_freqs, lags), dtype=dtype)
        for start in range(0, len(times), 16):  # 16 frames at a time: bounded memory
            block = jacobian[start : start + 16].to(work)
            flat = weight @ block.reshape(block.shape[0], hidden, -1)  # (t, N', F L)
            result[start : start + 16] = flat.reshape(block.shape[0], len(channels), n_freqs, lags).to(dtype)
        return result
    if capabilities.window_output:  # the model computes just the last output's cone
        window_output = cast(Callable[[torch.Tensor], torch.Tensor], model.window_output)
        output = window_output(windows)  # (Tc, N): each window's own output
    else:
        output = model(windows, causal_padding=False)[:, :, -1]
    return _window_jacobian(output, windows, channels, times, lags, batch_size).to(dtype)


def _window_jacobian(
    output: torch.Tensor, windows: torch.Tensor, units: np.ndarray, times: np.ndarray, lags: int, batch_size: int
) -> torch.Tensor:
    """``(Tc, len(units), F, L)``: d output[t, u] / d window t, lag-ordered, 0 for lags before the trial start;
    ``output`` ``(Tc, U)`` of ``windows`` ``(Tc, F, R)``, in the model's precision, on the CPU."""
    result = torch.zeros((len(times), len(units), windows.shape[1], lags), dtype=output.dtype)
    valid = torch.as_tensor(times[:, None] >= np.arange(lags)[None, :])  # (Tc, L)
    group = max(1, batch_size // len(times))
    for begin in range(0, len(units), group):
        picked = units[begin : begin + group]
        cotangents = torch.zeros((len(picked), *output.shape), dtype=output.dtype, device=output.device)
        cotangents[torch.arange(len(picked)), :, torch.as_tensor(picked)] = 1.0
        (grads,) = torch.autograd.grad(
            output, windows, grad_outputs=cotangents, is_grads_batched=True, retain_graph=begin + group < len(units)
        )
        # window column R - 1 - k is lag k; lags reaching before the trial start are padding, not data
        lagged = grads.flip(-1)[..., :lags].permute(1, 0, 2, 3).cpu()  # (Tc, units, F, L)
        result[:, begin : begin + len(picked)] = lagged * valid[:, None, None, :]
    return result


def _open_output(
    path: Path,
    model: nn.Module,
    x: torch.Tensor,
    lags: int,
    receptive_field: int | None,
    channels: np.ndarray,
    times: np.ndarray,
    dtype: torch.dtype,
    shape: tuple,
) -> _Writer | DSTRFFile:
    digest = fingerprint(model, x, lags, channels, times, dtype)
    if path.exists():
        with DSTRFFile(path) as existing:
            same = existing.attrs.get("fingerprint") == digest
        if same:
            return DSTRFFile(path)
        raise FileExistsError(
            f"{path} holds a different dSTRF (other weights, stimulus, lags, channels or times); refusing to overwrite "
            "it. Choose another path or remove it."
        )
    attrs = {
        "lags": lags,
        "receptive_field": -1 if receptive_field is None else receptive_field,
        "model": type(model).__name__,
        "fingerprint": digest,
    }
    return _Writer(path, shape, dtype, times, channels, attrs)


def _chunk(
    model: nn.Module,
    x: torch.Tensor,
    receptive_field: int | None,
    lags: int,
    channels: np.ndarray,
    times: np.ndarray,
    batch_size: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """W ``(len(times), len(channels), F, L)`` for the output frames ``times``, all within one chunk."""
    result = torch.zeros((len(times), len(channels), x.shape[0], lags), dtype=dtype)
    rows = np.arange(len(times))
    t0, t1 = int(times.min()), int(times.max()) + 1
    # A finite receptive field needs only the frames that reach the chunk; a recurrent model its whole past.
    s0 = max(0, t0 - receptive_field + 1) if receptive_field is not None else 0
    segment = x[None, :, s0:t1].detach().requires_grad_(True)
    output = model(segment)  # (1, N, t1 - s0)
    if receptive_field is not None:
        period = receptive_field  # outputs this far apart share no input frame
        phase_of = times % period
        phases = np.unique(phase_of)
    else:
        period = None
        phase_of = np.arange(len(times))  # every output frame alone
        phases = phase_of
    phase_index = {int(p): i for i, p in enumerate(phases)}

    local = times - s0  # positions of the requested outputs within the segment
    k = np.arange(lags)
    positions = local[:, None] - k[None, :]  # (Tc, L): input frame of lag k for each output
    valid = torch.as_tensor(positions >= 0)  # frames before the trial start are padding: W = 0
    positions_t = torch.as_tensor(np.clip(positions, 0, None), device=x.device)
    group_t = torch.as_tensor([phase_index[int(p)] for p in phase_of], device=x.device)

    pairs = [(c, g) for c in range(len(channels)) for g in range(len(phases))]
    for begin in range(0, len(pairs), batch_size):
        batch = pairs[begin : begin + batch_size]
        cotangents = torch.zeros((len(batch), *output.shape), dtype=output.dtype, device=output.device)
        for b, (c, g) in enumerate(batch):
            if period is not None:
                members = local[phase_of == phases[g]]
            else:
                members = local[g : g + 1]
            cotangents[b, 0, int(channels[c]), torch.as_tensor(members, device=output.device)] = 1.0
        (grads,) = torch.autograd.grad(
            output,
            segment,
            grad_outputs=cotangents,
            is_grads_batched=True,
            retain_graph=begin + batch_size < len(pairs),
        )
        grads = grads[:, 0]  # (batch, F, t1 - s0)
        batch_c = torch.as_tensor([c for c, _ in batch])
        batch_g = torch.as_tensor([g for _, g in batch], device=x.device)
        for c in batch_c.unique().tolist():
            in_batch = (batch_c == c).nonzero().flatten()
            # (phases of this channel in the batch) -> gradient images; pick each output's phase and window
            images = torch.full((len(phases), *grads.shape[1:]), float("nan"), dtype=grads.dtype, device=grads.device)
            images[batch_g[in_batch]] = grads[in_batch.to(grads.device)]
            windows = images[group_t[:, None], :, positions_t]  # (Tc, L, F)
            have = ~torch.isnan(windows[:, 0, 0]).cpu()
            values = windows.permute(0, 2, 1).cpu() * valid[:, None, :]
            target_rows = torch.as_tensor(rows)[have]
            result[target_rows, c] = values[have].to(result.dtype)
    return result
