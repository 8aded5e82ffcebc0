"""One resolver for every way of saying where: bbox, polygon, file, like=, CRS + resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from odc.geo import geom
from odc.geo.geobox import GeoBox

from fusecube.errors import GridError, InputFileError
from fusecube.grid.geobox import aoi_geometry, parse_bbox, resolve_geobox, utm_crs

DEMAK = (110.60, -6.95, 110.70, -6.85)  # lon/lat, UTM 49S
REAL_ROI = Path(__file__).parents[2] / "shared/data/real/sen2rts/csv/sampleroi.geojson"


def test_bbox_gets_utm_zone_of_centre_and_covers_aoi():
    gbox = resolve_geobox(DEMAK, resolution=20)
    assert gbox.crs.epsg == 32749
    assert gbox.resolution.x == 20 and gbox.resolution.y == -20
    aoi_utm = geom.box(*DEMAK, "EPSG:4326").to_crs(gbox.crs)
    # the grid covers the AOI with less than one pixel of margin on each side
    assert gbox.extent.contains(aoi_utm.buffer(-1e-6))
    extra = gbox.extent.area - aoi_utm.area
    assert 0 <= extra < aoi_utm.length * 20 * 1.01 + 4 * 20 * 20
    # pixel edges aligned to multiples of the resolution
    assert gbox.affine.c % 20 == 0 and gbox.affine.f % 20 == 0


@pytest.mark.parametrize(("lon", "lat", "epsg"), [(110.65, -6.9, 32749), (5.0, 52.0, 32631),
                                                   (-122.4, 37.8, 32610), (179.9, 0.5, 32660)])
def test_utm_zone(lon, lat, epsg):
    assert utm_crs(geom.point(lon, lat, "EPSG:4326")).epsg == epsg


def test_bbox_string_polygon_and_file_agree(tmp_path):
    polygon = geom.box(*DEMAK, "EPSG:4326")
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": polygon.json}]}))
    boxes = [resolve_geobox(a) for a in (DEMAK, ",".join(map(str, DEMAK)), polygon.json, path,
                                         str(path), polygon)]
    assert all(b == boxes[0] for b in boxes)


def test_gpkg_in_projected_crs_dissolves_features(tmp_path):
    gpd = pytest.importorskip("geopandas")
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(geometry=[box(458000, 9238000, 459000, 9239000),
                                       box(460000, 9238000, 461000, 9239000)], crs="EPSG:32749")
    path = tmp_path / "fields.gpkg"
    frame.to_file(path)
    gbox = resolve_geobox(path, resolution=10)
    assert gbox.crs.epsg == 32749
    assert gbox.shape == (100, 300)  # the union's bbox, 3 km x 1 km at 10 m
    assert gbox.affine.c == 458000 and gbox.affine.f == 9239000


def test_explicit_crs_and_geographic_resolution():
    gbox = resolve_geobox(DEMAK, crs="EPSG:4326", resolution=0.001)
    assert gbox.crs.epsg == 4326 and gbox.shape == (100, 100)
    with pytest.raises(GridError, match="in degrees"):
        resolve_geobox(DEMAK, crs="EPSG:4326")
    with pytest.raises(GridError, match="did you mean metres"):
        resolve_geobox(DEMAK, crs="EPSG:4326", resolution=10)


def test_like_grid_and_crop_keep_alignment():
    base = resolve_geobox(DEMAK, resolution=10)
    assert resolve_geobox(like=base) is base
    sub = resolve_geobox((110.62, -6.90, 110.64, -6.88), like=base)
    assert sub.crs == base.crs and sub.resolution == base.resolution
    # the crop is a pixel window of the base grid
    offset = np.array([(sub.affine.c - base.affine.c) / 10, (base.affine.f - sub.affine.f) / 10])
    assert np.allclose(offset, np.round(offset))
    with pytest.raises(GridError, match="like= fixes"):
        resolve_geobox(DEMAK, like=base, resolution=20)
    with pytest.raises(GridError, match="does not overlap"):
        resolve_geobox((10.0, 45.0, 10.1, 45.1), like=base)


def test_like_dataset_and_raster(tmp_path):
    import rasterio

    base = GeoBox.from_bbox((458000, 9238000, 458500, 9238300), "EPSG:32749", resolution=50)
    path = tmp_path / "ref.tif"
    with rasterio.open(path, "w", driver="GTiff", width=base.shape.x, height=base.shape.y, count=1,
                       dtype="uint8", crs="EPSG:32749", transform=base.affine) as dst:
        dst.write(np.zeros(base.shape.yx, "uint8"), 1)
    assert resolve_geobox(like=path) == base
    import xarray as xr

    from fusecube.cube import with_geobox

    ds = with_geobox(xr.Dataset(), base)
    assert resolve_geobox(like=ds) == base


@pytest.mark.parametrize(("aoi", "match"), [
    ((110.7, -6.95, 110.6, -6.85), "empty or inverted"),
    ((458000, 9238000, 459000, 9239000), "look like projected coordinates"),
    ("1,2,3", "has 3 numbers"),
    ("a,b,c,d", "not four numbers"),
    ({"type": "FeatureCollection", "features": []}, "no features"),
    ({"type": "Point", "coordinates": [110.6, -6.9]}, "no area"),
    ({"type": "Topology"}, "not GeoJSON"),
    (42, "not understood"),
])
def test_bad_aoi_raises_specific_error(aoi, match):
    with pytest.raises(GridError, match=match):
        resolve_geobox(aoi)


def test_no_aoi_and_missing_file(tmp_path):
    with pytest.raises(GridError, match="No area of interest"):
        resolve_geobox()
    with pytest.raises(InputFileError, match="does not exist"):
        resolve_geobox(tmp_path / "nope.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        resolve_geobox(bad)


def test_projected_bbox_with_its_crs():
    gbox = resolve_geobox((458000, 9238000, 459000, 9239000), aoi_crs="EPSG:32749", resolution=10)
    assert gbox.crs.epsg == 32749 and gbox.shape == (100, 100)
    assert aoi_geometry(parse_bbox("458000 9238000 459000 9239000"), crs="EPSG:32749").area == 1e6


@pytest.mark.realdata
def test_real_roi_file_in_utm():
    if not REAL_ROI.exists():
        pytest.skip(f"real data not present at {REAL_ROI}")
    gbox = resolve_geobox(REAL_ROI, resolution=10)
    assert gbox.crs.epsg == 32632
    # two 80 x 60 m fields 80 m apart: union bbox 240 x 60 m
    assert gbox.shape == (6, 24)
