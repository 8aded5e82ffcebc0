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
    """Parameters of a synthetic scene (defaults: Demak, Central Java).

    ``radar_skill`` sets how much of the radar's temporal variation follows the vegetation.
    Measured on 192 x 192 scenes (seeds 0, 1, 2; paddy pixels, the statistic of
    :func:`fusecube.testing.realdata.correlation_summary`: median per-pixel Pearson r of
    observed NDVI with VH dB after the input screen), r is close to ``sqrt(skill) * 0.76``,
    so r² is about ``0.57 * skill``:

    =====  ===========  =====  ==========================================================
    skill  r paddy      r²     like (real WorldCereal cubes, ``testing/realdata.py``)
    =====  ===========  =====  ==========================================================
    1.0    0.74-0.77    0.57   flooded rice (the scene as generated: the default)
    0.8    0.67-0.69    0.46
    0.63   0.59-0.62    0.36   maize (r 0.71 in 31UDS, 0.49 in 31UES): ``maize-like``
    0.5    0.52-0.55    0.28
    0.3    0.40-0.43    0.17
    0.1    0.23-0.25    0.06   winter wheat (r 0.27), a whole mixed patch (r about 0.24)
    0.0    -0.01..0.00  0.00   grassland (r 0.02-0.13): radar says nothing of NDVI
    =====  ===========  =====  ==========================================================
    """

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
    radar_skill: float = 1.0
    """How much of the radar's temporal variation follows the vegetation: 1 as generated
    (flooded rice), 0 none (see :func:`~fusecube.sources.synthetic.curves.decouple_radar`)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.radar_skill <= 1.0:
            raise ValueError(f"radar_skill must lie in [0, 1], got {self.radar_skill}.")

    @property
    def geobox(self) -> GeoBox:
        """The scene grid."""
        half_w, half_h = self.width * self.resolution / 2, self.height * self.resolution / 2
        x0 = round((self.centre[0] - half_w) / self.resolution) * self.resolution
        y1 = round((self.centre[1] + half_h) / self.resolution) * self.resolution
        from affine import Affine

        transform = Affine(self.resolution, 0, x0, 0, -self.resolution, y1)
        return GeoBox((self.height, self.width), transform, self.crs)
