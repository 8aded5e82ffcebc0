"""Masks: vector and raster, any CRS, repairs counted, windowed reads, coverage, errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox

from fusecube.cube import PADDY_MASK, read_cube
from fusecube.errors import InputFileError, MaskError
from fusecube.masks.area import pixel_areas_km2
from fusecube.masks.raster import raster_mask_with_report
from fusecube.masks.resolve import mask_with_report, resolve_mask
from fusecube.masks.vector import vector_mask_with_report

gpd = pytest.importorskip("geopandas")


@pytest.fixture(scope="module")
def scene(small_scene):
    cube = read_cube(small_scene["cube"])
    blocks = gpd.read_file(small_scene["blocks"])
    return cube, blocks, small_scene


def _write(gdf, path):
    gdf.to_file(path)
    return path


def _geotiff(path, data, transform, crs, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data, 1)
    return path


def test_vector_mask_equals_the_scene_paddy_mask(scene):
    cube, _, paths = scene
    mask, report = mask_with_report(str(paths["blocks"]), cube)
    truth = cube[PADDY_MASK].values
    np.testing.assert_array_equal(mask.values, truth)
    assert report.pixels == int(truth.sum())
    # 50 m pixels: 0.0025 km² each; the polygons are the pixel outlines, so areas agree exactly
    assert report.km2 == pytest.approx(report.pixels * 0.0025)
    assert report.polygon_km2 == pytest.approx(report.km2)
    assert report.percent_of_aoi == pytest.approx(100 * truth.mean())
    assert (report.n_invalid, report.n_non_polygon, report.n_null) == (0, 0, 0)


def test_vector_mask_in_another_crs_with_z(scene, tmp_path):
    cube, blocks, paths = scene
    reference, _ = vector_mask_with_report(paths["blocks"], cube.odc.geobox)
    geo = blocks.to_crs("EPSG:4326")
    geo["geometry"] = shapely.force_3d(geo.geometry.values, z=7.0)
    path = _write(geo, tmp_path / "blocks_wgs84_z.geojson")
    mask, report = vector_mask_with_report(path, cube.odc.geobox)
    assert report.had_z and report.source_crs == "EPSG:4326"
    # reprojection moves edges by a fraction of a pixel: only edge pixels may differ
    assert (mask == reference).mean() > 0.98
    assert report.pixels == pytest.approx(int(reference.sum()), rel=0.03)


def test_invalid_geometries_repaired_and_non_polygons_dropped(scene, tmp_path):
    cube, blocks, _ = scene
    x0, y0, x1, y1 = cube.odc.geobox.extent.boundingbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])  # invalid
    line = shapely.LineString([(x0, y0), (x1, y1)])
    point = shapely.Point(cx, cy)
    gdf = gpd.GeoDataFrame({"kind": ["bowtie", "line", "point", "block"]},
                           geometry=[bowtie, line, point, blocks.geometry.iloc[0]],
                           crs=blocks.crs)
    path = _write(gdf, tmp_path / "mixed.gpkg")
    mask, report = vector_mask_with_report(path, cube.odc.geobox)
    assert report.n_features == 4
    assert report.n_invalid == 1
    assert report.n_non_polygon == 2  # the line and the point
    assert report.n_used == 2
    assert any("repaired" in note for note in report.notes)
    # the repaired bow tie covers two triangles: left and right quarters of the AOI
    ny, nx = mask.shape
    assert mask[ny // 2, 1] == 1 and mask[ny // 2, nx - 2] == 1
    assert mask[1, nx // 2] == blocks_mask_value(cube, blocks, 1, nx // 2)


def blocks_mask_value(cube, blocks, row, col):
    one = blocks.iloc[[0]]
    from rasterio import features

    gb = cube.odc.geobox
    burned = features.rasterize(((g, 1) for g in one.geometry), out_shape=gb.shape,
                                transform=gb.affine, fill=0, dtype="uint8")
    return burned[row, col]


def test_nothing_left_after_repair(scene, tmp_path):
    cube, blocks, _ = scene
    x0, y0, x1, y1 = cube.odc.geobox.extent.boundingbox
    gdf = gpd.GeoDataFrame(geometry=[shapely.LineString([(x0, y0), (x1, y1)]),
                                     shapely.Point(x0 + 10, y0 + 10)], crs=blocks.crs)
    path = _write(gdf, tmp_path / "lines.gpkg")
    with pytest.raises(MaskError, match="nothing is left after repair") as info:
        vector_mask_with_report(path, cube.odc.geobox)
    assert str(path) in str(info.value)


def test_no_overlap_names_both_places(scene, tmp_path):
    cube, blocks, _ = scene
    far = blocks.translate(xoff=500_000)
    path = _write(gpd.GeoDataFrame(geometry=far, crs=blocks.crs), tmp_path / "far.gpkg")
    with pytest.raises(MaskError, match="does not overlap") as info:
        vector_mask_with_report(path, cube.odc.geobox)
    assert "far.gpkg" in str(info.value) and "EPSG:32749" in str(info.value)


def test_missing_crs_and_unreadable_files(scene, tmp_path):
    cube, blocks, _ = scene
    shp = _write(blocks[["block_id", "geometry"]], tmp_path / "nocrs.shp")
    shp.with_suffix(".prj").unlink()
    with pytest.raises(MaskError, match="no CRS"):
        vector_mask_with_report(shp, cube.odc.geobox)
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage at all" * 10)
    with pytest.raises(InputFileError, match="junk.gpkg"):
        vector_mask_with_report(junk, cube.odc.geobox)
    with pytest.raises(InputFileError, match="does not exist"):
        resolve_mask(str(tmp_path / "missing.gpkg"), cube)
    with pytest.raises(MaskError, match="unknown format"):
        (tmp_path / "mask.csv").write_text("a,b\n")
        resolve_mask(str(tmp_path / "mask.csv"), cube)


def test_raster_mask_any_crs_read_by_window(scene, tmp_path):
    cube, blocks, _ = scene
    gb = cube.odc.geobox
    # a large 4326 raster (about 10 m pixels) of which the scene is a small part
    geo = blocks.to_crs("EPSG:4326")
    left, bottom, right, top = geo.total_bounds
    res = 0.0001
    transform = Affine(res, 0, left - 0.05, 0, -res, top + 0.05)
    shape = (int((top - bottom + 0.1) / res), int((right - left + 0.1) / res))
    from rasterio import features

    data = features.rasterize(((g, 1) for g in geo.geometry), out_shape=shape,
                              transform=transform, fill=0, dtype="uint8")
    path = _geotiff(tmp_path / "paddy_4326.tif", data, transform, "EPSG:4326", nodata=0)
    mask, report = raster_mask_with_report(path, gb)
    reference = cube[PADDY_MASK].values
    assert (mask == reference).mean() > 0.97
    row, col, height, width = report.window
    assert report.file_shape == shape
    assert report.bytes_read == height * width  # uint8: one byte a pixel, the window only
    assert height * width < 0.5 * shape[0] * shape[1]
    assert report.km2 == pytest.approx(report.pixels * 0.0025)


def test_raster_mask_errors(scene, tmp_path):
    cube, _, _ = scene
    gb = cube.odc.geobox
    ones = np.ones((20, 20), np.uint8)
    far = _geotiff(tmp_path / "far.tif", ones, Affine(0.01, 0, 10.0, 0, -0.01, 50.0), "EPSG:4326")
    with pytest.raises(MaskError, match="does not overlap"):
        raster_mask_with_report(far, gb)
    x0, _, _, y1 = gb.extent.boundingbox
    zeros = _geotiff(tmp_path / "zeros.tif", np.zeros((20, 20), np.uint8),
                     Affine(200, 0, x0 - 500, 0, -200, y1 + 500), "EPSG:32749")
    with pytest.raises(MaskError, match="no positive pixels"):
        raster_mask_with_report(zeros, gb)
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=20, height=20, count=1,
                       dtype="uint8") as dst:
        dst.write(ones, 1)
    with pytest.raises(MaskError, match="no CRS"):
        raster_mask_with_report(nocrs, gb)
    good = _geotiff(tmp_path / "good.tif", np.ones((400, 400), np.uint8),
                    Affine(10, 0, x0 - 100, 0, -10, y1 + 100), "EPSG:32749")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(InputFileError, match="truncated.tif"):
        raster_mask_with_report(truncated, gb)


def test_pixel_areas_geographic_and_projected():
    # one 1° x 1° cell at the equator: R² · Δλ · (sin 1° - sin 0°)
    gb = GeoBox((1, 1), Affine(1.0, 0, 0.0, 0, -1.0, 1.0), "EPSG:4326")
    expected = 6371008.8**2 * np.radians(1.0) * np.sin(np.radians(1.0)) / 1e6
    assert pixel_areas_km2(gb)[0, 0] == pytest.approx(expected, rel=1e-12)
    utm = GeoBox((2, 3), Affine(50, 0, 0, 0, -50, 0), "EPSG:32749")
    np.testing.assert_allclose(pixel_areas_km2(utm), 0.0025)


def test_cube_and_none_specs(scene):
    cube, _, _ = scene
    mask, report = mask_with_report("cube", cube)
    assert report.pixels == int(cube[PADDY_MASK].sum())
    assert resolve_mask("none", cube) is None
    with pytest.raises(MaskError, match="no paddy_mask"):
        resolve_mask("cube", cube.drop_vars(PADDY_MASK))


# ----------------------------------------------------------------------------- real data
def demak_geobox() -> GeoBox:
    from fusecube.sources.synthetic.scene import SceneConfig

    return SceneConfig().geobox  # 671 x 893 pixels of 50 m, EPSG:32749, around Demak


@pytest.mark.realdata
def test_klambu_glapan_blocks_on_demak(real_data):
    path = real_data / "klambu_glapan" / "klambu-glapan.shp"
    raw = gpd.read_file(path)
    mask, report = vector_mask_with_report(path, demak_geobox())
    assert report.n_features == len(raw) == 1043
    assert report.had_z and report.source_crs == "EPSG:4326"
    # only the blocks near the AOI are read (bbox filter); their invalid ones are repaired
    near = raw.cx[110.5:111.0, -7.2:-6.6]
    assert 0 < report.n_read <= len(near)
    assert report.n_invalid > 0 and report.n_used == report.n_read
    # rasterised area agrees with the polygon area clipped to the AOI within 1 %
    assert report.km2 == pytest.approx(report.polygon_km2, rel=0.01)
    assert report.pixels == int(mask.sum()) and 5 < report.percent_of_aoi < 60


@pytest.mark.realdata
def test_klambu_glapan_whole_extent_counts_every_invalid_polygon(real_data):
    path = real_data / "klambu_glapan" / "klambu-glapan.shp"
    raw = gpd.read_file(path)
    left, bottom, right, top = raw.total_bounds
    gb = GeoBox.from_bbox((left - 0.01, bottom - 0.01, right + 0.01, top + 0.01), "EPSG:4326",
                          resolution=0.00045)
    mask, report = vector_mask_with_report(path, gb)
    assert report.n_read == report.n_used == 1043
    assert report.n_invalid == int((~raw.is_valid).sum()) == 82
    # geographic grid: km² from the latitude-dependent cell areas, close to the UTM area
    utm_km2 = shapely.area(shapely.union_all(
        shapely.make_valid(raw.to_crs("EPSG:32749").geometry.values))) / 1e6
    assert report.km2 == pytest.approx(utm_km2, rel=0.02)


@pytest.mark.realdata
def test_java_mask_read_by_window(real_data):
    path = real_data / "java_mask" / "java_island_mask.tif"
    gb = demak_geobox()
    mask, report = raster_mask_with_report(path, gb)
    height, width = report.file_shape
    assert (height, width) == (8475, 24870)
    _, _, win_h, win_w = report.window
    # the window is the AOI plus a margin: about 1000 x 700 of 24870 x 8475 pixels
    assert report.bytes_read == win_h * win_w < 0.01 * height * width
    # Demak has the Java Sea to the north: land but not all land
    assert 50 < report.percent_of_aoi < 99
    # every irrigation block is on land
    blocks, _ = vector_mask_with_report(real_data / "klambu_glapan" / "klambu-glapan.shp", gb)
    on_land = mask[blocks > 0].mean()
    assert on_land > 0.99


@pytest.mark.realdata
def test_java_mask_outside_java_is_an_error(real_data):
    path = real_data / "java_mask" / "java_island_mask.tif"
    sea = GeoBox.from_bbox((108.0, -5.3, 108.2, -5.1), "EPSG:4326", resolution=0.0005)
    with pytest.raises(MaskError, match="no positive pixels"):
        raster_mask_with_report(path, sea)
    away = GeoBox.from_bbox((120.0, -5.3, 120.2, -5.1), "EPSG:4326", resolution=0.0005)
    with pytest.raises(MaskError, match="does not overlap"):
        raster_mask_with_report(path, away)
