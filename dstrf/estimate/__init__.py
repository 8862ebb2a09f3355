"""Estimating what encoders compute: dynamic STRFs (Jacobians per time point).

Works on plain ``torch.nn.Module``s and tensors, without Lightning or Hydra.
"""

from .dstrf import dstrf
from .storage import DSTRFFile, open_dstrf

__all__ = ["dstrf", "DSTRFFile", "open_dstrf"]
