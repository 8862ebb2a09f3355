"""DivergenceGuard: fail a fit whose loss, parameters or predictions become non-finite, instead of letting it
finish with a "best" checkpoint full of NaN.

Without it a diverged fit exits normally: its val/r is NaN (dstrf.metrics never turns NaN into 0), which
EarlyStopping takes as a reason to stop and ModelCheckpoint never takes as an improvement -- but when the
first validated epoch is already NaN, ModelCheckpoint keeps it as the best (scored -inf) for lack of any
other, and the job is then tested and marked done. The guard raises :class:`DivergenceError` at the first
non-finite quantity, so the job fails (no done.json), with a message that says where and what to change.

Checks, in the order a fit meets them:

- ``on_train_batch_end``: the training loss returned by ``training_step`` (one ``isfinite`` on a scalar; on
  an accelerator, where reading it back costs a device sync, every ``check_every_n_steps``-th batch);
- ``on_validation_end``: ``val/loss`` in ``trainer.callback_metrics`` (non-finite predictions give a
  non-finite loss); Lightning runs checkpoint callbacks last, so a NaN epoch is refused before it is saved;
- ``on_train_epoch_end``: every parameter (one device sync per epoch), naming the first non-finite one.

Under DDP each decision is reduced over the processes (any rank diverged -> every rank raises at the same
point), so no rank is left waiting in a collective for one that has stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

__all__ = ["DivergenceError", "DivergenceGuard"]


class DivergenceError(RuntimeError):
    """The fit diverged: its training loss, a parameter or its validation predictions are not finite."""


def _fmt_number(value: float) -> str:
    """``1e8``, ``0.001``, ``3e-5``: as one would write it in a Hydra override."""
    text = f"{value:g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _scalar_loss(outputs: Any) -> torch.Tensor | None:
    """The loss ``training_step`` returned (a tensor, or a mapping with ``"loss"``), or None (step skipped)."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return outputs if isinstance(outputs, torch.Tensor) else None


class DivergenceGuard(L.Callback):
    """Raise :class:`DivergenceError` as soon as the training loss, a parameter or ``val/loss`` is not finite.

    Parameters
    ----------
    check_every_n_steps : int
        On an accelerator, check the training loss every this many batches (1: every batch; each check waits
        for the device). On the CPU every batch is checked (no sync to save). A divergence between checks is
        caught at the next one (a NaN in the parameters keeps the loss NaN) or by the checks after the epoch.
    monitor : str
        The logged validation loss to check after each validation run.
    """

    def __init__(self, check_every_n_steps: int = 1, monitor: str = "val/loss") -> None:
        if isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise ValueError(
                f"check_every_n_steps must be a positive integer (1 checks every batch); got {check_every_n_steps!r}"
            )
        self.check_every_n_steps = check_every_n_steps
        self.monitor = monitor

    # -- checks --------------------------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _scalar_loss(outputs)
        if loss is None:
            return
        if loss.device.type != "cpu" and batch_idx % self.check_every_n_steps:
            return
        finite = bool(torch.isfinite(loss.detach()).all())
        if self._anywhere(trainer, not finite):
            what = (
                f"training loss is {_fmt_value(loss)}"
                if not finite
                else "training loss is not finite on another process"
            )
            every = (
                f"; checked every {self.check_every_n_steps} batches"
                if loss.device.type != "cpu" and self.check_every_n_steps > 1
                else ""
            )
            raise DivergenceError(
                self._message(trainer, pl_module, f"at epoch {trainer.current_epoch} (batch {batch_idx}{every})", what)
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = torch.as_tensor(value)
        finite = bool(torch.isfinite(value).all())
        if self._anywhere(trainer, not finite):
            what = (
                f"validation loss ({self.monitor}) is {_fmt_value(value)}"
                if not finite
                else f"validation loss ({self.monitor}) is not finite on another process"
            )
            what += ": the predictions of the validation trials are not finite"
            if trainer.sanity_checking:  # nothing was trained yet: no learning rate to blame
                raise DivergenceError(
                    f"the model's predictions are not finite in the sanity check before training: "
                    f"{what}. Check the model's initial parameters and that the data are finite"
                )
            where = (
                f"at epoch {trainer.current_epoch}"
                if trainer.state.fn == "fit"
                else "(found when validating the fitted model)"
            )  # trainer.validate() of a checkpoint
            raise DivergenceError(self._message(trainer, pl_module, where, what))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = [(name, p) for name, p in pl_module.named_parameters()]
        if not params:
            return
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])
        local_ok = bool(finite.all())  # the one sync of this check
        if not self._anywhere(trainer, not local_ok):
            return
        if local_ok:
            what = "parameters are not finite on another process"
        else:
            first = int(torch.nonzero(~finite)[0])
            name, p = params[first]
            n_bad = int((~torch.isfinite(p.detach())).sum())
            total_bad = sum(int((~torch.isfinite(q.detach())).sum()) for _, q in params)
            total = sum(q.numel() for _, q in params)
            what = (
                f"parameter {name} has {n_bad} non-finite entries (of {p.numel()}); {total_bad} of the "
                f"model's {total} parameter entries are non-finite"
            )
        raise DivergenceError(self._message(trainer, pl_module, f"at epoch {trainer.current_epoch}", what))

    # -- helpers -------------------------------------------------------------------------------------------------
    @staticmethod
    def _anywhere(trainer: L.Trainer, bad: bool) -> bool:
        """Whether ``bad`` holds on any process (the strategy reduces it under DDP; as is on one device)."""
        strategy = getattr(trainer, "strategy", None)
        if strategy is None or getattr(trainer, "world_size", 1) <= 1:
            return bad
        return bool(strategy.reduce_boolean_decision(bad, all=False))

    @staticmethod
    def _message(trainer: L.Trainer, pl_module: L.LightningModule, where: str, what: str) -> str:
        """``the fit diverged <where>: <what>. <what to try>``, with the current values of the settings named."""
        hparams = getattr(pl_module, "hparams", {}) or {}
        lr = hparams.get("lr") if isinstance(hparams, Mapping) else None
        lower = f"module.lr={_fmt_number(float(lr))} now" if isinstance(lr, (int, float)) else "module.lr"
        datamodule = getattr(trainer, "datamodule", None)
        standardize = "data.standardize=true"
        if getattr(datamodule, "standardize", True) is False:
            standardize += "; it is false now"
        clip = getattr(trainer, "gradient_clip_val", None)
        clipping = (
            "clip gradients (trainer.gradient_clip_val=1.0)"
            if not clip
            else f"clip gradients harder (trainer.gradient_clip_val={_fmt_number(float(clip))} now)"
        )
        return (
            f"the fit diverged {where}: {what}. Lower the learning rate ({lower}), check that the data are "
            f"standardized ({standardize}) and finite, or {clipping}"
        )


def _fmt_value(value: torch.Tensor) -> str:
    """``nan``, ``inf`` or ``-inf`` of a scalar (the first non-finite entry of a larger tensor)."""
    value = value.detach().float().reshape(-1)
    bad = value[~torch.isfinite(value)]
    return str(float(bad[0] if bad.numel() else value[0]))
