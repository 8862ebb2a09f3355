"""Lightning callbacks that analyse the fitted model: dSTRFs of the held-out trials after fitting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch

from ..estimate.dstrf import dstrf
from ..estimate.storage import DSTRFFile
from ..plots import animate_dstrf, plot_dstrf
from .loggers import log_media
from .module import EncoderModule

__all__ = ["DSTRFCallback"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}


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
    """

    def __init__(self, trials: Sequence[int] | None = None, channels: Sequence[int] | None = None,
                 times: Sequence[int] | None = None, lags: int | None = None, chunk_size: int | None = None,
                 dtype: str = "float32", dirpath: str | None = None, figures: bool = True,
                 figure_channels: Sequence[int] | None = None, figure_times: Sequence[int] | None = None,
                 animation: bool = False, animation_frames: int = 100) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
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
        self.figure_channels = None if figure_channels is None else [int(c) for c in figure_channels]
        self.figure_times = None if figure_times is None else [int(t) for t in figure_times]

    def compute(self, module: EncoderModule, stimuli: dict[int, torch.Tensor], out: Path, rank: int = 0,
                world_size: int = 1) -> list[int]:
        """Write the dSTRFs of this rank's share of ``stimuli`` (trial id -> raw stimulus); their trial ids."""
        model = module.data_units()
        mine = sorted(stimuli)[rank::world_size]
        for trial in mine:
            dstrf(model, stimuli[trial].to(module.device), lags=self.lags, channels=self.channels, times=self.times,
                  chunk_size=self.chunk_size, dtype=_DTYPES[self.dtype], out=out / f"trial_{trial}.h5").close()
        return mine

    def draw(self, module: EncoderModule, trials, trial_ids: Sequence[int], out: Path, loggers=()) -> list[Path]:
        """Figures (and animations) of the finished dSTRF files in ``out``; the paths written."""
        model = module.data_units()
        sfreq = module.hparams.get("sfreq") or trials.sfreq
        written = []
        for trial in trial_ids:
            stimulus, response = trials[trial].stimulus, trials[trial].response
            with torch.no_grad():
                prediction = model(stimulus[None].to(module.device))[0].cpu()
            with DSTRFFile(out / f"trial_{trial}.h5") as dstrfs:
                channels = self.figure_channels or [int(dstrfs.channels[0])]
                for channel in channels:
                    name = f"trial_{trial}_channel_{channel}"
                    figure = plot_dstrf(dstrfs, stimulus, channel=channel, times=self.figure_times, response=response,
                                        prediction=prediction, sfreq=sfreq, freqs=trials.freqs,
                                        title=f"trial {trial}, channel {channel}")
                    figure.savefig(out / f"{name}.png", dpi=100)
                    plt.close(figure)
                    written.append(out / f"{name}.png")
                    if self.animation:
                        past = [int(t) for t in dstrfs.times if t >= dstrfs.shape[-1]] or list(map(int, dstrfs.times))
                        written.append(animate_dstrf(dstrfs, stimulus, out / name, channel=channel,
                                                     times=past[: self.animation_frames], response=response,
                                                     prediction=prediction, sfreq=sfreq, freqs=trials.freqs))
        for path in written:
            log_media(loggers, f"dstrf/{path.stem}", path)
        return written

    def on_fit_end(self, trainer: L.Trainer, pl_module: EncoderModule) -> None:
        datamodule = trainer.datamodule
        trial_ids = self.trials if self.trials is not None else list(datamodule.split.test)
        if not trial_ids:
            return
        datamodule.trials.check_ids(trial_ids, "DSTRFCallback trials")
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        module = EncoderModule.load_from_checkpoint(best, map_location=pl_module.device) if best else pl_module
        out = Path(self.dirpath or Path(trainer.default_root_dir) / "dstrf")
        out.mkdir(parents=True, exist_ok=True)
        stimuli = {t: datamodule.trials[t].stimulus for t in trial_ids}
        self.compute(module, stimuli, out, trainer.global_rank, trainer.world_size)
        trainer.strategy.barrier("dstrf")
        if trainer.is_global_zero:
            index = {"checkpoint": Path(best).name if best else None, "units": "response units per stimulus unit",
                     "trials": {str(t): f"trial_{t}.h5" for t in sorted(trial_ids)}}
            (out / "index.json").write_text(json.dumps(index, indent=2))
            if self.figures or self.animation:
                self.draw(module, datamodule.trials, sorted(trial_ids), out, trainer.loggers)
