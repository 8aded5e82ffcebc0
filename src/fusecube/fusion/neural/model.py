"""The fusion network, the fitted model that carries it, and the model of a pipeline run.

The network sees one pixel's whole series ``(C, T)`` and returns NDVI at every step. It is a
stack of residual dilated 1-D convolutions (receptive field well over a year at 12-day steps)
with a global-context term (the series mean of the hidden state, so a pixel's whole history
informs every date), and a linear head that adds a correction to the linear interpolation of
the pixel's own observations: NDVI stays in its natural range, nothing squashes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fusecube.errors import FusionModelError, InputFileError, require
from fusecube.fusion.neural.features import (
    CALENDAR_FEATURES,
    OPTICAL_FEATURES,
    Normalizer,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import xarray as xr

    from fusecube.config import RunConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
Architecture = Literal["mlp", "conv", "gru"]
LINEAR_CHANNEL = -2  # position of ``ndvi_linear`` among the input channels (counted from the end)
assert OPTICAL_FEATURES[LINEAR_CHANNEL] == "ndvi_linear"


def _torch():
    return require("torch", "ml")


def build_network(in_channels: int, *, arch: Architecture = "mlp", width: int = 256,
                  n_times: int | None = None, dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
                  kernel: int = 3):
    """Build the per-pixel temporal network (a ``torch.nn.Module``).

    Args:
        in_channels: Input channels per time step.
        arch: ``mlp`` (fully connected over the whole series: fastest on CPU), ``conv``
            (residual dilated 1-D convolutions) or ``gru`` (bidirectional GRU).
        width: Hidden units (``mlp``) or channels per step (``conv``, ``gru``).
        n_times: Series length (``mlp`` only: its weights are tied to the time grid).
        dilations: Dilation of each residual convolution (``conv`` only).
        kernel: Convolution kernel size (``conv`` only).

    Returns:
        A module mapping ``(B, C, T)`` float32 to ``(B, T)`` NDVI.
    """
    torch = _torch()
    nn = torch.nn

    class TemporalConvNet(nn.Module):
        """Residual dilated 1-D convolutions over time with a global-context term."""

        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv1d(in_channels, width, 1)
            self.convs = nn.ModuleList(
                nn.Conv1d(width, width, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                for d in dilations)
            self.context = nn.Linear(width, width)
            self.mid = len(dilations) // 2
            self.head = nn.Conv1d(width, 1, 1)
            nn.init.zeros_(self.head.weight)  # start as the linear interpolation
            nn.init.zeros_(self.head.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            for i, conv in enumerate(self.convs):
                h = h + conv(nn.functional.gelu(h))
                if i == self.mid:
                    h = h + self.context(h.mean(dim=-1)).unsqueeze(-1)
            return x[:, LINEAR_CHANNEL] + self.head(nn.functional.gelu(h)).squeeze(1)

    class TemporalGRU(nn.Module):
        """Bidirectional GRU over time (the measured alternative)."""

        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(in_channels, width, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * width, 1)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.gru(x.transpose(1, 2))
            return x[:, LINEAR_CHANNEL] + self.head(h).squeeze(-1)

    class SeriesMLP(nn.Module):
        """Fully connected over the whole (C, T) series: every date sees every other."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(in_channels * n_times, width), nn.GELU(),
                nn.Linear(width, width), nn.GELU())
            self.head = nn.Linear(width, n_times)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, LINEAR_CHANNEL] + self.head(self.body(x))

    if arch == "mlp":
        if not n_times:
            raise FusionModelError("the mlp fusion network needs n_times (the series length)")
        return SeriesMLP()
    if arch == "conv":
        return TemporalConvNet()
    if arch == "gru":
        return TemporalGRU()
    raise FusionModelError(f"unknown fusion architecture {arch!r}; use 'conv' or 'gru'")


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FusionModelError(f"device {device!r} asked for but no CUDA GPU is visible; "
                               "use device='cpu' or 'auto'.")
    return device


@dataclass
class FusionModel:
    """A fitted S1→NDVI fusion model: network, feature recipe, normalisation and metrics.

    Attributes:
        net: The ``torch.nn.Module``.
        radar_features: Radar channel names, in order.
        window: Box-filter edge of the ``*_local`` radar channels.
        normalizer: Radar channel statistics fitted on training pixels only.
        arch: Keyword arguments of :func:`build_network`.
        metrics: Validation metrics (held-out blocks and dates) with the baselines beside.
        meta: Training details: configuration, split, timings, versions.
    """

    net: object
    radar_features: tuple[str, ...]
    window: int
    normalizer: Normalizer
    arch: dict
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def context_radius(self) -> int:
        """Pixels of neighbourhood the radar features read on each side of a pixel.

        ``*_local`` channels box-filter ``window`` px, ``*_wide`` ones ``2 * window + 1``:
        a block read with this many extra pixels around it gives its pixels the features
        they would have in the whole scene.
        """
        radius = 0
        for name in self.radar_features:
            if name.endswith("_wide"):
                radius = max(radius, self.window)
            elif name.endswith("_local"):
                radius = max(radius, self.window // 2)
        return radius

    @property
    def in_channels(self) -> int:
        """Input channels of the network."""
        return len(self.radar_features) + len(CALENDAR_FEATURES) + len(OPTICAL_FEATURES)

    @classmethod
    def new(cls, radar_features: Sequence[str], normalizer: Normalizer, *, window: int = 5,
            **arch) -> FusionModel:
        """A fresh (untrained) model for the given radar channels."""
        n_in = len(radar_features) + len(CALENDAR_FEATURES) + len(OPTICAL_FEATURES)
        net = build_network(n_in, **arch)
        return cls(net, tuple(radar_features), window, normalizer, dict(arch))

    def save(self, path: str | Path) -> Path:
        """Write the model (weights + JSON-able metadata) with ``torch.save``, atomically."""
        torch = _torch()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format_version": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "radar_features": list(self.radar_features),
            "calendar_features": list(CALENDAR_FEATURES),
            "optical_features": list(OPTICAL_FEATURES),
            "window": self.window,
            "normalizer": self.normalizer.to_dict(),
            "arch": self.arch,
            "metrics": json.loads(json.dumps(self.metrics, default=float)),
            "meta": json.loads(json.dumps(self.meta, default=str)),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> FusionModel:
        """Read a model written by :meth:`save`.

        Raises:
            InputFileError: The file is missing or not a fusion model.
        """
        torch = _torch()
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"Fusion model {path} does not exist; train one with "
                                 "`fusecube fuse train CUBE --out model.pt`.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt file
            raise InputFileError(f"Fusion model {path} cannot be read ({type(exc).__name__}: "
                                 f"{exc}); train it again with `fusecube fuse train`.") from exc
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise InputFileError(f"{path} is not a fusecube fusion model (format "
                                 f"{FORMAT_VERSION}); train one with `fusecube fuse train`.")
        model = cls.new(state["radar_features"], Normalizer.from_dict(state["normalizer"]),
                        window=state["window"], **state["arch"])
        model.net.load_state_dict(state["state_dict"])
        model.net.to(device).eval()
        model.metrics, model.meta = state["metrics"], state["meta"]
        return model


def model_for_run(cube: xr.Dataset, config: RunConfig) -> FusionModel:
    """The fusion model of a pipeline run: ``config.fusion_model`` if given, else trained here.

    Training samples a bounded number of pixels from the (lazy) cube, so memory does not grow
    with the scene; the trained model is saved as ``config.out / "fusion_model.pt"``.

    Args:
        cube: The whole input cube (dask-backed is fine).
        config: The run configuration.

    Returns:
        The model, on CPU or CUDA.
    """
    from fusecube.fusion.neural.train import TrainConfig, fit

    if config.fusion_model is not None:
        model = FusionModel.load(config.fusion_model, device=select_device())
        log.info("fusion model loaded from %s", config.fusion_model)
        return model
    model = fit(cube, TrainConfig())
    path = model.save(Path(config.out) / "fusion_model.pt")
    log.info("fusion model trained on this scene and saved to %s", path)
    return model


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """Tensor → float32 numpy on the CPU."""
    return x.detach().float().cpu().numpy()
