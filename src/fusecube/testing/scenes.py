"""A small seeded Sentinel-1/2 "catalogue" of COGs with known truth, for source tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
from odc.geo.geobox import GeoBox

from fusecube.testing.cog import write_cog
from fusecube.testing.stac import make_item
from fusecube.units import to_db

#: SCL classes used in the fake scenes.
SCL_VEG, SCL_CLOUD, SCL_SHADOW = 4, 9, 3


@dataclass
class FakeScene:
    """COG files on disk plus the truth needed to check a fetch.

    Attributes:
        geobox: Grid of every file (the "scene", like a 110 km S2 tile, only smaller).
        s2: Per S2 acquisition: id, time, baseline, reflectance red/nir (float), scl (uint8).
        s1: Per S1 acquisition: id, time, vv/vh linear (float32).
        files: File name → path.
    """

    geobox: GeoBox
    root: Path
    s2: list[dict] = field(default_factory=list)
    s1: list[dict] = field(default_factory=list)

    def items(self, base_url: str, *, s1_db: bool = False) -> list[pystac.Item]:
        """STAC items whose hrefs point at ``base_url/files/<name>``."""
        out = []
        for acq in self.s2:
            props = {"eo:cloud_cover": acq["cloud"], "s2:processing_baseline": acq["baseline"]}
            assets = {band: f"{base_url}/files/{acq['id']}_{band}.tif"
                      for band in ("B04", "B08", "SCL")}
            out.append(make_item(acq["id"], acq["time"], self.geobox, assets, properties=props))
        for acq in self.s1:
            suffix = "db" if s1_db else "lin"
            assets = {band: f"{base_url}/files/{acq['id']}_{band}_{suffix}.tif"
                      for band in ("vv", "vh")}
            out.append(make_item(acq["id"], acq["time"], self.geobox, assets,
                                 collection="sentinel-1-rtc"))
        return out


def make_scene(root: str | Path, *, size: int = 2048, resolution: float = 10.0,
               s2_dates: tuple[str, ...] = ("2022-01-05", "2022-01-10", "2022-01-30",
                                            "2022-02-04"),
               s1_dates: tuple[str, ...] = ("2022-01-03", "2022-01-09", "2022-01-27"),
               seed: int = 0, blocksize: int = 256, db_copies: bool = False) -> FakeScene:
    """Write a seeded fake scene: S2 B04/B08/SCL and S1 vv/vh COGs of ``size`` x ``size`` px.

    Reflectances vary smoothly in space with a little noise (so tiles compress like real
    data, neither trivially nor not at all), NIR rises with time; each S2 date carries a
    cloud (SCL 9) and a shadow (SCL 3) rectangle at seeded places. Items from 2022-01-25 on
    are processing baseline 04.00 and carry the +1000 DN offset, as real L2A does.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x0, y0 = 400000.0, 9220000.0
    geobox = GeoBox.from_bbox((x0, y0 - size * resolution, x0 + size * resolution, y0),
                              "EPSG:32749", resolution=resolution)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    scene = FakeScene(geobox, root)
    for k, date in enumerate(s2_dates):
        when = datetime.fromisoformat(date)
        red = 0.04 + 0.03 * np.sin(6 * xx + k) * np.cos(4 * yy) + rng.normal(0, 0.003, xx.shape)
        nir = 0.20 + 0.08 * k + 0.05 * np.cos(5 * yy - k) + rng.normal(0, 0.003, xx.shape)
        baseline = "04.00" if when >= datetime(2022, 1, 25) else "03.01"
        offset_dn = 1000 if baseline == "04.00" else 0
        red_dn = np.clip(np.round(red * 1e4) + offset_dn, 1, 65535).astype(np.uint16)
        nir_dn = np.clip(np.round(nir * 1e4) + offset_dn, 1, 65535).astype(np.uint16)
        scl = np.full(xx.shape, SCL_VEG, np.uint8)
        for cls in (SCL_CLOUD, SCL_SHADOW):
            r0, c0 = rng.integers(0, size - size // 4, 2)
            scl[r0:r0 + size // 4, c0:c0 + size // 4] = cls
        acq = {"id": f"S2_{date}", "time": when, "baseline": baseline,
               "cloud": float(round(100 * (scl != SCL_VEG).mean(), 1)),
               "red_dn": red_dn, "nir_dn": nir_dn, "scl": scl}
        for band, data in (("B04", red_dn), ("B08", nir_dn), ("SCL", scl)):
            write_cog(root / f"{acq['id']}_{band}.tif", data, geobox, nodata=0,
                      blocksize=blocksize)
        scene.s2.append(acq)
    for k, date in enumerate(s1_dates):
        vv = (0.05 + 0.02 * np.sin(3 * xx + k) + 0.01 * k).astype(np.float32)
        vh = (0.01 + 0.005 * np.cos(3 * yy + k)).astype(np.float32)
        acq = {"id": f"S1_{date}", "time": datetime.fromisoformat(date), "vv": vv, "vh": vh}
        for band, data in (("vv", vv), ("vh", vh)):
            write_cog(root / f"{acq['id']}_{band}_lin.tif", data, geobox, nodata=-32768.0,
                      blocksize=blocksize)
            if db_copies:
                db = to_db(data).astype(np.float32, copy=False)
                write_cog(root / f"{acq['id']}_{band}_db.tif", db, geobox, nodata=-32768.0,
                          blocksize=blocksize)
        scene.s1.append(acq)
    return scene


def expected_ndvi(acq: dict, valid_scl=(4, 5, 6, 11)) -> np.ndarray:
    """Truth NDVI of one S2 acquisition (NaN where masked), from its DN and baseline."""
    offset = -0.1 if acq["baseline"] == "04.00" else 0.0
    red = acq["red_dn"] * 1e-4 + offset
    nir = acq["nir_dn"] * 1e-4 + offset
    ndvi = (nir - red) / (nir + red)
    return np.where(np.isin(acq["scl"], valid_scl), ndvi, np.nan)
