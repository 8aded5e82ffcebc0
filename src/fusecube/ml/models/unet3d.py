"""A 3-D U-Net over ``(time, y, x)``: a plain ``torch.nn.Module``, no training logic.

Convolutions are 3-D (time and space together); down-sampling halves ``y`` and ``x`` only by
default (``time_pool=False``), because a cube window holds few time steps (8-64) and the model
must keep each period's own value. Inputs of any size work: they are padded to a multiple of
the total down-sampling factor and the output is cropped back.
"""

from __future__ import annotations

from fusecube.errors import require

torch = require("torch", "ml")
nn = torch.nn
F = torch.nn.functional


def _norm(channels: int) -> nn.Module:
    """Group norm (batch-size independent, DDP-safe without sync), at most 8 groups."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Sequential):
    """Two ``3x3x3`` convolutions, each followed by group norm and SiLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.SiLU(),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.SiLU(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


class UNet3D(nn.Module):
    """3-D U-Net with skip connections, configurable depth and width.

    Args:
        in_channels: Input channels (e.g. S1 features + masked NDVI + validity mask).
        out_channels: Output channels (1: NDVI).
        depth: Resolution levels (1 = no down-sampling).
        width: Channels at the first level; doubled at each level down.
        time_pool: Also halve the time axis when going down.
        dropout: Dropout after each block of the decoder (0: none).

    Shapes:
        ``(batch, in_channels, time, y, x)`` → ``(batch, out_channels, time, y, x)``.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, *, depth: int = 3, width: int = 16,
                 time_pool: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1; got depth={depth}, width={width}")
        self.depth, self.time_pool = depth, time_pool
        widths = [width * 2**i for i in range(depth)]
        self.encoders = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.encoders.append(ConvBlock(prev, w))
            prev = w
        stride = (2, 2, 2) if time_pool else (1, 2, 2)
        self.pool = nn.MaxPool3d(stride, stride)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_low, w in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            self.ups.append(nn.ConvTranspose3d(w_low, w, stride, stride))
            self.decoders.append(ConvBlock(2 * w, w, dropout))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    @property
    def factor(self) -> tuple[int, int, int]:
        """Total down-sampling of ``(time, y, x)``: inputs are padded to a multiple of it."""
        f = 2 ** (self.depth - 1)
        return (f if self.time_pool else 1, f, f)

    def forward(self, x):
        """Predict ``(batch, out_channels, time, y, x)`` from ``(batch, in_channels, time, y, x)``."""
        size = x.shape[-3:]
        pad = [(-n) % f for n, f in zip(size, self.factor, strict=True)]
        if any(pad):  # replicate edges so padding looks like more of the scene, not zeros
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for up, decoder, skip in zip(self.ups, self.decoders, skips[::-1], strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        out = self.head(x)
        return out[..., : size[0], : size[1], : size[2]]
