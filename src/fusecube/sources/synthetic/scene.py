"""Parameters of a synthetic scene (defaults: Demak, Central Java) and its land classes."""

from __future__ import annotations

from dataclasses import dataclass

from odc.geo.geobox import GeoBox

WATER, POND, SETTLEMENT, TREES, OTHER_CROP, PADDY = range(6)


CLASS_NAMES = ("water", "fish_pond", "settlement", "trees", "other_crop", "paddy")


TILE = 256  # generation tile; fixed so the scene does not depend on output chunking


MAX_SEASONS = 6


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of a synthetic scene (defaults: Demak, Central Java)."""

    width: int = 671
    """Pixels along x."""
    height: int = 893
    """Pixels along y."""
    resolution: float = 50.0
    """Pixel size in metres."""
    crs: str = "EPSG:32749"
    """Projected CRS (UTM 49S)."""
    centre: tuple[float, float] = (458000.0, 9238400.0)
    """Scene centre in the CRS (near Demak town)."""
    start: str = "2023-11-01"
    """Start of the first period."""
    n_periods: int = 62
    """Number of compositing periods."""
    period_days: int = 12
    """Length of a period in days."""
    seed: int = 0
    """Random seed; the same seed gives the same bytes."""
    paddy_fraction: float = 0.3
    """Share of the scene that is rice paddy."""
    three_season_fraction: float = 0.4
    """Share of paddy blocks that grow three seasons a year."""
    enl: float = 4.5
    """Equivalent number of looks of the radar speckle."""

    @property
    def geobox(self) -> GeoBox:
        """The scene grid."""
        half_w, half_h = self.width * self.resolution / 2, self.height * self.resolution / 2
        x0 = round((self.centre[0] - half_w) / self.resolution) * self.resolution
        y1 = round((self.centre[1] + half_h) / self.resolution) * self.resolution
        from affine import Affine

        transform = Affine(self.resolution, 0, x0, 0, -self.resolution, y1)
        return GeoBox((self.height, self.width), transform, self.crs)
