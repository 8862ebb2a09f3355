"""Estimating what encoders compute: dynamic STRFs (Jacobians per time point), gradient maps, optimal stimuli.

Works on plain ``torch.nn.Module``s and tensors, without Lightning or Hydra.
"""

from .gradmap import InactiveGradmapWarning, OptimalStimulus, gradmap, optimal_stimulus
from .jackknife import JackknifeDSTRF, jackknife_dstrf, jackknife_se, quantile, sign_consistency_mask
from .jacobian import dstrf
from .storage import DSTRFFile, DSTRFFileError, GradmapFile, open_dstrf, open_gradmap

__all__ = [
    "dstrf",
    "gradmap",
    "optimal_stimulus",
    "OptimalStimulus",
    "InactiveGradmapWarning",
    "DSTRFFile",
    "DSTRFFileError",
    "open_dstrf",
    "GradmapFile",
    "open_gradmap",
    "JackknifeDSTRF",
    "jackknife_dstrf",
    "jackknife_se",
    "sign_consistency_mask",
    "quantile",
]
