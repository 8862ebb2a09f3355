"""Lightning layer: EncoderModule (wraps any encoder), TrialDataModule, loggers."""

from .callbacks import DSTRFCallback, GradmapCallback
from .datamodule import TrialDataModule, TrialDataset, collate_trials
from .loggers import wandb_logger, wandb_mode
from .module import DataUnitsEncoder, EncoderModule, frame_mask

__all__ = ["EncoderModule", "DataUnitsEncoder", "DSTRFCallback", "GradmapCallback", "TrialDataModule", "TrialDataset", "collate_trials", "frame_mask", "wandb_logger", "wandb_mode"]
