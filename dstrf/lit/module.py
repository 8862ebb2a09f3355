"""EncoderModule: the one LightningModule that trains, validates and tests any dstrf encoder."""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import hydra.utils
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..metrics import PearsonR, pearson_r
from ..models import ClosedFormEncoder, encoder_capabilities

if TYPE_CHECKING:
    from lightning.fabric.utilities.data import AttributeDict

__all__ = ["EncoderModule", "DataUnitsEncoder", "frame_mask"]

LOSSES = ("mse", "poisson")
OPTIMIZERS = ("adamw", "radam")
SCHEDULERS = (None, "cosine", "plateau")


def frame_mask(lengths: torch.Tensor, n_frames: int, warmup: int) -> torch.Tensor:
    """``(B, T)`` bool: frame t of row b counts iff ``warmup <= t < lengths[b]``.

    Frames past a trial's end are padding; the first ``warmup`` frames of a trial are outputs whose input
    window reaches before the trial start into the causal padding, which is not data.
    """
    t = torch.arange(n_frames, device=lengths.device)
    return (t[None, :] >= warmup) & (t[None, :] < lengths[:, None])


class DataUnitsEncoder(torch.nn.Module):
    """The encoder between the data's units: raw stimulus ``(B, F, T)`` -> response ``(B, N, T)``.

    ``y = encoder((x - mu) / sd) * sd_y + mu_y`` with the training standardization. Its dSTRF is in response
    units per stimulus unit, so dSTRFs of models trained on different trials (different statistics, as the
    jackknife replicates of a fold) are comparable and can be averaged. An affine map of input and output
    keeps a piecewise-linear encoder exactly piecewise linear.
    """

    stimulus_mean: torch.Tensor  # buffers (register_buffer in __init__)
    stimulus_std: torch.Tensor
    response_mean: torch.Tensor
    response_std: torch.Tensor

    def __init__(self, module: EncoderModule) -> None:
        super().__init__()
        self.encoder = module.encoder
        for name in ("stimulus_mean", "stimulus_std", "response_mean", "response_std"):
            self.register_buffer(name, getattr(module, name).detach().clone())
        self.receptive_field = module.encoder.receptive_field
        self.n_freqs = module.hparams.n_freqs
        self.n_outputs = module.hparams.n_outputs
        # The dSTRF engine may run windows without causal padding when the encoder can; the raw value that
        # stands for the encoder's zero padding is then the training mean of each band.
        self.windowed = encoder_capabilities(self.encoder).causal_padding

    @property
    def padding_value(self) -> torch.Tensor:
        return self.stimulus_mean

    def window_output(self, windows: torch.Tensor) -> torch.Tensor:
        """Each window's last output ``(B, N)`` in the data's units (the encoder's cheap path when it has one)."""
        z = (windows - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]
        if encoder_capabilities(self.encoder).window_output:
            y = self.encoder.window_output(z)
        else:
            y = self.encoder(z, causal_padding=False)[:, :, -1]
        return y * self.response_std + self.response_mean

    def window_features(self, windows: torch.Tensor) -> torch.Tensor:
        """The encoder's hidden units at each window's last frame ``(B, H)``, from windows in the data's units
        (only where the encoder has a linear readout: see :attr:`readout_weight`)."""
        z = (windows - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]
        return self.encoder.window_features(z)

    @property
    def readout_weight(self) -> torch.Tensor | None:
        """The encoder's readout ``(N, H)`` scaled to the data's units (``response_std * U``); None when the
        encoder has no linear readout over hidden units."""
        weight = encoder_capabilities(self.encoder).linear_readout and self.encoder.readout_weight
        return self.response_std[:, None] * weight if isinstance(weight, torch.Tensor) else None

    def forward(self, x: torch.Tensor, causal_padding: bool = True) -> torch.Tensor:
        z = (x - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]
        y = self.encoder(z) if causal_padding else self.encoder(z, causal_padding=False)
        return y * self.response_std[:, None] + self.response_mean[:, None]


class EncoderModule(L.LightningModule):
    """Wraps an encoder ``(B, F, T) -> (B, N, T)`` built from its config; trains it with a masked loss.

    Parameters
    ----------
    encoder : mapping
        Hydra-style config of the encoder, ``{"_target_": "dstrf.models.DeepEncoder", "hidden": 128, ...}``,
        without ``n_freqs``/``n_outputs`` (given here). Stored as a plain dict so checkpoints load under
        torch's ``weights_only`` default.
    n_freqs, n_outputs : int
        Stimulus bands F and response channels N.
    loss : {"mse", "poisson"}
        Mean squared error, or Poisson negative log-likelihood ``rate - y log(rate)`` of a positive rate
        (encoders ending in a parametric softplus: LNSTRF, ConvNet2D, StateNet) against non-negative counts.
    optimizer : {"adamw", "radam"}
    lr, weight_decay : float
    scheduler : {None, "cosine", "plateau"}
        Cosine annealing over ``max_epochs``, or halving the rate when ``val/r`` stops improving.
    warmup : int, optional
        Frames at the start of each trial left out of the loss and metrics. Default: the receptive field
        minus one (the frames whose input window reaches before the trial start); 0 for recurrent models.
    channel_names : list of str, optional
        Names of the N output channels, kept for tables and figures.
    sfreq : float, optional
        Frame rate in Hz, kept with the model.
    log_channels : int
        Log the per-channel r (``val/r/<channel>``) when there are at most this many channels; beyond that
        only the mean ``val/r`` is logged (a dashboard of 1000 panels helps nobody), while ``metrics.json``
        always has every channel.
    """

    stimulus_mean: torch.Tensor  # buffers (register_buffer in __init__)
    stimulus_std: torch.Tensor
    response_mean: torch.Tensor
    response_std: torch.Tensor

    if TYPE_CHECKING:  # lightning types it AttributeDict | MutableMapping; save_hyperparameters made the former

        @property
        def hparams(self) -> AttributeDict: ...

    def __init__(
        self,
        encoder: Mapping[str, Any],
        n_freqs: int,
        n_outputs: int,
        loss: str = "mse",
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        scheduler: str | None = None,
        warmup: int | None = None,
        channel_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        log_channels: int = 64,
    ) -> None:
        super().__init__()
        if isinstance(encoder, DictConfig):
            encoder = cast(dict[str, Any], OmegaConf.to_container(encoder, resolve=True))  # a DictConfig: a dict
        if not isinstance(encoder, Mapping) or "_target_" not in encoder:
            raise TypeError(
                f"encoder must be a config mapping with a _target_ (e.g. dstrf.models.DeepEncoder); got {encoder!r}"
            )
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {scheduler!r}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be a positive learning rate; got {lr}")
        if not float(weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
        if warmup is not None and int(warmup) < 0:
            raise ValueError(f"warmup must be a number of frames >= 0 (or null: receptive field - 1); got {warmup}")
        channel_names = list(channel_names) if channel_names is not None else [f"ch{n}" for n in range(n_outputs)]
        if len(channel_names) != n_outputs:
            raise ValueError(f"channel_names has {len(channel_names)} names for {n_outputs} outputs")
        self.save_hyperparameters(
            {
                "encoder": dict(encoder),
                "n_freqs": int(n_freqs),
                "n_outputs": int(n_outputs),
                "loss": loss,
                "optimizer": optimizer,
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "scheduler": scheduler,
                "warmup": warmup,
                "channel_names": channel_names,
                "sfreq": None if sfreq is None else float(sfreq),
                "log_channels": int(log_channels),
            }
        )
        self.encoder = hydra.utils.instantiate(dict(encoder), n_freqs=int(n_freqs), n_outputs=int(n_outputs))
        if loss == "poisson" and not encoder_capabilities(self.encoder).positive_output:
            raise ValueError(
                f"loss='poisson' needs an encoder whose output is a positive rate; {type(self.encoder).__name__} "
                "outputs any real value. Use loss='mse', or LNSTRF, ConvNet2D or StateNet (softplus outputs)."
            )
        rf = self.receptive_field
        self.warmup = int(warmup) if warmup is not None else (rf - 1 if rf is not None else 0)
        # Standardization statistics of the training trials travel with the weights, so a checkpoint alone can
        # predict raw stimuli (see predict()). Filled from the DataModule in setup().
        self.register_buffer("stimulus_mean", torch.zeros(n_freqs))
        self.register_buffer("stimulus_std", torch.ones(n_freqs))
        self.register_buffer("response_mean", torch.zeros(n_outputs))
        self.register_buffer("response_std", torch.ones(n_outputs))
        self.val_r = PearsonR(n_outputs)
        self.test_r = PearsonR(n_outputs)
        self.channel_r: dict[str, torch.Tensor] = {}
        self.test_predictions: dict[int, torch.Tensor] = {}

    # -- model ---------------------------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int | None:
        return self.encoder.receptive_field

    def forward(self, stimulus: torch.Tensor) -> torch.Tensor:
        """Standardized stimulus ``(B, F, T)`` -> standardized response ``(B, N, T)``."""
        return self.encoder(stimulus)

    @torch.no_grad()
    def predict(self, stimulus: torch.Tensor) -> torch.Tensor:
        """Raw stimulus ``(F, T)`` (units of the data) -> predicted response ``(N, T)`` in the data's units.

        Applies the training standardization stored with the model; the first ``warmup`` frames see the
        causal padding and are less reliable.
        """
        stimulus = torch.as_tensor(stimulus, dtype=torch.float32, device=self.stimulus_mean.device)
        if stimulus.ndim != 2 or stimulus.shape[0] != self.hparams.n_freqs:
            raise ValueError(
                f"predict expects a stimulus ({self.hparams.n_freqs} freqs, frames); got shape {tuple(stimulus.shape)}"
            )
        was_training = self.training
        self.eval()
        try:
            x = (stimulus - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]
            y = self.encoder(x[None])[0]
        finally:
            self.train(was_training)
        return y * self.response_std[:, None] + self.response_mean[:, None]

    def data_units(self) -> DataUnitsEncoder:
        """The encoder as a map between the data's units (raw stimulus in, response out): see DataUnitsEncoder."""
        return DataUnitsEncoder(self)

    def setup(self, stage: str) -> None:
        if self.closed_form:
            # No optimiser and no training loss are what a closed-form fit means; Lightning's warnings about
            # them would only alarm the user.
            warnings.filterwarnings("ignore", message=r".*configure_optimizers. returned .None.")
            warnings.filterwarnings("ignore", message=r".*training_step. returned .None.")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        trials = datamodule.trials
        if trials.n_freqs != self.hparams.n_freqs:
            raise ValueError(
                f"the data have {trials.n_freqs} frequency bands but the model was built for {self.hparams.n_freqs}"
            )
        if trials.n_channels != self.hparams.n_outputs:
            raise ValueError(
                f"the data have {trials.n_channels} response channels but the model has {self.hparams.n_outputs} outputs"
            )
        trials.check_receptive_field(self.receptive_field)
        if stage == "fit":
            # Only a fit takes statistics from the data; validate/test on a loaded checkpoint keep the stored ones.
            s = datamodule.standardization
            for name in ("stimulus_mean", "stimulus_std", "response_mean", "response_std"):
                getattr(self, name).copy_(getattr(s, name))

    # -- steps ---------------------------------------------------------------------------------------------------
    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask[:, None, :].expand_as(pred).to(pred.dtype)
        if self.hparams.loss == "mse":
            elementwise = (pred - target) ** 2
        else:
            if bool((target[mask[:, None, :].expand_as(target)] < 0).any()):
                raise ValueError(
                    "loss='poisson' needs non-negative responses (counts or rates), but the training targets have "
                    "negative values; set data.standardize_response=false or use loss='mse'"
                )
            elementwise = F.poisson_nll_loss(pred, target, log_input=False, full=False, eps=1e-6, reduction="none")
        return (elementwise * w).sum() / w.sum().clamp_min(1)

    def _shared_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self(batch["stimulus"])
        mask = frame_mask(batch["lengths"], pred.shape[-1], self.warmup)
        if "pad" in batch:  # trials repeated only to even out DDP shards count nowhere
            mask = mask & ~batch["pad"][:, None]
        return pred, batch["response"], mask, self._loss(pred, batch["response"], mask)

    # -- closed-form encoders (RidgeSTRF) ---------------------------------------------------------------------
    # Fitted once on the training trials when the fit starts (before the sanity check, which would otherwise
    # score an unfitted model), then one epoch without optimisation, so the validation, checkpoints, test
    # and every file of the run are those of any other model.
    @property
    def closed_form(self) -> bool:
        return isinstance(self.encoder, ClosedFormEncoder)

    def _fit_closed_form(self) -> None:
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]  # lightning sets it at fit, undeclared
        trials, s = datamodule.trials, datamodule.standardization
        ids = datamodule.split.train
        self.encoder.fit(
            [s.stimulus(trials.stimuli[i]) for i in ids],
            [s.response(trials.responses[i]) for i in ids],
            warmup=self.warmup,
        )

    def on_train_epoch_end(self) -> None:
        if self.closed_form:
            self.trainer.should_stop = True  # the fit is done; one epoch validated and checkpointed it

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if self.closed_form:
            return None  # nothing to optimise: fitted in closed form at fit start
        _, _, _, loss = self._shared_step(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["lengths"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred, target, mask, loss = self._shared_step(batch)
        self.val_r.update(pred, target, mask)
        self.log("val/loss", loss, batch_size=len(batch["lengths"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        r = self.val_r.compute().reshape(-1)  # torchmetrics squeezes a single channel to 0-d
        self.val_r.reset()
        self.channel_r["val"] = r.cpu()
        # The mean over channels with a defined r: a constant (dead) channel, named by the metric's warning,
        # must not make every epoch NaN; val/r_nan counts them. All channels NaN (a diverged fit) stays NaN.
        self.log("val/r", torch.nanmean(r).float(), prog_bar=True)
        self.log("val/r_nan", (~torch.isfinite(r)).sum().float())
        self._log_channels("val", r)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pred, target, mask, loss = self._shared_step(batch)
        self.test_r.update(pred, target, mask)
        self.log("test/loss", loss, batch_size=len(batch["lengths"]), sync_dist=True)
        pads = batch["pad"].tolist() if "pad" in batch else [False] * len(batch["trial"])
        for row, (trial, length, pad) in enumerate(zip(batch["trial"].tolist(), batch["lengths"].tolist(), pads)):
            if not pad:
                self.test_predictions[trial] = pred[row, :, :length].detach().cpu()

    def predict_step(self, batch: dict, batch_idx: int) -> dict[int, torch.Tensor]:
        """``trainer.predict(module, datamodule=dm)``: per batch, ``{trial id: prediction (N, T_i)}`` for the
        test trials, in the model's (standardized) units, every frame (warm-up frames included)."""
        pred = self(batch["stimulus"])
        pads = batch["pad"].tolist() if "pad" in batch else [False] * len(batch["trial"])
        return {
            trial: pred[row, :, :length].detach().cpu()
            for row, (trial, length, pad) in enumerate(zip(batch["trial"].tolist(), batch["lengths"].tolist(), pads))
            if not pad
        }

    def on_test_epoch_start(self) -> None:
        self.test_predictions = {}

    def on_test_epoch_end(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank scored its shard of the test trials; rank 0 writes them all
            shards: list[Any] = [None] * torch.distributed.get_world_size()  # filled with every rank's dict
            torch.distributed.all_gather_object(shards, self.test_predictions)
            self.test_predictions = {k: v for shard in shards for k, v in shard.items()}
        r = self.test_r.compute().reshape(-1)
        self.test_r.reset()
        self.channel_r["test"] = r.cpu()
        self.log("test/r", torch.nanmean(r).float())
        self.log("test/r_nan", (~torch.isfinite(r)).sum().float())
        self._log_channels("test", r)

    def _log_channels(self, stage: str, r: torch.Tensor) -> None:
        if len(r) <= self.hparams.log_channels:
            self.log_dict({f"{stage}/r/{name}": value.float() for name, value in zip(self.hparams.channel_names, r)})

    def trial_scores(self, responses: Mapping[int, torch.Tensor]) -> dict[int, list[float]]:
        """Per test trial, Pearson r per channel of the stored test predictions against ``responses[trial]``
        ``(N, T)`` (standardized like the predictions), over frames past the warm-up."""
        scores = {}
        for trial, pred in sorted(self.test_predictions.items()):
            mask = torch.arange(pred.shape[-1]) >= self.warmup
            scores[trial] = pearson_r(pred, responses[trial], mask).tolist()
        return scores

    # -- resuming ------------------------------------------------------------------------------------------------
    # The random state travels with every checkpoint and is restored when training resumes (not when a
    # checkpoint is only loaded), so a resumed job draws the same batch order as one never interrupted. It is
    # restored at fit start: a resumed fit creates its first training iterator before on_train_start.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        np_state = cast(tuple[Any, ...], np.random.get_state())  # the legacy tuple: the global generator is MT19937
        checkpoint["dstrf_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("dstrf_rng")

    def on_fit_start(self) -> None:
        if self.closed_form and not self.encoder.fitted:
            self._fit_closed_form()
        state = getattr(self, "_rng_to_restore", None)
        if state is not None:
            torch.set_rng_state(state["torch"])
            name, keys, *rest = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
            random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
            self._rng_to_restore = None

    # -- optimisation --------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.closed_form:
            return None  # fitted in closed form: no optimiser
        cls = torch.optim.AdamW if self.hparams.optimizer == "adamw" else torch.optim.RAdam
        kwargs = {"decoupled_weight_decay": True} if self.hparams.optimizer == "radam" else {}
        optimizer = cls(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, **kwargs)
        if self.hparams.scheduler is None:
            return optimizer
        if self.hparams.scheduler == "cosine":
            max_epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/r", "interval": "epoch"},
        }
