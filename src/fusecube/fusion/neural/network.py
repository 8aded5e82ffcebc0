"""The per-pixel temporal network of neural fusion (a ``torch.nn.Module``) and its device.

The network sees one pixel's whole series ``(C, T)`` and returns NDVI at every step. It is a
stack of residual dilated 1-D convolutions (receptive field well over a year at 12-day steps)
with a global-context term (the series mean of the hidden state, so a pixel's whole history
informs every date), and a linear head that adds a correction to the linear interpolation of
the pixel's own observations: NDVI stays in its natural range, nothing squashes it. A fully
connected and a recurrent variant are the measured alternatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from fusecube.errors import FusionModelError, require
from fusecube.fusion.neural.features import CALENDAR_FEATURES, OPTICAL_FEATURES

if TYPE_CHECKING:  # pragma: no cover
    import torch

Architecture = Literal["mlp", "conv", "gru"]
LINEAR_CHANNEL = -2  # position of ``ndvi_linear`` among the input channels (counted from the end)
assert OPTICAL_FEATURES[LINEAR_CHANNEL] == "ndvi_linear"


def require_torch():
    """The ``torch`` module, or an error naming the ``[ml]`` extra to install."""
    return require("torch", "ml")


def in_channels(radar_features: Sequence[str]) -> int:
    """Input channels of the network for the given radar channels."""
    return len(radar_features) + len(CALENDAR_FEATURES) + len(OPTICAL_FEATURES)


def build_network(in_channels: int, *, arch: Architecture = "mlp", width: int = 256,
                  n_times: int | None = None, dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
                  kernel: int = 3, members: int = 1):
    """Build the per-pixel temporal network (a ``torch.nn.Module``).

    Args:
        in_channels: Input channels per time step.
        arch: ``mlp`` (fully connected over the whole series: fastest on CPU), ``conv``
            (residual dilated 1-D convolutions) or ``gru`` (bidirectional GRU).
        width: Hidden units (``mlp``) or channels per step (``conv``, ``gru``).
        n_times: Series length (``mlp`` only: its weights are tied to the time grid).
        dilations: Dilation of each residual convolution (``conv`` only).
        kernel: Convolution kernel size (``conv`` only).
        members: Networks averaged (:func:`mean_ensemble`); 1 for a single network.

    Returns:
        A module mapping ``(B, C, T)`` float32 to ``(B, T)`` NDVI.
    """
    torch = require_torch()
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

    if members > 1:
        return mean_ensemble([build_network(in_channels, arch=arch, width=width, n_times=n_times,
                                            dilations=dilations, kernel=kernel)
                              for _ in range(members)])
    if arch == "mlp":
        if not n_times:
            raise FusionModelError("the mlp fusion network needs n_times (the series length)")
        return SeriesMLP()
    if arch == "conv":
        return TemporalConvNet()
    if arch == "gru":
        return TemporalGRU()
    raise FusionModelError(f"unknown fusion architecture {arch!r}; use 'conv' or 'gru'")


def mean_ensemble(nets: Sequence):
    """A module whose output is the mean of ``nets``' outputs (members trained apart, seeds apart)."""
    torch = require_torch()

    class MeanEnsemble(torch.nn.Module):
        """The mean prediction of independently trained members: steadier than any one of them."""

        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(nets)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([member(x) for member in self.members]).mean(dim=0)

    return MeanEnsemble()


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    torch = require_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FusionModelError(f"device {device!r} asked for but no CUDA GPU is visible; "
                               "use device='cpu' or 'auto'.")
    return device


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """Tensor → float32 numpy on the CPU."""
    return x.detach().float().cpu().numpy()
