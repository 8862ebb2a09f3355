"""Estimating what encoders compute: dynamic STRFs (Jacobians per time point).

Works on plain ``torch.nn.Module``s and tensors, without Lightning or Hydra.
"""

from .dstrf import dstrf

__all__ = ["dstrf"]
