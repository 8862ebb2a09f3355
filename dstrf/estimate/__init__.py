"""Estimating what encoders compute: dynamic STRFs (Jacobians per time point).

Works on plain ``torch.nn.Module``s and tensors, without Lightning or Hydra.
"""

from .dstrf import dstrf
from .jackknife import JackknifeDSTRF, jackknife_dstrf, jackknife_se, quantile, sign_consistency_mask
from .storage import DSTRFFile, open_dstrf

__all__ = ["dstrf", "DSTRFFile", "open_dstrf", "JackknifeDSTRF", "jackknife_dstrf", "jackknife_se",
           "sign_consistency_mask", "quantile"]
