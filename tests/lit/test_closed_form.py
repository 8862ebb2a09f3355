"""A closed-form encoder (RidgeSTRF) inside the Lightning run: fitted once on the training trials only, one
epoch without optimisation, checkpoints that load like any model's."""

import lightning as L
import numpy as np
import torch

from dstrf.data import Split, Trials
from dstrf.lit import EncoderModule, TrialDataModule
from dstrf.models import RidgeSTRF

RIDGE = {"_target_": "dstrf.models.RidgeSTRF", "lags": 6, "cv": "loo"}


def _fit(trials, tmp_path, max_epochs=20):
    dm = TrialDataModule(trials, Split(train=(0, 1, 2), val=(3,), test=(4,)), batch_size=2)
    module = EncoderModule(RIDGE, trials.n_freqs, trials.n_channels)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return module, trainer, dm


def test_fitted_once_on_the_training_trials_only(small_trials, tmp_path):
    module, trainer, dm = _fit(small_trials, tmp_path / "a")
    assert trainer.current_epoch == 1 and module.encoder.fitted  # one epoch, however many were allowed
    s = dm.standardization
    ids = dm.split.train
    expected = RidgeSTRF(8, 2, lags=6, cv="loo").fit(
        [s.stimulus(small_trials.stimuli[i]) for i in ids],
        [s.response(small_trials.responses[i]) for i in ids],
        warmup=module.warmup,
    )
    torch.testing.assert_close(module.encoder.strf, expected.strf)
    torch.testing.assert_close(module.encoder.alpha, expected.alpha)
    # other validation and test responses change nothing in the fit: they never choose alpha
    responses = [r.clone() for r in small_trials.responses]
    responses[3] = torch.randn_like(responses[3])
    responses[4] = -responses[4]
    other = Trials(small_trials.stimuli, responses, sfreq=small_trials.sfreq, channel_names=small_trials.channel_names)
    module_b, _, _ = _fit(other, tmp_path / "b")
    torch.testing.assert_close(module_b.encoder.strf, module.encoder.strf)
    torch.testing.assert_close(module_b.encoder.alpha, module.encoder.alpha)


def test_its_checkpoint_loads_and_predicts_like_the_fitted_model(small_trials, tmp_path):
    module, trainer, _ = _fit(small_trials, tmp_path)
    path = tmp_path / "ridge.ckpt"
    trainer.save_checkpoint(path)
    loaded = EncoderModule.load_from_checkpoint(path, map_location="cpu")
    assert loaded.encoder.fitted and torch.equal(loaded.encoder.alpha, module.encoder.alpha)
    x = small_trials.stimuli[4]
    np.testing.assert_allclose(loaded.predict(x).numpy(), module.predict(x).numpy(), rtol=1e-6, atol=1e-6)
    assert loaded.configure_optimizers() is None
