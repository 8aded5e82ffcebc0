"""Cube models: a 3-D U-Net over ``(time, y, x)`` and its physics-style loss terms.

Both are plain ``torch`` modules; training lives in :mod:`fusecube.ml.training`.
"""

from fusecube.ml.models.losses import (
    TERMS,
    UncertaintyWeighting,
    observation_loss,
    range_loss,
    s1_change_loss,
    smoothness_loss,
)
from fusecube.ml.models.unet3d import UNet3D

__all__ = ["TERMS", "UNet3D", "UncertaintyWeighting", "observation_loss", "range_loss",
           "s1_change_loss", "smoothness_loss"]
