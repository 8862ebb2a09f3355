"""Every config of every group composes and instantiates."""

from pathlib import Path

import hydra.utils
import lightning as L
import pytest
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from dstrf.config import CONFIG_DIR, compose
from dstrf.lit import EncoderModule, TrialDataModule

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_config_groups_exist():
    for group in ("data", "model", "split", "trainer", "logger", "callbacks", "paths", "hydra", "experiment"):
        assert options(group), f"conf/{group}/ is empty"
    assert options("model") == ["convnet2d", "deep_encoder", "linear_strf", "ln_strf", "ridge_strf", "statenet"]


def small(overrides):
    return compose(["data.trials.n_trials=4", "data.trials.n_frames=200", "data.trials.n_freqs=16", *overrides])


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_builds_a_module(model):
    cfg = small([f"model={model}"])
    dm: TrialDataModule = hydra.utils.instantiate(cfg.data, split=hydra.utils.instantiate(cfg.split))
    module = EncoderModule(
        OmegaConf.to_container(cfg.model, resolve=True), dm.n_freqs, dm.n_channels, **OmegaConf.to_container(cfg.module)
    )
    batch = next(iter(dm.train_dataloader()))
    assert module(batch["stimulus"]).shape == batch["response"].shape


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_instantiates(trainer, tmp_path):
    if trainer == "gpu":
        pytest.skip("needs a GPU")  # composes below all the same
    cfg = small([f"trainer={trainer}", f"paths.output_dir={tmp_path}", "trainer.accelerator=cpu"])
    assert isinstance(hydra.utils.instantiate(cfg.trainer, logger=False), L.Trainer)


@pytest.mark.gpu
def test_gpu_trainer_config_instantiates_on_a_gpu(tmp_path):
    cfg = small(["trainer=gpu", f"paths.output_dir={tmp_path}"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert type(trainer.accelerator).__name__ == "CUDAAccelerator"


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_config_instantiates(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose([f"logger={logger}", f"paths.output_dir={tmp_path}"])
    instances = [hydra.utils.instantiate(entry) for entry in cfg.logger.values()]  # one entry per logger
    assert len(instances) == {"none": 0, "many": 2}.get(logger, 1)
    assert all(isinstance(i, Logger) for i in instances)


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_config_instantiates(callbacks, tmp_path):
    cfg = compose([f"callbacks={callbacks}", f"paths.output_dir={tmp_path}"])
    built = [hydra.utils.instantiate(c) for c in (cfg.callbacks or {}).values()]
    assert all(isinstance(c, L.Callback) for c in built)


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_composes(data, tmp_path):
    overrides = [f"data={data}"]
    if data == "file":
        from dstrf.data import save_trials
        from dstrf.data.synthetic import synthetic_trials

        path = save_trials(synthetic_trials(n_trials=3, n_frames=100, n_freqs=8), tmp_path / "t.h5")
        overrides.append(f"data.trials.path={path}")
    elif data == "audio":
        import numpy as np

        soundfile = pytest.importorskip("soundfile")
        rows = ["audio,response"]
        for i in range(3):
            soundfile.write(tmp_path / f"s{i}.wav", np.random.default_rng(i).standard_normal(8000) / 4, 8000)
            np.save(tmp_path / f"r{i}.npy", np.zeros((2, 100), dtype=np.float32) + i)
            rows.append(f"s{i}.wav,r{i}.npy")
        (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
        overrides += [f"data.trials.path={tmp_path / 'manifest.csv'}", "data.trials.n_bands=16"]
    elif data == "naplib_demo":
        from dstrf.data.formats import naplib_demo_path

        try:
            naplib_demo_path()
        except ModuleNotFoundError:
            pytest.skip("naplib is not installed (pip install --no-deps naplib)")
    cfg = compose(overrides)
    dm = hydra.utils.instantiate(cfg.data, split=hydra.utils.instantiate(cfg.split))
    assert isinstance(dm, TrialDataModule) and len(dm.trials) >= 3


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_changes_the_defaults(experiment):
    default = OmegaConf.to_container(compose([]), resolve=False)
    cfg = OmegaConf.to_container(compose([f"experiment={experiment}"]), resolve=False)
    changed = sorted(k for k in set(default) | set(cfg) if default.get(k) != cfg.get(k))
    assert changed, f"experiment={experiment} changes nothing"
    assert cfg["trainer"]["max_epochs"] > 0


def test_default_config_is_the_deep_encoder_on_synthetic_data():
    cfg = compose([])
    assert cfg.model._target_ == "dstrf.models.DeepEncoder"
    assert cfg.data.trials._target_ == "dstrf.data.synthetic.synthetic_trials"
    assert list(cfg.logger) == ["csv"] and cfg.logger.csv._target_.endswith("CSVLogger")


def test_sweep_directory_names_identify_the_command():
    from dstrf.config import sweep_name

    a = sweep_name(["+sweep=cv_jackknife", "model=linear_strf"])
    assert a.startswith("cv_jackknife-")
    assert sweep_name(["model=linear_strf", "+sweep=cv_jackknife"]) == a  # order does not matter: reruns resume
    assert sweep_name(["+sweep=cv_jackknife", "model=deep_encoder"]) != a  # another sweep: another directory
    assert sweep_name([]).startswith("sweep-")
