"""Models fitted with real Lightning training recover the synthetic ground truth."""

import lightning as L
import numpy as np
import pytest
import torch

from dstrf.data import Split
from dstrf.data.synthetic import make_synthetic
from dstrf.lit import EncoderModule, TrialDataModule
from dstrf.metrics import cc_norm


def fit(data, encoder, epochs, tmp_path, **module_kwargs):
    n = len(data.trials)
    dm = TrialDataModule(data.trials, Split(range(n - 2), [n - 2], [n - 1]), batch_size=2)
    module = EncoderModule(encoder, data.trials.n_freqs, data.trials.n_channels, **module_kwargs)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return module, dm


@pytest.mark.slow
def test_linear_strf_recovers_the_true_strf_and_reaches_the_noise_ceiling(tmp_path):
    # Speech-like stimuli are strongly correlated across bands and lags, so an STRF is identifiable only with
    # enough data and some shrinkage (here 16 trials and AdamW's weight decay), exactly as with ridge.
    data = make_synthetic(n_trials=16, n_frames=2000, n_freqs=16, neurons=["linear"], snr=4.0, seed=1)
    module, dm = fit(data, {"_target_": "dstrf.models.LinearSTRF", "lags": 40}, 60, tmp_path, lr=1e-2, weight_decay=1.0)
    # the kernel acts on standardized bands: divide by the band std to get it in the stimulus' units
    estimated = module.encoder.strf.detach()[0] / dm.standardization.stimulus_std[:, None]
    true = torch.as_tensor(data.filters["linear"])
    assert np.corrcoef(estimated.flatten(), true.flatten())[0, 1] >= 0.9
    # held-out prediction is at the noise ceiling: the correlation with the truth is what noise allows
    test = dm.split.test[0]
    r_test = float(module.channel_r["test"][0])
    ceiling = float(np.corrcoef(data.noiseless[test][0, 39:], data.trials[test].response[0, 39:])[0, 1])
    assert r_test >= 0.95 * ceiling
    normalised = cc_norm(
        module.test_predictions[test][:, 39:], dm.standardization.response(data.trials.repeats[test])[..., 39:]
    )
    assert float(normalised[0]) > 0.95


@pytest.mark.slow
def test_deep_encoder_beats_linear_strf_on_a_nonlinear_neuron(tmp_path):
    data = make_synthetic(n_trials=10, n_frames=1500, n_freqs=16, neurons=["ln", "temporal_hold"], snr=4.0, seed=0)
    linear, _ = fit(data, {"_target_": "dstrf.models.LinearSTRF", "lags": 65}, 40, tmp_path, lr=1e-2, weight_decay=1.0)
    deep, _ = fit(data, {"_target_": "dstrf.models.DeepEncoder", "hidden": 32}, 30, tmp_path, lr=3e-3)
    r_linear, r_deep = linear.channel_r["test"], deep.channel_r["test"]
    assert (r_deep > r_linear + 0.03).all(), (r_deep, r_linear)
