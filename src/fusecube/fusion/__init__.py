"""Gap-filling: baselines (linear, Whittaker) and the learned S1→NDVI fusion model."""

from fusecube.fusion.baselines import gapfill

__all__ = ["gapfill"]
