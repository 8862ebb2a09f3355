"""DivergenceGuard fails a diverging fit loudly; a NaN val/r is never a best checkpoint (issue 10, item 1)."""

import math
import re
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from dstrf.data import holdout
from dstrf.data.synthetic import synthetic_trials
from dstrf.lit import EncoderModule, TrialDataModule
from dstrf.lit.divergence import DivergenceError, DivergenceGuard
from dstrf.metrics import PearsonR, UndefinedCorrelationWarning

LINEAR = {"_target_": "dstrf.models.LinearSTRF", "lags": 10}
HINT = (
    "Lower the learning rate (module.lr={lr} now), check that the data are standardized (data.standardize=true) "
    "and finite, or clip gradients (trainer.gradient_clip_val=1.0)"
)


@pytest.fixture(scope="module")
def trials():
    return synthetic_trials(n_trials=5, n_frames=400, n_freqs=16)


def _fit(trials, tmp_path, lr, callbacks=(), epochs=3, **trainer_kwargs):
    dm = TrialDataModule(trials, holdout(len(trials)), batch_size=2)
    module = EncoderModule(LINEAR, trials.n_freqs, trials.n_channels, lr=lr)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/r", mode="max")
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[DivergenceGuard(), *callbacks, checkpoint],
        **trainer_kwargs,
    )
    return trainer, module, dm, checkpoint


def test_a_diverging_fit_fails_naming_the_epoch_the_batch_the_loss_and_what_to_change(trials, tmp_path):
    trainer, module, dm, _ = _fit(trials, tmp_path, lr=1e8)
    with pytest.raises(DivergenceError) as caught:
        trainer.fit(module, datamodule=dm)
    message = str(caught.value)
    assert re.fullmatch(
        r"the fit diverged at epoch \d+ \(batch \d+\): training loss is (nan|inf|-inf)\. "
        + re.escape(HINT.format(lr="1e8")),
        message,
    ), message
    epoch = int(re.search(r"epoch (\d+)", message).group(1))
    assert epoch == trainer.current_epoch  # the epoch it stopped in, not a later one


def test_a_sane_fit_is_not_stopped(trials, tmp_path):
    trainer, module, dm, checkpoint = _fit(trials, tmp_path, lr=1e-2, epochs=2)
    trainer.fit(module, datamodule=dm)
    assert trainer.current_epoch == 2 and math.isfinite(float(trainer.callback_metrics["val/r"]))
    assert checkpoint.best_model_path and math.isfinite(float(checkpoint.best_model_score))


class _Poison(L.Callback):
    """Writes NaN into 3 entries of encoder.weight after the last training batch of ``epoch`` (after the
    guard's loss check: the loss of that batch was finite)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                pl_module.encoder.weight.view(-1)[:3] = float("nan")


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # no validation here, so no val/r
def test_non_finite_parameters_after_an_epoch_are_named(trials, tmp_path):
    trainer, module, dm, _ = _fit(trials, tmp_path, lr=1e-3, callbacks=[_Poison(epoch=1)], limit_val_batches=0)
    with pytest.raises(DivergenceError) as caught:
        trainer.fit(module, datamodule=dm)
    n = module.encoder.weight.numel() + module.encoder.bias.numel()
    assert str(caught.value) == (
        f"the fit diverged at epoch 1: parameter encoder.weight has 3 non-finite entries (of "
        f"{module.encoder.weight.numel()}); 3 of the model's {n} parameter entries are "
        f"non-finite. {HINT.format(lr='0.001')}"
    )


def test_non_finite_validation_predictions_stop_the_fit_before_the_epoch_is_checkpointed(trials, tmp_path):
    trainer, module, dm, checkpoint = _fit(trials, tmp_path, lr=1e-3, callbacks=[_Poison(epoch=1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedCorrelationWarning)  # val/r of the NaN predictions
        with pytest.raises(DivergenceError) as caught:
            trainer.fit(module, datamodule=dm)
    assert str(caught.value) == (
        "the fit diverged at epoch 1: validation loss (val/loss) is nan: the predictions of "
        f"the validation trials are not finite. {HINT.format(lr='0.001')}"
    )
    assert "epoch=0" in checkpoint.best_model_path  # epoch 1 never became a checkpoint
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt"]


def test_a_model_that_is_not_finite_before_training_or_when_validated_is_refused(trials, tmp_path):
    for stage in ("fit", "validate"):
        trainer, module, dm, _ = _fit(trials, tmp_path / stage, lr=1e-3)
        with torch.no_grad():
            module.encoder.bias[2] = float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedCorrelationWarning)
            with pytest.raises(DivergenceError) as caught:
                getattr(trainer, stage)(module, datamodule=dm)
        what = "validation loss (val/loss) is nan: the predictions of the validation trials are not finite"
        assert str(caught.value) == (
            f"the model's predictions are not finite in the sanity check before training: {what}. Check the "
            "model's initial parameters and that the data are finite"
            if stage == "fit"
            else f"the fit diverged (found when validating the fitted model): {what}. {HINT.format(lr='0.001')}"
        )


def test_the_hint_gives_the_current_settings_and_the_decision_is_shared_by_all_processes():
    guard = DivergenceGuard()
    decisions = []

    def reduce_boolean_decision(decision, all=True):  # another rank diverged: this one must stop too
        decisions.append((decision, all))
        return True

    trainer = SimpleNamespace(
        world_size=2,
        strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision),
        current_epoch=4,
        datamodule=SimpleNamespace(standardize=False),
        gradient_clip_val=5.0,
    )
    module = SimpleNamespace(hparams={"lr": 3e-5})
    with pytest.raises(DivergenceError) as caught:
        guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(0.5)}, None, 7)
    assert decisions == [(False, False)]  # "any", not "all"
    assert str(caught.value) == (
        "the fit diverged at epoch 4 (batch 7): training loss is not finite on another process. Lower the learning "
        "rate (module.lr=3e-5 now), check that the data are standardized (data.standardize=true; it is false now) "
        "and finite, or clip gradients harder (trainer.gradient_clip_val=5 now)"
    )
    guard.on_train_batch_end(trainer, module, None, None, 8)  # a skipped step returns no loss: nothing to check
    with pytest.raises(ValueError, match=r"check_every_n_steps must be a positive integer .*got 0"):
        DivergenceGuard(check_every_n_steps=0)


# ------------------------------------------------------------ what Lightning's callbacks make of a NaN val/r


class _Scripted(L.LightningModule):
    """Its val/r is PearsonR of a scripted prediction per epoch: ``"up"`` (r = +0.6), ``"down"`` (r = -0.6) or
    ``"flat"`` (a constant prediction: r is NaN, as for a dead or diverged model)."""

    def __init__(self, script):
        super().__init__()
        self.script = script
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.val_r = PearsonR(1)
        g = torch.Generator().manual_seed(0)
        self.target = torch.randn(1, 1, 200, generator=g)
        self.noise = torch.randn(1, 1, 200, generator=g)

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        kind = self.script[self.current_epoch] if not self.trainer.sanity_checking else "up"
        pred = {
            "up": self.target + self.noise,
            "down": -self.target - self.noise,
            "flat": torch.zeros_like(self.target),
        }[kind]
        self.val_r.update(pred, self.target)

    def on_validation_epoch_end(self):
        self.log("val/r", self.val_r.compute().float())
        self.val_r.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return [torch.zeros(1)]

    def val_dataloader(self):
        return [torch.zeros(1)]


def _scripted_fit(tmp_path, script, *callbacks):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/r", mode="max", filename="{epoch}")
    trainer = L.Trainer(
        max_epochs=len(script),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[*callbacks, checkpoint],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedCorrelationWarning)
        trainer.fit(_Scripted(script))
    return trainer, checkpoint


def test_a_nan_val_r_never_beats_a_finite_one_even_a_negative_one(tmp_path):
    """With the old NaN -> 0, epoch 1 (r = 0 then) beat epoch 0 (r = -0.6) and became the best checkpoint."""
    _, checkpoint = _scripted_fit(tmp_path / "a", ["down", "flat", "flat"])
    assert checkpoint.best_model_path.endswith("epoch=0.ckpt")
    assert float(checkpoint.best_model_score) == pytest.approx(-0.6, abs=0.1)
    _, checkpoint = _scripted_fit(tmp_path / "b", ["flat", "down", "flat", "up", "flat"])
    assert checkpoint.best_model_path.endswith("epoch=3.ckpt")


def test_a_nan_first_epoch_is_kept_as_best_for_lack_of_another_which_is_why_the_guard_is_needed(tmp_path):
    """What Lightning does, pinned: the first NaN epoch is saved with score -inf and stays "best" until a finite
    one replaces it, so an all-NaN fit has a best checkpoint; EarlyStopping(check_finite=True) stops at the first
    NaN without failing. Neither makes the job fail: DivergenceGuard does."""
    trainer, checkpoint = _scripted_fit(tmp_path / "a", ["flat", "flat", "flat"])
    assert checkpoint.best_model_path.endswith("epoch=0.ckpt") and float(checkpoint.best_model_score) == -math.inf
    assert trainer.current_epoch == 3  # ran to the end: nothing stopped it
    stopper = EarlyStopping(monitor="val/r", mode="max", patience=5, check_finite=True)
    trainer, _ = _scripted_fit(tmp_path / "b", ["up", "down", "flat", "up", "up"], stopper)
    assert stopper.stopped_epoch == 2 and trainer.current_epoch == 3  # stopped after the NaN epoch, quietly
