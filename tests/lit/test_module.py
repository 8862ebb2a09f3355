import lightning as L
import numpy as np
import pytest
import torch

from dstrf.data import Split
from dstrf.lit import EncoderModule, TrialDataModule, frame_mask
from dstrf.metrics import pearson_r

LINEAR = {"_target_": "dstrf.models.LinearSTRF", "lags": 6}


def fit(module, dm, tmp_path, epochs=3, **trainer_kwargs):
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def test_frame_mask_excludes_warmup_and_padding():
    mask = frame_mask(torch.tensor([5, 3]), 6, warmup=2)
    assert mask.tolist() == [[False, False, True, True, True, False], [False, False, True, False, False, False]]


def test_warmup_defaults_to_receptive_field_minus_one():
    assert EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 4}, 8, 2).warmup == 64
    assert EncoderModule({"_target_": "dstrf.models.StateNet"}, 8, 2).warmup == 0
    assert EncoderModule(LINEAR, 8, 2, warmup=10).warmup == 10


def test_loss_ignores_padding_and_warmup_frames():
    module = EncoderModule(LINEAR, 8, 2)
    pred, target = torch.randn(2, 2, 20), torch.randn(2, 2, 20)
    mask = frame_mask(torch.tensor([20, 12]), 20, module.warmup)
    loss = module._loss(pred, target, mask)
    garbage = target.clone()
    garbage[1, :, 12:] = 1e6  # padding
    garbage[:, :, :5] = -1e6  # warm-up frames
    assert torch.equal(module._loss(pred, garbage, mask), loss)
    valid = torch.cat([(pred[0, :, 5:] - target[0, :, 5:]) ** 2, (pred[1, :, 5:12] - target[1, :, 5:12]) ** 2], dim=-1)
    torch.testing.assert_close(loss, valid.mean())


def test_bad_settings_are_refused():
    with pytest.raises(
        ValueError, match="loss='poisson' needs an encoder whose output is a positive rate; DeepEncoder"
    ):
        EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 4}, 8, 2, loss="poisson")
    with pytest.raises(ValueError, match="loss must be one of"):
        EncoderModule(LINEAR, 8, 2, loss="l1")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        EncoderModule(LINEAR, 8, 2, optimizer="sgd")
    with pytest.raises(TypeError, match="_target_"):
        EncoderModule({"lags": 3}, 8, 2)


def test_poisson_loss_refuses_standardized_negative_targets(small_trials, tmp_path):
    dm = TrialDataModule(small_trials, Split([0, 1, 2], [3], [4]))
    module = EncoderModule({"_target_": "dstrf.models.LNSTRF", "lags": 6}, 8, 2, loss="poisson")
    with pytest.raises(ValueError, match="standardize_response=false"):
        fit(module, dm, tmp_path, epochs=1)


def test_model_and_data_must_agree(small_trials, tmp_path):
    dm = TrialDataModule(small_trials, Split([0, 1, 2], [3], [4]))
    with pytest.raises(ValueError, match="the data have 8 frequency bands but the model was built for 6"):
        fit(EncoderModule(LINEAR, 6, 2), dm, tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"trial \d .* fewer than the model's receptive field of 200"):
        fit(EncoderModule({"_target_": "dstrf.models.LinearSTRF", "lags": 200}, 8, 2), dm, tmp_path, epochs=1)


@pytest.mark.parametrize("optimizer, scheduler", [("adamw", None), ("radam", "cosine"), ("adamw", "plateau")])
def test_training_fits_a_linear_system_with_each_optimizer_and_schedule(small_trials, tmp_path, optimizer, scheduler):
    dm = TrialDataModule(small_trials, Split([0, 1, 2], [3], [4]), batch_size=2)
    module = EncoderModule(LINEAR, 8, 2, lr=0.05, optimizer=optimizer, scheduler=scheduler)
    trainer = fit(module, dm, tmp_path, epochs=15)
    assert trainer.callback_metrics["val/r"] > 0.9  # a linear model of a linear system
    assert module.channel_r["val"].shape == (2,)


def test_checkpoint_loads_under_weights_only_and_predicts_the_same(small_trials, tmp_path):
    dm = TrialDataModule(small_trials, Split([0, 1, 2], [3], [4]), batch_size=2)
    module = EncoderModule(LINEAR, 8, 2, lr=0.05, channel_names=["a", "b"], sfreq=100.0)
    trainer = fit(module, dm, tmp_path, epochs=4)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain containers only: no pickled classes
    loaded = EncoderModule.load_from_checkpoint(path)
    assert loaded.hparams.channel_names == ["a", "b"]
    # the standardization of the training trials travels with the weights
    torch.testing.assert_close(loaded.stimulus_mean, dm.standardization.stimulus_mean)
    stimulus = small_trials[4].stimulus
    torch.testing.assert_close(loaded.predict(stimulus), module.predict(stimulus))
    # predict() = standardize, encode, undo the response standardization
    s = dm.standardization
    manual = module.encoder(s.stimulus(stimulus)[None])[0] * s.response_std[:, None] + s.response_mean[:, None]
    torch.testing.assert_close(module.predict(stimulus), manual.detach())
    # in the data's units the prediction tracks the raw response
    r = pearson_r(module.predict(stimulus), small_trials[4].response, torch.arange(stimulus.shape[1]) >= 5)
    assert (r > 0.9).all()


def test_test_predictions_and_trial_scores(small_trials, tmp_path):
    dm = TrialDataModule(small_trials, Split([0, 1], [2], [3, 4]), batch_size=2)
    module = EncoderModule(LINEAR, 8, 2, lr=0.05)
    trainer = fit(module, dm, tmp_path, epochs=3)
    trainer.test(module, datamodule=dm, verbose=False)
    assert sorted(module.test_predictions) == [3, 4]
    assert module.test_predictions[3].shape == (2, 90)
    responses = {i: dm.standardization.response(small_trials[i].response) for i in (3, 4)}
    scores = module.trial_scores(responses)
    expected = pearson_r(module.test_predictions[4], responses[4], torch.arange(110) >= module.warmup)
    np.testing.assert_allclose(scores[4], expected.numpy())


def test_trainer_predict_gives_the_test_trials_predictions(small_trials, tmp_path):
    dm = TrialDataModule(small_trials, Split([0, 1], [2], [3, 4]), batch_size=1)
    module = EncoderModule(LINEAR, 8, 2, lr=0.05)
    trainer = fit(module, dm, tmp_path, epochs=2)
    batches = trainer.predict(module, datamodule=dm)
    predictions = {trial: pred for batch in batches for trial, pred in batch.items()}
    assert sorted(predictions) == [3, 4] and predictions[3].shape == (2, 90) and predictions[4].shape == (2, 110)
    with torch.no_grad():
        expected = module(dm.standardization.stimulus(small_trials[4].stimulus)[None])[0]
    torch.testing.assert_close(predictions[4], expected)


def test_a_single_channel_gives_per_channel_arrays(small_trials, tmp_path):
    one = small_trials.subset(range(5))
    one = type(one)([t.stimulus for t in one], [t.response[:1] for t in one], sfreq=100.0)
    dm = TrialDataModule(one, Split([0, 1, 2], [3], [4]), batch_size=2)
    module = EncoderModule(LINEAR, 8, 1, lr=0.05)
    trainer = fit(module, dm, tmp_path, epochs=2)
    trainer.test(module, datamodule=dm, verbose=False)
    assert module.channel_r["val"].shape == (1,) and module.channel_r["test"].shape == (1,)
