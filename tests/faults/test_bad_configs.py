"""Every setting that cannot work stops the run before any training, with an error naming the config key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstrf.config import compose
from dstrf.train import ConfigError, run

from .cases import BAD_CONFIGS, BadConfig


def _config(overrides: tuple[str, ...], run_dir: Path):
    from omegaconf import open_dict

    cfg = compose(["experiment=quick", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        del cfg["hydra"]  # as the entry point sees it: Hydra's own node is not part of the job's config
    return cfg


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=[b.id for b in BAD_CONFIGS])
def test_bad_config_stops_before_training(bad: BadConfig, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    with pytest.raises((ConfigError, FileNotFoundError), match=bad.message):
        run(_config(bad.overrides, run_dir))
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_a_good_config_passes_the_same_checks(tmp_path: Path, monkeypatch) -> None:
    """The checks reject the bad cases above, not everything: the quick config trains and is done."""
    monkeypatch.chdir(tmp_path)
    metrics = run(_config(("model=linear_strf", "model.lags=10", "trainer.max_epochs=1"), tmp_path / "run"))
    assert metrics["epochs"] == 1 and (tmp_path / "run" / "done.json").is_file()
