"""Gradient maps (GradMap) and optimal stimuli ("Dreams") of encoders, at a reference stimulus.

**Gradient map.** For an encoder with responses ``r_n(t)`` and a reference stimulus ``x0`` (default: the null
stimulus, zeros in the model's standardized input space; or the mean over a stack of K reference windows),
the map of neuron n over the last L frames is

    G[n, f, k] = d R_n / d x_f(T - 1 - k),      k = 0 .. L-1 (k = 0: the last frame of x0),

with the readout ``R_n = r_n(T - 1)`` (``readout="last"``, the response at the last frame: transient
features) or ``R_n = (1/L) sum_{t = T-L}^{T-1} r_n(t)`` (``readout="mean"``, the response averaged over the
window's frames: sustained features). With ``population`` the readout is the mean of ``R_n`` over a set of
neurons, and there is one map for the set. It has the STRF layout ``(N, F, L)``, lag order, and the
excitatory-positive sign of the rest of dstrf: ``G > 0`` where more energy would raise the response. The
GradMap paper (Rancon et al. 2025) differentiates ``-R_n`` instead; ``convention="paper"`` returns that sign.

For an LN model ``r = s(W x + b)`` the map at the null stimulus is ``s'(b) W``: the STRF up to a positive
factor. For a deep model it is the first-order linearisation at ``x0``, i.e. the dSTRF (see
:mod:`dstrf.estimate.jacobian`) of the last output frame of ``x0``.

How it is computed: ONE forward pass of the single stimulus (batch 1), then the N responses are
differentiated with respect to the input window by batched backward passes (one-hot cotangents over chunks
of ``chunk_size`` neurons, ``torch.autograd.grad(..., is_grads_batched=True)``). Memory grows with the
chunk, not with N, and the forward pass is not repeated per neuron (deepSTRF instead runs a batch of N
copies of the stimulus, one row per neuron). Only what the readout depends on is computed: with a finite
receptive field R, the last R frames of ``x0`` (``readout="last"``) or the last ``L + R - 1``
(``readout="mean"``). A recurrent model runs over the whole of ``x0``; one that can start from a given state
(``forward(x, state=..., return_state=True)``, as :class:`dstrf.models.StateNet`) runs the frames before the
window once without a graph, so the backward passes cover only the L frames of the map.

**The null stimulus and the frames before the window.** By default the reference is a window of exactly
``lags`` frames of the null stimulus. The frames before it (when the receptive field is longer than the
window, or the mean readout reaches back) are the model's own causal padding, zeros in standardized units:
the same value, so the result is the gradient at an infinitely long null stimulus. A model that says what it
pads with (a ``padding_value`` attribute, like :class:`dstrf.lit.DataUnitsEncoder`, which takes raw units
and pads with the training mean) has that value as its null stimulus. A recurrent model starts its state
at the first frame of ``x0``; pass a longer ``x0`` to let it settle before the window.

**Pitfalls handled.** The model runs in eval mode (no dropout, batch-norm running statistics), its mode is
restored afterwards, also on errors; gradients are taken with respect to the stimulus only, so the
parameters' ``.grad`` are never touched. A map that is all zeros (the reference point sits where every ReLU
is off, as for a bias-free ReLU network such as :class:`dstrf.models.DeepEncoder` at the null stimulus)
triggers an :class:`InactiveGradmapWarning` that names the neurons and says what to do. A reference stimulus
or weights with NaN/Inf are errors (:mod:`dstrf.estimate.checks`), as is a map that comes out non-finite.

**Optimal stimulus.** :func:`optimal_stimulus` iterates Adam steps on the stimulus window from ``x0`` to
maximise the readout of a neuron or a population, under a constraint that keeps it in the data's range: the
nonlinear generalisation of the gradient map (the GradMap paper's "Dreams").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn

from ..models import encoder_capabilities
from ..validation import positive_int
from .checks import check_finite_result, check_model
from .jacobian import _as_input, _check_causal, _select, eval_mode

try:  # a dependency of Lightning; the bar is optional
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["gradmap", "optimal_stimulus", "OptimalStimulus", "InactiveGradmapWarning"]

READOUTS = ("last", "mean")
CONVENTIONS = ("excitatory", "paper")


class InactiveGradmapWarning(UserWarning):
    """A gradient map (or the start of a stimulus optimisation) is all zeros: the reference stimulus sits where
    the model is locally flat, e.g. where every ReLU is off, so the map says nothing about the neuron.

    ``finding`` says what is zero and why; ``fix`` what to do, in the Python API's words, so that a command or
    a callback can re-issue the finding with its own option names.
    """

    def __init__(self, finding: str, fix: str = "") -> None:
        super().__init__(finding + fix)
        self.finding, self.fix = finding, fix


# --------------------------------------------------------------------------------------------- shared parts


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def _n_freqs(model: nn.Module, x0) -> int:
    n_freqs = encoder_capabilities(model).n_freqs
    if n_freqs is None:
        if x0 is None:
            raise ValueError(f"{type(model).__name__} has no n_freqs attribute: pass x0 (freqs, frames) explicitly")
        return int(torch.as_tensor(x0).shape[0])
    return int(n_freqs)


def _padding(model: nn.Module, n_freqs: int, n_frames: int, device, dtype) -> torch.Tensor:
    """``(F, n_frames)`` of the value the model pads with (its null stimulus): zeros unless it says otherwise."""
    value = torch.as_tensor(encoder_capabilities(model).padding_value, device=device, dtype=dtype)
    if value.ndim:
        return value.reshape(-1, 1).expand(n_freqs, n_frames)
    return value.expand(n_freqs, n_frames)


def _check_readout(readout: str) -> None:
    if readout not in READOUTS:
        raise ValueError(
            f"readout must be one of {READOUTS} (the response at the last frame, or averaged over the "
            f"window's frames); got {readout!r}"
        )


def _reference(
    model: nn.Module,
    x0,
    lags: int,
    receptive_field: int | None,
    readout: str,
    device,
    dtype,
    stack: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context (K, F, P), window (K, F, L))``: x0's last ``lags`` frames and the frames before them that the
    readout still depends on (all of them for a recurrent model); K = 1 for one window ``(F, T)``, or the K
    windows of a stack ``(K, F, T)`` where ``stack`` allows one."""
    shape = () if x0 is None else tuple(torch.as_tensor(x0).shape)
    if stack and len(shape) == 3:
        if shape[0] == 0:
            raise ValueError(f"x0 is a stack of no windows (shape {shape}): pass at least one")
        pairs = [_reference(model, x0[k], lags, receptive_field, readout, device, dtype) for k in range(int(shape[0]))]
        return torch.cat([c for c, _ in pairs]), torch.cat([w for _, w in pairs])
    n_freqs = _n_freqs(model, x0)
    if x0 is None:
        window = _padding(model, n_freqs, lags, device, dtype).clone()[None]
        return window[..., :0], window
    if len(shape) != 2:
        expected = "(freqs, frames), or a stack of windows (K, freqs, frames)" if stack else "(freqs, frames)"
        raise ValueError(f"x0 must be one stimulus window {expected}; got shape {shape}")
    if shape[0] != n_freqs:
        raise ValueError(f"{type(model).__name__} takes {n_freqs} frequency bands; x0 has {shape[0]} (shape {shape})")
    if shape[1] < lags:
        raise ValueError(
            f"x0 has {shape[1]} frames, fewer than lags={lags}: the map spans the last lags frames of x0, "
            f"so pass at least {lags} frames (or fewer lags)"
        )
    x0 = _as_input(model, torch.as_tensor(x0).detach(), device, dtype, "x0")  # finite, at least one frame
    context = x0[:, : shape[1] - lags]
    if receptive_field is not None:  # frames further back cannot reach the readout
        keep = receptive_field - lags if readout == "last" else receptive_field - 1
        context = context[:, context.shape[1] - min(keep, context.shape[1]) :]
    return context.clone()[None], x0[:, shape[1] - lags :].clone()[None]


def _responses(
    model: nn.Module, context: torch.Tensor, window: torch.Tensor, receptive_field: int | None, readout: str
) -> torch.Tensor:
    """``(K, N)``: every neuron's readout of each stimulus ``[context, window]`` (``(K, F, P)``, ``(K, F, L)``;
    one forward pass of the K windows as a batch)."""
    lags = window.shape[-1]
    x = torch.cat([context, window], dim=-1)
    capabilities = encoder_capabilities(model)
    if receptive_field is not None and capabilities.windowed:
        # Run exactly the frames the readout needs, without causal padding: prepend the padding value instead.
        need = receptive_field if readout == "last" else lags + receptive_field - 1
        if x.shape[-1] < need:
            pad = _padding(model, x.shape[1], need - x.shape[-1], x.device, x.dtype)
            x = torch.cat([pad.expand(x.shape[0], -1, -1), x], dim=-1)
        if readout == "last":
            if capabilities.window_output:
                return cast(Callable[[torch.Tensor], torch.Tensor], model.window_output)(x)
            return model(x, causal_padding=False)[:, :, -1]
        return model(x, causal_padding=False).mean(-1)
    if receptive_field is None and context.shape[-1] and capabilities.stateful:
        # A recurrent model that can start from a state: run the context without a graph, then only the window
        # with one, so the backward passes cover L frames rather than the whole of x0.
        with torch.no_grad():
            _, state = model(context, return_state=True)
        output = model(window, state=state)
    else:
        output = model(x)  # (K, N, T)
    return output[:, :, -1] if readout == "last" else output[:, :, -lags:].mean(-1)


def _probe_causality(model: nn.Module, receptive_field: int | None, lags: int, n_freqs: int, device, dtype) -> None:
    """The window logic relies on causality and on the stated receptive field: check both on a short random probe."""
    span = receptive_field if receptive_field is not None else min(lags, 16)
    probe = torch.randn(n_freqs, 3 * span + 2, generator=torch.Generator().manual_seed(0))
    _check_causal(model, probe.to(device=device, dtype=dtype), receptive_field, span)


def _neuron_set(values, n_outputs: int) -> np.ndarray:
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [int(values)]
    selected = _select(values, n_outputs, "neurons")
    if selected.size == 0:
        raise ValueError("neurons is empty: select at least one neuron")
    return selected


class _Restore:
    """Eval mode inside (:func:`dstrf.estimate.jacobian.eval_mode`: every submodule's own mode back afterwards, also
    on exceptions); gradients enabled."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = eval_mode(model)
        self.grad = torch.enable_grad()

    def __enter__(self):
        self.modes.__enter__()
        self.grad.__enter__()
        return self

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.modes.__exit__(*exc)
        return False


class _ReLUMonitor:
    """Forward hooks on the ReLU modules: which of their applications were entirely off (output all zero)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[str, bool]] = []  # (module name, every unit off) per application
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                self.handles.append(module.register_forward_hook(self._hook(name or type(module).__name__)))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                self.calls.append((name, not bool((output != 0).any())))

        return hook

    @property
    def off(self) -> list[str]:
        return [name for name, off in self.calls if off]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _inactive_warning(
    model: nn.Module,
    what: str,
    monitor: _ReLUMonitor,
    default_x0: bool,
    readout: str,
    then: str = "",
    stack: bool = True,
) -> InactiveGradmapWarning:
    name = type(model).__name__
    message = f"{what} all zeros at the reference stimulus, which says nothing about what drives the response."
    off = monitor.off
    if off:
        modules = sorted(set(off))
        message += (
            f" {len(off)} of the {len(monitor.calls)} ReLU layers applied in {name} have every unit off there "
            f"({', '.join(modules[:4])}{', ...' if len(modules) > 4 else ''})."
        )
    where = "the null stimulus (x0=None)" if default_x0 else "this x0"
    finding = message + then
    fix = (
        f" Fix: the reference stimulus, {where}, sits where {name} is locally flat (a bias-free ReLU network, "
        f"such as DeepEncoder, is entirely off at the null stimulus): pass x0=a typical stimulus window, e.g. "
        f"frames of a standardized trial from the data"
    )
    if stack:
        fix += ", or a stack of such windows (K, F, T) for their mean map"
    if readout == "last" and (not monitor.calls or len(off) < len(monitor.calls)):
        fix += ", or use readout='mean' (the response averaged over the window)"
    return InactiveGradmapWarning(finding, fix + ".")


# ------------------------------------------------------------------------------------------------- gradmap


def _batched_grads(forward, n: int, chunk_size: int) -> torch.Tensor:
    """``(n, F, L)``: the gradient of each of the n responses with respect to the window, in lag order.

    ``forward()`` builds the graph once and returns ``(responses (n,), window)``. Cotangents are one-hot rows,
    ``chunk_size`` per batched backward pass. Should an operator of the model have no batching rule for it
    (e.g. a fused GPU kernel), the chunk falls back to one backward pass per neuron on the same graph.
    """
    responses, window = forward()
    # window (K, F, L): column L - 1 - k is lag k; the K windows' gradients are summed (the readout averages them)
    out = torch.empty((n, *window.shape[1:]), dtype=window.dtype, device=window.device)
    batched = True
    for begin in range(0, n, chunk_size):
        stop = min(begin + chunk_size, n)
        last = stop >= n
        if batched:
            cotangents = torch.zeros((stop - begin, n), dtype=responses.dtype, device=responses.device)
            cotangents[torch.arange(stop - begin), torch.arange(begin, stop)] = 1.0
            try:
                (grads,) = torch.autograd.grad(
                    responses, window, grad_outputs=cotangents, is_grads_batched=True, retain_graph=not last
                )
                out[begin:stop] = grads.sum(1).flip(-1)
                continue
            except (RuntimeError, NotImplementedError):
                batched = False
                responses, window = forward()  # the failed pass may have freed the graph: build it again
        for i in range(begin, stop):
            (grad,) = torch.autograd.grad(responses[i], window, retain_graph=not (last and i == stop - 1))
            out[i] = grad.sum(0).flip(-1)
    return out


def gradmap(
    model: nn.Module,
    lags: int | None = None,
    x0: torch.Tensor | np.ndarray | None = None,
    readout: str = "last",
    neurons: int | Sequence[int] | None = None,
    population: bool | Sequence[int] = False,
    convention: str = "excitatory",
    chunk_size: int = 32,
) -> torch.Tensor:
    """Gradient maps ``(N, F, L)``: each neuron's response differentiated with respect to the input window at x0.

    ``G[n, f, k] = d R_n / d x0_f(T - 1 - k)`` over the last L frames of the reference stimulus ``x0 (F, T)``
    (k = 0: its last frame). See the module docstring for the definition, how it is computed and the pitfalls
    it avoids.

    Parameters
    ----------
    model : nn.Module
        A causal encoder ``(B, F, T) -> (B, N, T)`` with ``receptive_field`` (dstrf's models or any such module).
        It runs in eval mode; its mode, parameters and their ``.grad`` are left as they were.
    lags : int, optional
        L, frames of the map (the current one included). Default: the receptive field. Required for recurrent
        models (``receptive_field is None``); more than the receptive field is an error.
    x0 : ``(F, T)`` or ``(K, F, T)``, optional
        The reference stimulus, as the model takes it (standardized), ``T >= L``; the map is over its last L
        frames. A stack of K windows gives their mean map, ``(1/K) sum_k G(x0[k])`` (one forward pass of the K
        windows as a batch, the same backward passes as one window): with windows of the data ending at frames
        t_k this is the mean of the dSTRFs at those frames, an informative reference for every encoder.
        Default: the null stimulus, L frames of zeros (or of the model's ``padding_value``); the frames before
        it are the model's padding, the same value.
    readout : {"last", "mean"}
        The response at the last frame of x0 (transient features), or averaged over the window's L frames
        (sustained features).
    neurons : int or sequence of int, optional
        Output channels to map (default all), in this order.
    population : bool or sequence of int
        True: one map ``(1, F, L)`` of the mean readout of ``neurons``. A sequence: one map of the mean readout
        of these neurons (``neurons`` must then be None).
    convention : {"excitatory", "paper"}
        ``"excitatory"``: d R / d x, positive where more energy raises the response (dstrf's sign everywhere).
        ``"paper"``: d(-R) / d x, the sign of the GradMap paper and deepSTRF.
    chunk_size : int
        Neurons per batched backward pass. Peak memory grows with it, not with N.

    Returns
    -------
    torch.Tensor ``(len(neurons), F, L)`` or ``(1, F, L)`` for a population, on the CPU, in the model's dtype.

    Raises
    ------
    ValueError
        For an x0 with NaN/Inf (naming the band and frame of the first), a model with NaN/Inf weights (naming
        the first such parameter: a diverged fit), ``lags`` or ``chunk_size`` < 1, and a map that is not finite.

    Warns
    -----
    InactiveGradmapWarning
        When a map is all zeros (the reference stimulus sits where the model is flat, e.g. every ReLU off).
    """
    _check_readout(readout)
    if convention not in CONVENTIONS:
        raise ValueError(
            f"convention must be one of {CONVENTIONS} ('excitatory': d r / d x, positive where more "
            f"energy raises the response; 'paper': the GradMap paper's d(-r) / d x); got {convention!r}"
        )
    if not isinstance(population, bool):
        if neurons is not None:
            raise ValueError(
                "pass the population's neurons either as population=[...] or as neurons=[...] with "
                "population=True, not both"
            )
        neurons, population = population, True
    chunk_size = positive_int(chunk_size, "chunk_size", "neurons")
    receptive_field, lags = check_model(model, lags)
    device, dtype = _device_dtype(model)
    context, window = _reference(model, x0, lags, receptive_field, readout, device, dtype, stack=True)

    with _Restore(model):
        _probe_causality(model, receptive_field, lags, window.shape[1], device, dtype)
        monitor = _ReLUMonitor(model)  # watches the first forward pass only
        try:
            leaf = window.detach().requires_grad_(True)
            responses = _responses(model, context, leaf, receptive_field, readout).mean(0)  # (N,) over K windows
        finally:
            monitor.remove()
        selected = _neuron_set(neurons, responses.shape[0])
        index = torch.as_tensor(selected, device=responses.device)

        def readouts(responses: torch.Tensor) -> torch.Tensor:
            picked = responses[index]
            return picked.mean()[None] if population else picked

        built = [(readouts(responses), leaf)]

        def forward():
            if built:  # the graph of the first pass serves, unless it has to be built again
                return built.pop()
            leaf = window.detach().requires_grad_(True)
            return readouts(_responses(model, context, leaf, receptive_field, readout).mean(0)), leaf

        maps = _batched_grads(forward, 1 if population else len(selected), chunk_size)

    if convention == "paper":
        maps = -maps
    maps = maps.detach().cpu()
    rows = np.zeros(1, dtype=np.int64) if population else selected
    check_finite_result(
        maps,
        model,
        "the population map" if population else "the gradient map",
        ("map" if population else "neuron", "band", "lag"),
        (rows, np.arange(maps.shape[1]), np.arange(maps.shape[2])),
    )
    zero = ~(maps.flatten(1) != 0).any(1)
    if bool(zero.any()):
        if population:
            what = f"The population map of neurons {selected.tolist()[:10]} is"
        else:
            names = selected[zero.numpy()].tolist()
            plural = len(names) > 1
            what = (
                f"The gradient map{'s' if plural else ''} of neuron{'s' if plural else ''} "
                f"{names[:20]}{' ...' if len(names) > 20 else ''} ({len(names)} of {len(zero)}) "
                f"{'are' if plural else 'is'}"
            )
        warnings.warn(_inactive_warning(model, what, monitor, x0 is None, readout), stacklevel=2)
    return maps


# -------------------------------------------------------------------------------------- optimal stimulus


@dataclass
class OptimalStimulus:
    """The result of :func:`optimal_stimulus`.

    Attributes
    ----------
    stimulus : torch.Tensor ``(F, L)``
        The optimised window, in time order (its last column is the frame read out), on the CPU.
    response : np.ndarray ``(steps + 1,)``
        The readout after 0, 1, ..., ``steps`` Adam steps (entry 0: the start, x0 under the constraint).
    snapshots : list of (int, torch.Tensor)
        ``(step, stimulus after that many steps)`` when requested.
    neurons : list of int
        The neuron(s) whose (mean) readout was maximised.
    readout, constraint
        As passed.
    """

    stimulus: torch.Tensor
    response: np.ndarray
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    neurons: list[int] = field(default_factory=list)
    readout: str = "last"
    constraint: tuple | None = None

    @property
    def gain(self) -> float:
        """Final readout minus the readout at the start."""
        return float(self.response[-1] - self.response[0])


def _check_constraint(constraint) -> tuple | None:
    usage = (
        "constraint must be None, ('range', lo, hi) (every value clamped to [lo, hi]) or ('norm', radius) "
        "(the L2 norm of the stimulus minus the null stimulus at most radius)"
    )
    if constraint is None:
        return None
    if isinstance(constraint, str) or not isinstance(constraint, Sequence) or not constraint:
        raise ValueError(f"{usage}; got {constraint!r}")
    kind, *values = constraint
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{usage}; got {constraint!r}") from None
    if kind == "range" and len(values) == 2 and values[0] < values[1]:
        return ("range", *values)
    if kind == "norm" and len(values) == 1 and values[0] > 0:
        return ("norm", values[0])
    raise ValueError(f"{usage}; got {constraint!r}")


def _project(stimulus: torch.Tensor, constraint: tuple | None, null: torch.Tensor) -> None:
    """Put ``stimulus`` (in place) back into the constraint set."""
    if constraint is None:
        return
    if constraint[0] == "range":
        stimulus.clamp_(constraint[1], constraint[2])
    else:
        norm = torch.linalg.vector_norm(stimulus - null)
        if norm > constraint[1]:
            stimulus.sub_(null).mul_(constraint[1] / norm).add_(null)


def _snapshot_steps(snapshots, steps: int) -> set[int]:
    if snapshots is None:
        return set()
    if isinstance(snapshots, (int, np.integer)) and not isinstance(snapshots, bool):
        if snapshots < 1:
            raise ValueError(f"snapshots=k takes a snapshot every k steps, k >= 1; got {snapshots}")
        return set(range(0, steps + 1, int(snapshots))) | {steps}
    wanted = {int(s) for s in snapshots}
    bad = sorted(s for s in wanted if not 0 <= s <= steps)
    if bad:
        raise ValueError(f"snapshot steps {bad[:5]} out of range: valid 0..{steps}")
    return wanted


def optimal_stimulus(
    model: nn.Module,
    neurons: int | Sequence[int],
    steps: int = 1500,
    lr: float = 0.05,
    x0: torch.Tensor | np.ndarray | None = None,
    constraint: tuple | None = ("range", -3.0, 3.0),
    lags: int | None = None,
    readout: str = "last",
    snapshots: int | Sequence[int] | None = None,
    progress: bool = True,
) -> OptimalStimulus:
    """The stimulus window that drives a neuron (or a population) most: gradient ascent on it with Adam.

    From the window ``x0`` (the last L frames of it are optimised; earlier frames, if any, stay as they are and
    set the context, e.g. a recurrent model's state), each step moves the window along the gradient of the
    readout (the response at the last frame, or averaged over the window; for several neurons the mean of
    their readouts) and then puts it back into the constraint set. The GradMap paper's "Dreams"; the gradient
    map is its first step.

    Parameters
    ----------
    model : nn.Module
        A causal encoder, as for :func:`gradmap`. Only the stimulus is optimised: the model runs in eval mode,
        its mode, parameters and their ``.grad`` are left as they were.
    neurons : int or sequence of int
        The neuron to drive, or a population (its mean readout is maximised).
    steps : int
        Adam steps (the paper uses about 1500).
    lr : float
        Adam's learning rate, in stimulus units per step (standardized units for dstrf's models).
    x0 : ``(F, T)``, optional
        Starting point, ``T >= L``. Default: the null stimulus (zeros). A bias-free ReLU network (DeepEncoder)
        has zero gradient there and cannot move: start from a data window then.
    constraint : tuple or None
        Keeps the stimulus in the data's range, enforced after every step (and on x0):
        ``("range", lo, hi)`` clamps every value to [lo, hi] (default ``("range", -3, 3)``: three standard
        deviations of each band in standardized units); ``("norm", radius)`` bounds the L2 norm of the window
        minus the null stimulus (a typical standardized window of L frames has norm about ``sqrt(F * L)``);
        None leaves it free (the response of an unbounded model then grows without limit).
    lags : int, optional
        L, frames of the window; default the receptive field, required for recurrent models.
    readout : {"last", "mean"}
        As for :func:`gradmap`.
    snapshots : int or sequence of int, optional
        Keep the stimulus every k steps (an int; the start and the end included) or after the listed steps.
    progress : bool
        Show a progress bar (tqdm) with the current readout.

    Returns
    -------
    OptimalStimulus
        ``.stimulus (F, L)``, ``.response`` (the readout after each step, numpy), ``.snapshots``.
    """
    _check_readout(readout)
    constraint = _check_constraint(constraint)
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr}")
    snapshot_steps = _snapshot_steps(snapshots, steps)
    receptive_field, lags = check_model(model, lags)
    device, dtype = _device_dtype(model)
    context, window = _reference(model, x0, lags, receptive_field, readout, device, dtype)
    null = _padding(model, window.shape[1], lags, device, dtype)[None]
    stimulus = window.detach().clone()
    _project(stimulus, constraint, null)
    stimulus.requires_grad_(True)
    optimizer = torch.optim.Adam([stimulus], lr=float(lr), maximize=True)
    curve = np.empty(steps + 1)
    kept: list[tuple[int, torch.Tensor]] = []
    selected = None
    bar = None
    with _Restore(model):
        _probe_causality(model, receptive_field, lags, window.shape[1], device, dtype)
        monitor = _ReLUMonitor(model)  # watches the first forward pass only
        try:
            bar = (
                _tqdm(total=steps, desc="optimal stimulus", unit="step", disable=not progress, leave=False)
                if _tqdm is not None
                else None
            )
            for step in range(steps + 1):
                responses = _responses(model, context, stimulus, receptive_field, readout)[0]
                if selected is None:
                    selected = _neuron_set(neurons, responses.shape[0])
                    index = torch.as_tensor(selected, device=responses.device)
                    monitor.remove()
                value = responses[index].mean()
                curve[step] = value.item()
                if not math.isfinite(curve[step]):
                    raise ValueError(
                        f"the readout of neuron(s) {selected.tolist()[:10]} of {type(model).__name__} became "
                        f"{curve[step]} after {step} steps: the stimulus ran where the model overflows. Bound it "
                        "(constraint=('range', lo, hi) or ('norm', radius)) or lower lr."
                    )
                if step in snapshot_steps:
                    kept.append((step, stimulus[0].detach().cpu().clone()))
                if step == steps:
                    break
                (grad,) = torch.autograd.grad(value, stimulus)
                if step == 0 and not bool((grad != 0).any()):
                    what = f"The gradient of the readout of neuron(s) {selected.tolist()[:10]} is"
                    warnings.warn(
                        _inactive_warning(
                            model,
                            what,
                            monitor,
                            x0 is None,
                            readout,
                            " The stimulus cannot move from there.",
                            stack=False,
                        ),
                        stacklevel=2,
                    )
                stimulus.grad = grad
                optimizer.step()
                stimulus.grad = None
                with torch.no_grad():
                    _project(stimulus, constraint, null)
                if bar is not None:
                    bar.update(1)
                    if step % 25 == 0:
                        bar.set_postfix(response=f"{curve[step]:.4g}", refresh=False)
        finally:
            monitor.remove()
            if bar is not None:
                bar.close()
    assert selected is not None  # set in the first step, and there is one (steps >= 0)
    return OptimalStimulus(
        stimulus=stimulus[0].detach().cpu().clone(),
        response=curve,
        snapshots=kept,
        neurons=[int(n) for n in selected],
        readout=readout,
        constraint=constraint,
    )
