"""Jackknife aggregation of dSTRFs over the M models of one test fold (each trained without one more trial).

With the M replicates ``W_j`` of a bin (t, n, f, k):

    mean = (1/M) sum_j W_j
    SE   = sqrt((M-1)/M * sum_j (W_j - mean)^2)                      (the jackknife standard error)
    mask = not (Q_q(W) > 0 and Q_{1-q}(W) < 0)                       (the models agree in sign)

where ``Q_p`` is the p-quantile across the M models (linear interpolation, as ``numpy.quantile``). A bin
whose replicates straddle zero is not significant and is zeroed in the masked mean; q = 0.95 reproduces
Keshishian et al.'s "95% jackknife significance".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import nn

from ..models import encoder_capabilities
from ..validation import memory_bytes, positive_int
from .checks import check_model, check_stimulus
from .jacobian import _as_input, _select, dstrf, eval_mode
from .storage import JackknifeWriter

__all__ = [
    "DEFAULT_MEMORY",
    "JackknifeDSTRF",
    "block_shape",
    "element_bytes",
    "jackknife_dstrf",
    "jackknife_seconds",
    "jackknife_se",
    "quantile",
    "sign_consistency_mask",
]


def jackknife_se(replicates: torch.Tensor) -> torch.Tensor:
    """``sqrt((M-1)/M * sum_j (theta_j - mean)^2)`` over dim 0 of ``(M, ...)``; NaN where M == 1."""
    m = replicates.shape[0]
    if m < 2:
        return torch.full(replicates.shape[1:], float("nan"), dtype=replicates.dtype)
    deviation = replicates - replicates.mean(0)
    return torch.sqrt((m - 1) / m * (deviation**2).sum(0))


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile over dim 0 with linear interpolation (``numpy.quantile``'s default), for any size
    (``torch.quantile`` refuses large inputs)."""
    return _quantiles(values, (q,))[0]


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[torch.Tensor]:
    """The ``qs``-quantiles over dim 0 from one sort (the sort is most of the mask's cost)."""
    ordered = values.sort(dim=0).values
    return [_interpolate(ordered, q) for q in qs]


def _interpolate(ordered: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of values sorted along dim 0: linear interpolation between the two order statistics
    around position ``q (M - 1)``."""
    m = ordered.shape[0]
    position = q * (m - 1)
    below, fraction = int(np.floor(position)), position - np.floor(position)
    above = min(below + 1, m - 1)
    # torch.lerp switches to the upper end's form at weight >= 0.5, as numpy's quantile does: one fused pass
    return torch.lerp(ordered[below], ordered[above], float(fraction))


#: Up to this many models a block is sorted in place by a sorting network (no copy, no indices).
_NETWORK_MODELS = 32


def _sort_models_(stack: torch.Tensor) -> None:
    """Sort ``(M, ...)`` along dim 0 in place. Up to :data:`_NETWORK_MODELS` models by odd-even transposition
    (M rounds of compare-exchanges between neighbouring models, ``M (M - 1) / 2`` in all, with one
    ``(...)`` buffer: no sorted copy and no int64 indices, which would take 3x the stack's memory); beyond, by
    ``torch.sort``."""
    m = stack.shape[0]
    if m > _NETWORK_MODELS:
        stack.copy_(stack.sort(dim=0).values)
        return
    low = torch.empty_like(stack[0])
    for round_ in range(m):
        for i in range(round_ % 2, m - 1, 2):
            torch.minimum(stack[i], stack[i + 1], out=low)
            torch.maximum(stack[i], stack[i + 1], out=stack[i + 1])
            stack[i].copy_(low)


def _block_statistics(
    stack: torch.Tensor, q: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, jackknife SE and sign-consistency mask of the replicates ``(M, ...)``, consuming ``stack`` (it is
    sorted and overwritten in place, so the block needs one extra buffer, not copies of the stack)."""
    m = stack.shape[0]
    _sort_models_(stack)  # a permutation per element: the mean and SE are unchanged by it
    mask = ~((_interpolate(stack, q) > 0) & (_interpolate(stack, 1 - q) < 0))
    mean = stack.mean(0)
    if m < 2:
        se = torch.full_like(mean, float("nan"))
    else:
        se = stack.sub_(mean).square_().sum(0).mul_((m - 1) / m).sqrt_()
    return mean.to(dtype), se.to(dtype), mask


def _check_q(q: float) -> None:
    if not 0.5 < q < 1:
        raise ValueError(f"q must be in (0.5, 1) (e.g. 0.95 for 95% jackknife significance); got {q}")


def sign_consistency_mask(replicates: torch.Tensor, q: float = 0.95) -> torch.Tensor:
    """True where the replicates ``(M, ...)`` agree in sign at quantile q (see the module docstring)."""
    _check_q(q)
    upper, lower = _quantiles(replicates, (q, 1 - q))
    return ~((upper > 0) & (lower < 0))


#: The default memory budget of :func:`jackknife_dstrf`, in bytes.
DEFAULT_MEMORY = 1 << 30


def element_bytes(n_freqs: int, lags: int, n_models: int, itemsize: int = 4) -> int:
    """Working bytes per (frame, channel) element of a :func:`jackknife_dstrf` block: the M replicates
    ``(M, F, L)`` in the compute dtype (``itemsize`` bytes), one model's dSTRF before it is copied in, the
    sorting buffer, mean, SE, the quantiles and the mask: ``itemsize F L (M + 5)``; beyond 32 models the sort
    also takes a sorted copy and its int64 indices, ``(itemsize + 8) F L M`` more."""
    per = itemsize * (n_models + 5)
    if n_models > _NETWORK_MODELS:
        per += (itemsize + 8) * n_models
    return n_freqs * lags * per


def block_shape(
    n_times: int,
    n_channels: int,
    n_freqs: int,
    lags: int,
    n_models: int,
    memory: int = DEFAULT_MEMORY,
    whole_rows: bool = False,
    itemsize: int = 4,
) -> tuple[int, int]:
    """(frames, channels) of one block of :func:`jackknife_dstrf`, so that its work fits in ``memory`` bytes
    (:func:`element_bytes` per element).

    Whole rows of channels are taken while at least 16 frames of them fit (fewer forward passes); otherwise
    blocks of channels of 16 frames. ``whole_rows`` keeps every channel in each block (the hidden-unit route
    computes all channels from one Jacobian of the hidden units, which a block of channels would recompute),
    with as many frames as fit, at least one.
    """
    elements = max(1, int(memory) // element_bytes(n_freqs, lags, n_models, itemsize))
    channels = n_channels if whole_rows or elements >= 16 * n_channels else max(1, elements // 16)
    frames = max(1, min(n_times, elements // channels))
    return frames, min(channels, n_channels)


@dataclass
class JackknifeDSTRF:
    """``mean``, ``se`` ``(T, N, F, L)`` and the boolean ``mask``; ``masked`` = mean where significant, else 0."""

    mean: torch.Tensor
    se: torch.Tensor
    mask: torch.Tensor
    n_models: int
    q: float

    @property
    def masked(self) -> torch.Tensor:
        return self.mean * self.mask


@overload
def jackknife_dstrf(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    q: float = 0.95,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    out: None = None,
    attrs: Mapping | None = None,
    memory: int | str = DEFAULT_MEMORY,
    progress: bool = False,
) -> JackknifeDSTRF: ...
@overload
def jackknife_dstrf(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    q: float = 0.95,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    out: str | os.PathLike,
    attrs: Mapping | None = None,
    memory: int | str = DEFAULT_MEMORY,
    progress: bool = False,
) -> Path: ...
def jackknife_dstrf(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    q: float = 0.95,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    out: str | os.PathLike | None = None,
    attrs: Mapping | None = None,
    memory: int | str = DEFAULT_MEMORY,
    progress: bool = False,
) -> JackknifeDSTRF | Path:
    """Mean, jackknife SE and sign-consistency mask of the dSTRFs of ``models`` on one stimulus ``x`` (F, T).

    The models are the jackknife replicates of one test fold, and ``x`` a trial none of them trained on. The
    work goes block by block over (frames x channels), every model evaluated on the block, so the working
    memory holds the M replicates of one block, never M full dSTRFs: its size is set by ``memory`` (bytes, or
    ``"2GB"``; see :func:`block_shape`), not by T, N or M.

    Parameters
    ----------
    chunk_size : int, optional
        Output frames per block, overriding the one ``memory`` gives (channels per block still follow it).
    out : path, optional
        Write mean, SE and mask block by block into this HDF5 file (:class:`~dstrf.estimate.storage.JackknifeWriter`:
        datasets ``mean``, ``se``, ``mask``, ``times``, ``channels``; attributes ``lags``, ``q``, ``n_models``,
        ``dtype`` and ``attrs``) and return
        its path: nothing of the size of the trial is then held in memory. Without ``out`` the result is
        returned in memory (``(T', N', F, L)`` three times). An existing file at ``out`` is never overwritten
        (:class:`FileExistsError`).
    progress : bool
        A progress bar over the output frames (each frame done for every channel and model).

    Other arguments as in :func:`dstrf.estimate.dstrf`.
    """
    from tqdm.auto import tqdm

    models = list(models)
    chunk_size = None if chunk_size is None else positive_int(chunk_size, "chunk_size", "output frames")
    memory = memory_bytes(memory)
    _check_q(q)
    if out is not None and Path(out).exists():
        raise FileExistsError(
            f"{out} exists; jackknife_dstrf never overwrites a file: choose another path or remove it"
        )
    plan = _plan(models, x, lags, channels, times, dtype, memory)
    times_, channels_, routes, lags = plan.times, plan.channels, plan.routes, plan.lags
    frames, width, work, shape = chunk_size or plan.frames, plan.width, plan.work, plan.shape
    writer = (
        JackknifeWriter(
            out,
            shape,
            dtype,
            times_,
            channels_,
            {
                "lags": lags,
                "q": q,
                "n_models": len(models),
                "dtype": str(dtype).removeprefix("torch."),
                **(attrs or {}),
            },
        )
        if out is not None
        else None
    )
    if writer is None:
        result = JackknifeDSTRF(
            torch.zeros(shape, dtype=dtype),
            torch.zeros(shape, dtype=dtype),
            torch.zeros(shape, dtype=torch.bool),
            len(models),
            q,
        )
    bar = tqdm(total=len(times_), unit="frame", desc=f"jackknife dSTRF ({len(models)} models)", disable=not progress)
    try:
        for r0 in range(0, len(times_), frames):
            rows = slice(r0, r0 + frames)
            for c0 in range(0, len(channels_), width):
                cols = slice(c0, c0 + width)
                stack = None
                for k, (m, route) in enumerate(zip(models, routes, strict=True)):
                    block = dstrf(
                        m, x, lags=lags, channels=channels_[cols], times=times_[rows], dtype=work, hidden_units=route
                    )
                    if stack is None:
                        stack = torch.empty((len(models), *block.shape), dtype=work)
                    stack[k] = block
                    del block
                assert stack is not None  # there is at least one model
                mean, se, mask = _block_statistics(stack, q, dtype)
                del stack
                if writer is not None:
                    writer.write(rows, cols, mean, se, mask)
                else:
                    result.mean[rows, cols], result.se[rows, cols], result.mask[rows, cols] = mean, se, mask
                bar.update(len(times_[rows]) * len(channels_[cols]) / len(channels_))
    except BaseException:
        if writer is not None:
            writer.abort()  # the .partial file stays, marked unfinished
        raise
    finally:
        bar.close()
    return writer.finish() if writer is not None else result


def jackknife_seconds(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | np.ndarray | slice | None = None,
    dtype: torch.dtype = torch.float32,
    memory: int | str = DEFAULT_MEMORY,
    probe_frames: int = 32,
    out: str | os.PathLike | None = None,
) -> float:
    """Seconds :func:`jackknife_dstrf` will take with these arguments, measured before the work starts.

    One model's dSTRF of the first ``probe_frames`` selected frames over one block of channels, taken the
    way :func:`jackknife_dstrf` takes it (the same route and block width), and the block statistics of M such
    dSTRFs and, with ``out`` (the file :func:`jackknife_dstrf` will write), writing them into a scratch file
    beside it (removed), timed after a warm-up run (a process's first call pays for allocations the rest
    reuse; the faster of two timed runs) and scaled to every frame and channel block::

        seconds ~ (M t_dstrf + t_statistics + t_write) * (T' / probe_frames) * ceil(N' / width)

    ``experiments/benchmark_jackknife_memory.py`` checks the estimate against the measured time.
    """
    import time

    models = list(models)
    plan = _plan(models, x, lags, channels, times, dtype, memory_bytes(memory))
    probe = plan.times[: max(1, min(positive_int(probe_frames, "probe_frames", "frames"), plan.frames))]
    block = plan.channels[: plan.width]

    def run() -> float:
        start = time.perf_counter()
        one = dstrf(
            models[0], x, lags=plan.lags, channels=block, times=probe, dtype=plan.work, hidden_units=plan.routes[0]
        )
        middle = time.perf_counter()
        mean, se, mask = _block_statistics(one.expand(len(models), *one.shape).clone(), 0.95, dtype)
        if out is not None:
            scratch = Path(out).with_name(f".{Path(out).name}.probe")
            writer = JackknifeWriter(scratch, (len(probe), len(block), *plan.shape[2:]), dtype, probe, block, {})
            try:
                writer.write(slice(None), slice(None), mean, se, mask)
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            finally:
                for leftover in Path(out).parent.glob(f".{Path(out).name}.probe*"):
                    leftover.unlink()
        return len(models) * (middle - start) + time.perf_counter() - middle

    run()
    seconds = min(run(), run())
    blocks = -(-len(plan.channels) // plan.width)
    return seconds * len(plan.times) / len(probe) * blocks


@dataclass
class _Plan:
    """How :func:`jackknife_dstrf` goes through one trial: the selected frames and channels, each model's
    route, the block shape and the compute dtype."""

    times: np.ndarray
    channels: np.ndarray
    routes: list[bool]
    lags: int
    frames: int
    width: int
    work: torch.dtype
    shape: tuple[int, int, int, int]


def _plan(
    models: list[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None,
    channels: Sequence[int] | None,
    times: Sequence[int] | np.ndarray | slice | None,
    dtype: torch.dtype,
    memory: int,
) -> _Plan:
    """The one place the arguments of :func:`jackknife_dstrf` are checked and its blocks chosen."""
    if not models:
        raise ValueError("jackknife_dstrf needs at least one model")
    lag_counts: dict[int, int] = {}
    for k, model in enumerate(models):  # every model checked (finite weights too) before any is computed
        try:
            lag_counts.setdefault(check_model(model, lags)[1], k)
        except ValueError as error:
            raise ValueError(f"models[{k}] (of {len(models)}): {error}") from error
    if len(lag_counts) != 1:
        raise ValueError(f"the models give different numbers of lags {sorted(lag_counts)}; pass lags= explicitly")
    lags = next(iter(lag_counts))
    stimulus = check_stimulus(models[0], x)
    n_freqs, n_frames = stimulus.shape
    times_ = _select(times, n_frames, "times")
    if not len(times_):
        raise ValueError("no output frames selected (times is empty)")
    channels_ = _select(channels, _n_outputs(models[0], stimulus), "channels")
    shape = (len(times_), len(channels_), n_freqs, lags)
    # each model's dSTRF route as for all the channels at once, whatever the blocks (the same numbers either way)
    routes = [_hidden_route(m, len(channels_)) for m in models]
    # the statistics in float32 (the models' precision) unless float64 results are asked for
    work = torch.float64 if dtype == torch.float64 else torch.float32
    itemsize = torch.empty((), dtype=work).element_size()
    sizes = (len(times_), len(channels_), n_freqs, lags, len(models), memory)
    if any(routes) and block_shape(*sizes, True, itemsize)[0] < 16:
        # whole rows of fewer than 16 frames cost more in small calls than the hidden units save (measured:
        # 26 s vs 19 s for 32 frames x 220 channels x 7 models at 1 GiB): per channel, in blocks
        routes = [False] * len(models)
    frames, width = block_shape(*sizes, any(routes), itemsize)
    return _Plan(times_, channels_, routes, lags, frames, width, work, shape)


def _hidden_route(model: nn.Module, n_channels: int) -> bool:
    """Whether :func:`dstrf.estimate.dstrf` would take the hidden-unit route for ``n_channels`` channels."""
    hidden = encoder_capabilities(model).linear_readout
    return hidden is not None and n_channels > hidden


def _n_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """N, from a forward pass over the first few frames."""
    parameter = next(model.parameters(), None)
    device, kind = (parameter.device, parameter.dtype) if parameter is not None else (torch.device("cpu"), x.dtype)
    with torch.no_grad(), eval_mode(model):
        return int(model(_as_input(model, x[:, :8], device, kind)[None]).shape[1])
