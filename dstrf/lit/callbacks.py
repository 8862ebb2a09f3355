"""Lightning callbacks that analyze the fitted model after fitting: dSTRFs of the held-out trials, gradient maps
and optimal stimuli. Both load the best checkpoint and write into the run directory.

They are adapters: they check their settings, pick the best checkpoint's module, share the work among DDP ranks
and log the figures to the run's loggers; the work itself is :mod:`dstrf.postfit`, which ``dstrf-estimate``
(:mod:`dstrf.sweep.posthoc`) calls too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

import lightning as L
import torch

from .. import postfit
from ..estimate.gradmap import CONVENTIONS, READOUTS
from ..validation import dtype_named, option
from .loggers import log_media
from .module import EncoderModule

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["ChecksBeforeFit", "DSTRFCallback", "GradmapCallback"]


@runtime_checkable
class ChecksBeforeFit(Protocol):
    """A callback whose settings can be checked against the model and the data before any training, so a
    setting that cannot work fails in seconds instead of after the fit. ``check`` raises ``ValueError``
    naming its own argument (``lags=None ...``); the entry point adds the config key."""

    def check(self, module: EncoderModule, trials) -> None: ...


def _check_lags(lags: int | None, module: EncoderModule) -> None:
    if lags is None and module.receptive_field is None:
        raise ValueError(
            f"lags=None, but {type(module.encoder).__name__} is recurrent (no finite receptive field): "
            "set lags, the number of past frames the maps cover (e.g. lags=50)"
        )
    if lags is not None and int(lags) < 1:
        raise ValueError(f"lags must be a positive number of frames; got {lags}")


def _encoder_module(pl_module: L.LightningModule, callback: L.Callback) -> EncoderModule:
    if not isinstance(pl_module, EncoderModule):
        raise TypeError(f"{type(callback).__name__} works on dstrf's EncoderModule; got {type(pl_module).__name__}")
    return pl_module


def _best_module(trainer: L.Trainer, pl_module: EncoderModule) -> tuple[EncoderModule, str]:
    """The best checkpoint's module (the fitted one when there is no checkpoint) and the checkpoint path."""
    checkpoint = cast("ModelCheckpoint | None", trainer.checkpoint_callback)  # typed as the base class
    best = checkpoint.best_model_path if checkpoint is not None else ""
    module = EncoderModule.load_from_checkpoint(best, map_location=pl_module.device) if best else pl_module
    return module, best


class DSTRFCallback(L.Callback):
    """After fitting, the dSTRFs of the job's test trials from its best checkpoint, in ``<run dir>/dstrf/``.

    One chunked file per trial (``trial_<id>.h5``, read with :func:`dstrf.estimate.open_dstrf`) and
    ``index.json``. The dSTRFs are in the data's units (raw stimulus in, response out;
    :class:`dstrf.lit.DataUnitsEncoder`), so the models of a sweep can be compared and averaged. Under DDP, each
    rank computes every K-th trial and writes its files, and rank 0 writes the index after a barrier: the files
    are those of a single process. A finished file is reused when the job resumes.

    Parameters
    ----------
    trials : trial ids, optional
        Default: the job's test trials (the only ones the model never saw).
    channels, times, lags, chunk_size : as in :func:`dstrf.estimate.dstrf`
        ``times`` as ``[start, stop]`` frames.
    dtype : {"float32", "float16", "float64"}
    dirpath : path, optional
        Default ``<trainer.default_root_dir>/dstrf``.
    figures : bool
        Also draw, per trial and figure channel, the dSTRF at ``figure_times`` under the stimulus, the response
        and the prediction (:func:`dstrf.plots.plot_dstrf`): ``trial_<id>_channel_<n>.png``, logged to the
        run's loggers (wandb shows them under ``dstrf/``).
    figure_channels : channel numbers, optional
        Channels drawn (default: the first one computed).
    figure_times : frames, optional
        Frames whose dSTRF is drawn (default: 4 evenly spaced past the warm-up).
    animation : bool
        Also write an animation of the dSTRF over ``animation_frames`` consecutive frames
        (:func:`dstrf.plots.animate_dstrf`; mp4 with ffmpeg, GIF otherwise), logged as a video.
    animation_frames : int
        Frames animated, from the first one past the warm-up.
    analyze : bool
        Also the nonlinearity measures of every computed channel (:func:`dstrf.analysis.nonlinearities`:
        complexity, gain change, temporal hold, shape change) per trial, ``nonlinearities.csv``, their mean per
        channel over the trials, ``nonlinearities_by_channel.csv``, and a figure comparing the channels,
        ``nonlinearities.png`` (logged). The frames are the computed ``times`` past the warm-up (the first
        ``lags`` frames of a trial see padding, not stimulus).
    """

    def __init__(
        self,
        trials: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        times: Sequence[int] | None = None,
        lags: int | None = None,
        chunk_size: int | None = None,
        dtype: str = "float32",
        dirpath: str | None = None,
        figures: bool = True,
        figure_channels: Sequence[int] | None = None,
        figure_times: Sequence[int] | None = None,
        animation: bool = False,
        animation_frames: int = 100,
        analyze: bool = False,
    ) -> None:
        dtype_named(dtype)
        if times is not None and len(times) != 2:
            raise ValueError(f"times must be [start, stop] frames; got {list(times)}")
        if int(animation_frames) < 1:
            raise ValueError(f"animation_frames must be a positive number of frames; got {animation_frames}")
        if channels is not None and figure_channels is not None:
            extra = sorted(set(int(c) for c in figure_channels) - set(int(c) for c in channels))
            if extra:
                raise ValueError(f"figure_channels {extra} are not among the computed channels {list(channels)}")
        self.trials = None if trials is None else [int(t) for t in trials]
        self.channels = None if channels is None else [int(c) for c in channels]
        self.times = None if times is None else slice(int(times[0]), int(times[1]))
        self.lags, self.chunk_size, self.dtype, self.dirpath = lags, chunk_size, dtype, dirpath
        self.figures, self.animation, self.animation_frames = bool(figures), bool(animation), int(animation_frames)
        self.analyze = bool(analyze)
        self.figure_channels = None if figure_channels is None else [int(c) for c in figure_channels]
        self.figure_times = None if figure_times is None else [int(t) for t in figure_times]

    def check(self, module: EncoderModule, trials) -> None:
        """Before the fit: lags for a recurrent model, trial and channel ids that exist, times within the trials."""
        _check_lags(self.lags, module)
        if self.trials is not None:
            trials.check_ids(self.trials, "trials")
        n = module.hparams.n_outputs
        for name, ids in (("channels", self.channels), ("figure_channels", self.figure_channels)):
            bad = [c for c in ids or [] if not 0 <= c < n]
            if bad:
                raise ValueError(f"{name}={ids}: the model has {n} output channels (0..{n - 1}); {bad} do not exist")
        if self.chunk_size is not None and int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of frames; got {self.chunk_size}")
        if self.times is not None and not 0 <= self.times.start < self.times.stop:
            raise ValueError(
                f"times=[{self.times.start}, {self.times.stop}] must be [start, stop] with 0 <= start < stop"
            )

    def compute(
        self, module: EncoderModule, stimuli: dict[int, torch.Tensor], out: Path, rank: int = 0, world_size: int = 1
    ) -> list[int]:
        """Write the dSTRFs of this rank's share of ``stimuli`` (trial id -> raw stimulus); their trial ids
        (:func:`dstrf.postfit.write_dstrfs`)."""
        return postfit.write_dstrfs(
            module.data_units(),
            stimuli,
            out,
            lags=self.lags,
            channels=self.channels,
            times=self.times,
            chunk_size=self.chunk_size,
            dtype=self.dtype,
            rank=rank,
            world_size=world_size,
        )

    def draw(self, module: EncoderModule, trials, trial_ids: Sequence[int], out: Path, loggers=()) -> list[Path]:
        """Figures (and animations) of the finished dSTRF files in ``out``, logged; the paths written
        (:func:`dstrf.postfit.dstrf_figures`)."""
        written = postfit.dstrf_figures(
            module.data_units(),
            trials,
            trial_ids,
            out,
            channels=self.figure_channels,
            times=self.figure_times,
            animation=self.animation,
            animation_frames=self.animation_frames,
            sfreq=module.hparams.get("sfreq") or trials.sfreq,
            label=type(module.encoder).__name__,
        )
        for path in written:
            log_media(loggers, f"dstrf/{path.stem}", path)
        return written

    def nonlinearities(self, trials, trial_ids: Sequence[int], out: Path, loggers=()) -> Path:
        """Nonlinearity measures of the dSTRF files in ``out``, per trial and per channel, the figure logged;
        the per-trial CSV (:func:`dstrf.postfit.analyze_dstrfs`)."""
        files = {trial: postfit.trial_file(out, trial) for trial in trial_ids}
        written = postfit.analyze_dstrfs(
            files,
            out,
            trials.channel_names,
            label="DSTRFCallback analyze: trial {trial} has",
            remedy="computed times must reach further",
        )
        log_media(loggers, "dstrf/nonlinearities", written["figure"])
        return written["per_trial"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module = _encoder_module(pl_module, self)
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared
        trial_ids = self.trials if self.trials is not None else list(datamodule.split.test)
        if not trial_ids:
            return
        datamodule.trials.check_ids(trial_ids, "DSTRFCallback trials")
        module, best = _best_module(trainer, pl_module)
        out = Path(self.dirpath or Path(trainer.default_root_dir) / "dstrf")
        out.mkdir(parents=True, exist_ok=True)
        stimuli = {t: datamodule.trials[t].stimulus for t in trial_ids}
        self.compute(module, stimuli, out, trainer.global_rank, trainer.world_size)
        trainer.strategy.barrier("dstrf")
        if trainer.is_global_zero:
            index = {
                "checkpoint": Path(best).name if best else None,
                "units": "response units per stimulus unit",
                "trials": {str(t): postfit.trial_file(out, t).name for t in sorted(trial_ids)},
            }
            postfit.write_index(out, index)
            if self.figures or self.animation:
                self.draw(module, datamodule.trials, sorted(trial_ids), out, trainer.loggers)
            if self.analyze:
                self.nonlinearities(datamodule.trials, sorted(trial_ids), out, trainer.loggers)


class GradmapCallback(L.Callback):
    """After fitting, the gradient map of every output (and optionally optimal stimuli) from the best checkpoint.

    Writes to ``<run dir>/gradmap/``: ``gradmaps.npz`` (``maps`` ``(N, F, L)`` in response units per stimulus
    unit, ``channels``, ``channel_names``, ``sfreq``, ``freqs``, ``lags``) and ``gradmaps.png`` (one panel per
    output: lag in ms, frequency in Hz, a diverging colour map centred on zero); with ``optimal_stimuli``,
    ``optimal_stimuli.npz`` (``stimuli`` ``(K, F, L)`` in the data's units, ``standardized`` in the model's,
    ``responses`` ``(K, steps + 1)``, ``neurons``) and ``optimal_stimuli.png``. Figures go to the configured
    logger. Under DDP only rank 0 computes (a gradient map is one forward pass).

    The maps are :func:`dstrf.estimate.gradmap` of the encoder between the data's units
    (:class:`dstrf.lit.DataUnitsEncoder`). By default (``reference="data"``) the reference is a stack of
    ``windows`` windows evenly spaced over the test trials (all trials if the split has none), so each map is
    the mean dSTRF over those frames: informative for every encoder. ``reference="null"`` takes the null
    stimulus instead (the training mean of every band, zeros in standardized units), where a bias-free ReLU
    network (``DeepEncoder``) is entirely off and its map all zeros (the callback then warns, naming the
    config keys); ``x0=[trial, frame]`` takes one window of the data.

    Parameters
    ----------
    lags : int, optional
        Frames of the map; default the receptive field, required for recurrent models.
    readout : {"last", "mean"}
        The response at the window's last frame, or averaged over the window.
    convention : {"excitatory", "paper"}
        The sign (dstrf's excitatory-positive, or the GradMap paper's opposite).
    reference : {"data", "null"}
        The mean over windows of the test trials (default), or the null stimulus.
    windows : int
        Windows of the data reference (default 64).
    x0 : ``[trial, frame]``, optional
        One reference window: the ``lags`` frames of trial ``trial`` ending at ``frame`` (overrides
        ``reference``).
    optimal_stimuli : list of int, optional
        Neurons whose optimal stimulus (:func:`dstrf.estimate.optimal_stimulus`) is synthesised, in the model's
        standardized units under ``constraint``, each from the reference window that drives it most.
    steps, lr, constraint
        As in :func:`dstrf.estimate.optimal_stimulus`; ``constraint`` as a list (``["range", -3, 3]``).
    dirpath : path, optional
        Default ``<trainer.default_root_dir>/gradmap``.
    """

    def __init__(
        self,
        lags: int | None = None,
        readout: str = "last",
        convention: str = "excitatory",
        reference: str = "data",
        windows: int = 64,
        x0: Sequence[int] | None = None,
        optimal_stimuli: Sequence[int] | None = None,
        steps: int = 1500,
        lr: float = 0.05,
        constraint: Sequence | None = ("range", -3.0, 3.0),
        dirpath: str | None = None,
    ) -> None:
        option(readout, "readout", READOUTS)
        option(convention, "convention", CONVENTIONS)
        option(reference, "reference", postfit.REFERENCES)
        if int(windows) < 1:
            raise ValueError(f"windows must be >= 1 (windows of the data reference); got {windows}")
        if x0 is not None and len(x0) != 2:
            raise ValueError(
                f"x0 must be [trial, frame] (the window of that trial ending at that frame); got {list(x0)}"
            )
        self.lags, self.readout, self.convention = lags, readout, convention
        self.reference, self.windows = reference, int(windows)
        self.x0 = None if x0 is None else (int(x0[0]), int(x0[1]))
        self.optimal_stimuli = [int(n) for n in optimal_stimuli or []]
        self.steps, self.lr = int(steps), float(lr)
        self.constraint = None if constraint is None else tuple(constraint)
        self.dirpath = dirpath

    #: What an all-zero map's warning tells the user to do, in this callback's config keys.
    FIX = (
        "take the reference from the data: callbacks.gradmap.reference=data (the mean map over windows of the "
        "test trials, the default) or callbacks.gradmap.x0=[trial,frame] (one window)"
    )

    def check(self, module: EncoderModule, trials) -> None:
        """Before the fit: lags for a recurrent model, a reference window and neurons that exist."""
        _check_lags(self.lags, module)
        lags = self.lags or module.receptive_field
        assert lags is not None  # _check_lags refused a recurrent model without lags
        if self.x0 is not None:
            trials.window(*self.x0, lags)  # raises naming the trial and frame when the window does not exist
        n = module.hparams.n_outputs
        bad = [c for c in self.optimal_stimuli if not 0 <= c < n]
        if bad:
            raise ValueError(
                f"optimal_stimuli={self.optimal_stimuli}: the model has {n} outputs (0..{n - 1}); {bad} do not exist"
            )
        if self.steps < 1 or not self.lr > 0:
            raise ValueError(f"steps must be >= 1 and lr > 0; got steps={self.steps}, lr={self.lr}")

    def compute(
        self, module: EncoderModule, trials, out: Path, loggers=(), trial_ids: Sequence[int] | None = None
    ) -> dict[str, Path]:
        """Write the maps (and optimal stimuli) of ``module`` into ``out`` (:func:`dstrf.postfit.write_gradmaps`,
        :func:`dstrf.postfit.write_optimal_stimuli`), the figures logged; the files written by name.
        ``trial_ids``: the trials of the data reference (default all)."""
        model = module.data_units()
        lags = self.lags or model.receptive_field
        if lags is None:
            raise ValueError("GradmapCallback: the model is recurrent (no finite receptive field); set lags")
        names = list(module.hparams.get("channel_names") or trials.channel_names)
        sfreq = module.hparams.get("sfreq") or trials.sfreq
        written = postfit.write_gradmaps(
            model,
            trials,
            out,
            lags=lags,
            reference=self.reference,
            x0=self.x0,
            trial_ids=trial_ids,
            windows=self.windows,
            fix=self.FIX,
            readout=self.readout,
            convention=self.convention,
            channel_names=names,
            sfreq=sfreq,
        )
        if self.optimal_stimuli:
            # the standardized encoder: the constraint's range is in standard deviations
            written.update(
                postfit.write_optimal_stimuli(
                    module.encoder,
                    self.optimal_stimuli,
                    trials,
                    out,
                    mean=module.stimulus_mean,
                    std=module.stimulus_std,
                    lags=lags,
                    reference=self.reference,
                    x0=self.x0,
                    trial_ids=trial_ids,
                    windows=self.windows,
                    fix=self.FIX,
                    readout=self.readout,
                    steps=self.steps,
                    lr=self.lr,
                    constraint=self.constraint,
                    channel_names=names,
                    sfreq=sfreq,
                )
            )
        for key in ("gradmaps_figure", "optimal_stimuli_figure"):
            if key in written:
                log_media(loggers, f"gradmap/{written[key].stem}", written[key])
        return written

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module = _encoder_module(pl_module, self)
        if trainer.is_global_zero:
            module, _ = _best_module(trainer, pl_module)
            out = Path(self.dirpath or Path(trainer.default_root_dir) / "gradmap")
            datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared
            test = list(datamodule.split.test) or None
            self.compute(module, datamodule.trials, out, trainer.loggers, trial_ids=test)
        trainer.strategy.barrier("gradmap")
