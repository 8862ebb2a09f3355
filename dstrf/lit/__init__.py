"""Lightning adapters: EncoderModule (wraps any encoder), TrialDataModule, loggers, checkpoints, the
divergence guard and DDP job processes. The post-fit callbacks (``dstrf.lit.callbacks``: dSTRFs, gradient
maps, figures) are imported from their module, so importing the module and datamodule stays light."""

from .datamodule import TrialDataModule, TrialDataset, collate_trials
from .loggers import wandb_logger, wandb_mode
from .module import DataUnitsEncoder, EncoderModule, frame_mask

__all__ = [
    "EncoderModule",
    "DataUnitsEncoder",
    "TrialDataModule",
    "TrialDataset",
    "collate_trials",
    "frame_mask",
    "wandb_logger",
    "wandb_mode",
]
