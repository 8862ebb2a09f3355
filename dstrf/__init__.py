"""dstrf: dynamic spectrotemporal receptive fields and gradient maps of neural encoding models.

Layers (lower never import higher): ``data`` -> ``models`` -> ``metrics`` -> ``lit`` -> ``train``.
"""

__version__ = "0.1.0"
