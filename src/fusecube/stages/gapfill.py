"""Gap-fill stage: one entry point that dispatches to the configured method in ``fusion/``.

``linear`` and ``whittaker`` are per-pixel baselines (:mod:`fusecube.fusion.baselines`) and stay
lazy on a dask-backed cube; ``ridge`` (:mod:`fusecube.fusion.ridge`) fits on the block it is
given and ``fusion`` (:mod:`fusecube.fusion.neural`) applies a trained model, both in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import xarray as xr

from fusecube.errors import ConfigError
from fusecube.fusion.baselines import gapfill as baseline_gapfill
from fusecube.fusion.ridge.model import RidgeConfig, fuse_ridge

if TYPE_CHECKING:  # pragma: no cover
    from fusecube.fusion.neural.model import NeuralFusion

GapfillMethod = Literal["linear", "whittaker", "fusion", "ridge"]


@dataclass(frozen=True)
class GapfillConfig:
    """Options of the gap-fill stage."""

    method: GapfillMethod = "linear"
    """``linear`` / ``whittaker`` (baselines), ``ridge`` (closed-form S1 fusion fitted on the
    block) or ``fusion`` (a trained :class:`~fusecube.fusion.neural.model.NeuralFusion`)."""
    lam: float = 2.0
    """Smoothing strength of the ``whittaker`` baseline."""
    linear_below: int = 0
    """With ``whittaker``: gaps of at most this many dates are filled linearly."""
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    """Options of the ``ridge`` method."""

    def __post_init__(self) -> None:
        if self.method not in ("linear", "whittaker", "fusion", "ridge"):
            raise ConfigError(f"Unknown gap-fill method {self.method!r}; use linear, whittaker, "
                              "ridge or fusion.")


def context_halo(config: GapfillConfig, model: NeuralFusion | None = None) -> int:
    """Pixels of spatial context the gap-fill reads around each pixel (0: per-pixel methods).

    The runner reads every block with this margin and keeps only the block's own pixels, so
    a pixel near a block edge gets the box-filtered radar it would get in the whole scene.
    """
    if config.method == "fusion" and model is not None:
        return int(model.context_radius)
    if config.method == "ridge":
        return config.ridge.window // 2
    return 0


def gapfill(ds: xr.Dataset, *, config: GapfillConfig = GapfillConfig(),
            model: NeuralFusion | None = None) -> xr.Dataset:
    """Add ``ndvi_fused``: ``ndvi`` with its gaps filled by the configured method.

    Args:
        ds: Cube (block) ``(time, y, x)`` with ``ndvi``; ``vv`` and ``vh`` for ``ridge`` and
            ``fusion``.
        config: Gap-fill options.
        model: The trained model, for ``method="fusion"``.

    Returns:
        The cube with ``ndvi_fused`` added.

    Raises:
        ConfigError: ``fusion`` without a model.
    """
    if config.method == "fusion":
        if model is None:
            raise ConfigError("Gap-fill method 'fusion' needs a trained model: pass model= "
                              "(NeuralFusion.load or fusecube.fusion.neural.workflows."
                              "model_for_run).")
        return model.predict(ds)
    if config.method == "ridge":
        return fuse_ridge(ds, config=config.ridge)
    return baseline_gapfill(ds, method=config.method, lam=config.lam,
                            linear_below=config.linear_below)
