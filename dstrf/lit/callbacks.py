"""Lightning callbacks that analyse the fitted model: dSTRFs of the held-out trials after fitting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from ..estimate.dstrf import dstrf
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
    """

    def __init__(self, trials: Sequence[int] | None = None, channels: Sequence[int] | None = None,
                 times: Sequence[int] | None = None, lags: int | None = None, chunk_size: int | None = None,
                 dtype: str = "float32", dirpath: str | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        if times is not None and len(times) != 2:
            raise ValueError(f"times must be [start, stop] frames; got {list(times)}")
        self.trials = None if trials is None else [int(t) for t in trials]
        self.channels = None if channels is None else [int(c) for c in channels]
        self.times = None if times is None else slice(int(times[0]), int(times[1]))
        self.lags, self.chunk_size, self.dtype, self.dirpath = lags, chunk_size, dtype, dirpath

    def compute(self, module: EncoderModule, stimuli: dict[int, torch.Tensor], out: Path, rank: int = 0,
                world_size: int = 1) -> list[int]:
        """Write the dSTRFs of this rank's share of ``stimuli`` (trial id -> raw stimulus); their trial ids."""
        model = module.data_units()
        mine = sorted(stimuli)[rank::world_size]
        for trial in mine:
            dstrf(model, stimuli[trial].to(module.device), lags=self.lags, channels=self.channels, times=self.times,
                  chunk_size=self.chunk_size, dtype=_DTYPES[self.dtype], out=out / f"trial_{trial}.h5").close()
        return mine

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
