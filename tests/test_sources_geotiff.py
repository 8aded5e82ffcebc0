"""GeoTIFF stack source: GEE-like period exports and per-date files → cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from fusecube.cube import NDVI, NDVI_QUALITY, VH, VV, read_cube, validate_cube
from fusecube.errors import ConfigError, FusecubeWarning, GridError, InputFileError
from fusecube.grid.geobox import resolve_geobox
from fusecube.sources.geotiff import import_geotiff, read_dates_file, read_geotiff_stack

# a GEE-like export grid: EPSG:4326, 0.0005 deg (~55 m) pixels near Demak
NATIVE = GeoBox.from_bbox((110.60, -6.95, 110.64, -6.92), "EPSG:4326", resolution=0.0005)
REAL_NDVI = Path(__file__).parents[2] / "shared/data/real/sen2rts/extdata/sampleroi/NDVI"


def truth(period: int) -> dict[str, np.ndarray]:
    """Smooth fields (so bilinear reprojection is near exact), different per period."""
    yy, xx = np.mgrid[0:NATIVE.shape.y, 0:NATIVE.shape.x].astype(np.float32)
    vv_db = -12 + 0.05 * xx - 0.02 * yy + 0.3 * period
    vh_db = -19 + 0.03 * yy + 0.2 * period
    ndvi = 0.2 + 0.004 * xx + 0.05 * period
    return {"vv_db": vv_db, "vh_db": vh_db, "ndvi": np.clip(ndvi, -1, 1)}


def write_period(path: Path, period: int, *, crs="EPSG:4326", transform=None,
                 descriptions=("VV", "VH", "NDVI")):
    fields = truth(period)
    data = np.stack([fields["vv_db"], fields["vh_db"], fields["ndvi"]]).astype(np.float32)
    data[:, :5, :5] = -np.inf  # GEE masked pixels exported as -inf
    data[2, 10:15, 20:30] = -9999.0  # and as the declared nodata
    with rasterio.open(path, "w", driver="GTiff", width=NATIVE.shape.x, height=NATIVE.shape.y,
                       count=3, dtype="float32", crs=crs, nodata=-9999.0,
                       transform=transform or NATIVE.affine, tiled=True, blockxsize=32,
                       blockysize=32) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions


@pytest.fixture
def stack(tmp_path):
    folder = tmp_path / "gee"
    folder.mkdir()
    for period in range(1, 7):
        write_period(folder / f"period_{period:02d}.tif", period)
    return folder


def test_native_grid_is_exact_with_masks_as_nan(stack):
    ds = read_geotiff_stack(stack, start="2023-11-01", period_days=12, geobox=NATIVE)
    validate_cube(ds)
    for p in range(6):
        fields = truth(p + 1)
        np.testing.assert_allclose(ds[VV][p][5:, 5:], 10 ** (fields["vv_db"][5:, 5:] / 10),
                                   rtol=1e-5)
        np.testing.assert_allclose(ds[VH][p][5:, 5:], 10 ** (fields["vh_db"][5:, 5:] / 10),
                                   rtol=1e-5)
        assert ds[VV][p][:5, :5].isnull().all() and ds[NDVI][p][10:15, 20:30].isnull().all()
        assert int(ds[NDVI][p].isnull().sum()) == 25 + 50
    assert not np.isinf(ds[VV]).any()
    assert float(ds[NDVI_QUALITY][0, 12, 25]) == 0 and float(ds[NDVI_QUALITY][0, 30, 30]) == 1


def test_period_dates_cross_new_year_exactly(stack):
    ds = read_geotiff_stack(stack, start="2023-11-01", period_days=12, geobox=NATIVE)
    starts = [str(t)[:10] for t in ds.period_start.values]
    assert starts == ["2023-11-01", "2023-11-13", "2023-11-25", "2023-12-07", "2023-12-19",
                      "2023-12-31"]
    assert str(ds.time.values[5])[:16] == "2024-01-06T00:00"  # centre in the new year
    # a late-year start over a leap day
    ds = read_geotiff_stack(stack, start="2024-02-20", period_days=5, geobox=NATIVE)
    assert [str(t)[:10] for t in ds.period_start.values][:3] == ["2024-02-20", "2024-02-25",
                                                                 "2024-03-01"]


def test_dates_file(stack, tmp_path):
    dates = tmp_path / "dates.csv"
    dates.write_text("file,start\n" + "".join(
        f"period_{i:02d}.tif,{d}\n" for i, d in enumerate(
            ["2024-12-02", "2024-12-14", "2024-12-26", "2025-01-07", "2025-01-19",
             "2025-01-31"], start=1)))
    ds = read_geotiff_stack(stack, dates_file=dates, period_days=12, geobox=NATIVE)
    assert str(ds.period_start.values[3])[:10] == "2025-01-07"
    assert len(read_dates_file(dates)) == 6
    short = tmp_path / "short.txt"
    short.write_text("2024-12-02\n2024-12-14\n")
    with pytest.raises(InputFileError, match="lists 2 periods but there is a file for period 6"):
        read_geotiff_stack(stack, dates_file=short, geobox=NATIVE)
    with pytest.raises(ConfigError, match="--start"):
        read_geotiff_stack(stack, geobox=NATIVE)


def test_reprojected_to_utm_keeps_values_and_masks(stack):
    gbox = resolve_geobox((110.605, -6.945, 110.635, -6.925), resolution=60)
    assert gbox.crs.epsg == 32749
    ds = read_geotiff_stack(stack, start="2023-11-01", geobox=gbox)
    assert ds.odc.geobox == gbox
    # compare with the truth sampled at the UTM pixel centres (bilinear of a linear field)
    lon, lat = _centres_lonlat(gbox)
    col = (lon - NATIVE.affine.c) / NATIVE.affine.a - 0.5
    row = (lat - NATIVE.affine.f) / NATIVE.affine.e - 0.5
    expected_db = -12 + 0.05 * col - 0.02 * row + 0.3 * 1
    got_db = 10 * np.log10(ds[VV][0].values)
    inside = np.isfinite(got_db)
    assert inside.mean() > 0.95
    np.testing.assert_allclose(got_db[inside], expected_db[inside], atol=0.02)


def _centres_lonlat(gbox: GeoBox):
    from pyproj import Transformer

    ys, xs = np.meshgrid(gbox.coords["y"].values, gbox.coords["x"].values, indexing="ij")
    return Transformer.from_crs(str(gbox.crs), "EPSG:4326", always_xy=True).transform(xs, ys)


def test_default_grid_is_utm_at_native_size(stack, tmp_path):
    out = import_geotiff(stack, tmp_path / "cube.zarr", start="2023-11-01")
    ds = read_cube(out)
    assert ds.odc.geobox.crs.epsg == 32749 and ds.odc.geobox.resolution.x == 56  # 0.0005 deg
    validate_cube(ds)


def test_missing_period_is_nan_with_a_warning(stack):
    (stack / "period_04.tif").unlink()
    with pytest.warns(FusecubeWarning, match=r"period\(s\) \[4\]"):
        ds = read_geotiff_stack(stack, start="2023-11-01", geobox=NATIVE)
    assert ds.sizes["time"] == 6 and ds[NDVI][3].isnull().all()
    assert list(ds.n_files.values) == [1, 1, 1, 0, 1, 1]
    assert ds[NDVI][4].notnull().any()


def test_corrupt_file_names_the_file(stack):
    path = stack / "period_03.tif"
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(InputFileError, match="period_03.tif.*corrupt"):
        read_geotiff_stack(stack, start="2023-11-01", geobox=NATIVE)


def test_wrong_crs_is_reported(stack):
    # UTM numbers written with an EPSG:4326 label: lands nowhere near the grid
    from affine import Affine

    write_period(stack / "period_02.tif", 2, crs="EPSG:4326",
                 transform=Affine(55, 0, 458000, 0, -55, 9238000))
    with pytest.raises(GridError, match="period_02.tif.*does not overlap"):
        read_geotiff_stack(stack, start="2023-11-01", geobox=NATIVE)
    write_period(stack / "period_02.tif", 2, crs=None)
    with pytest.raises(GridError, match="period_02.tif has no CRS"):
        read_geotiff_stack(stack, start="2023-11-01", geobox=NATIVE)


def test_band_layout_mismatch(stack):
    with pytest.raises(InputFileError, match="has 3 band"):
        write_period(stack / "period_01.tif", 1, descriptions=None)
        read_geotiff_stack(stack, start="2023-11-01", geobox=NATIVE, bands=("ndvi",))


def test_per_date_files_composite_into_periods(tmp_path):
    folder = tmp_path / "dated"
    folder.mkdir()
    values = {"20231230": 0.2, "20240102": 0.4, "20240104": 0.5, "20240115": 0.7}
    for date, value in values.items():
        with rasterio.open(folder / f"S2_{date}_NDVI.tif", "w", driver="GTiff", width=8, height=8,
                           count=1, dtype="int16", crs="EPSG:32749", nodata=-32768,
                           transform=GeoBox.from_bbox((458000, 9238000, 458080, 9238080),
                                                      "EPSG:32749", resolution=10).affine) as dst:
            band = np.full((8, 8), value * 1e4, np.int16)
            band[0, 0] = -32768
            dst.write(band, 1)
    ds = read_geotiff_stack(folder, start="2023-12-29", period_days=10, bands=("ndvi",))
    assert [str(t)[:10] for t in ds.period_start.values] == ["2023-12-29", "2024-01-08"]
    np.testing.assert_allclose(ds[NDVI][:, 3, 3], [0.4, 0.7], atol=1e-6)  # median of .2 .4 .5
    assert ds[NDVI][:, 0, 0].isnull().all()
    assert ds[VV].isnull().all()  # no radar band in these files


@pytest.mark.realdata
def test_real_sen2rts_ndvi_stack():
    if not REAL_NDVI.exists():
        pytest.skip(f"real data not present at {REAL_NDVI}")
    ds = read_geotiff_stack(REAL_NDVI, period_days=10, bands=("ndvi",), resolution=10)
    files = sorted(REAL_NDVI.glob("*.tif"))
    assert int(ds.n_files.sum()) == len(files) == 60
    import re

    first_date = min(re.search(r"_(\d{8})_", f.name).group(1) for f in files)
    assert str(ds.period_start.values[0])[:10].replace("-", "") == first_date
    assert ds.odc.geobox.crs.epsg == 32632
    valid = ds[NDVI].values[np.isfinite(ds[NDVI].values)]
    assert valid.size > 0 and valid.min() >= -1 and valid.max() <= 1
    # one file, native grid: the value is the stored int16 x 1e-4
    with rasterio.open(files[0]) as src:
        raw = src.read(1)
        gbox = GeoBox(src.shape, src.transform, "EPSG:32632")
    first = read_geotiff_stack(REAL_NDVI, pattern=files[0].name, bands=("ndvi",), geobox=gbox)
    expected = np.where(raw == -32768, np.nan, raw * 1e-4)
    np.testing.assert_allclose(first[NDVI][0], expected, atol=1e-6)


def test_only_the_grid_window_of_a_big_remote_file_is_read(tmp_path):
    from fusecube.sources.geotiff import read_file
    from fusecube.testing import LoopbackServer

    # a 2048 x 2048 px EPSG:4326 export (~0.9 deg); the grid is a 3 km UTM box inside it
    big = GeoBox.from_bbox((110.0, -7.5, 110.9216, -6.5784), "EPSG:4326", resolution=0.00045)
    yy, xx = np.mgrid[0:big.shape.y, 0:big.shape.x].astype(np.float32)
    rng = np.random.default_rng(1)
    data = np.stack([-12 + 0.001 * xx, -18 + 0.001 * yy, 0.3 + 0.0001 * xx]).astype(np.float32)
    data += rng.normal(0, 0.01, data.shape).astype(np.float32)  # compress like real data
    path = tmp_path / "period_01.tif"
    with rasterio.open(path, "w", driver="GTiff", width=big.shape.x, height=big.shape.y,
                       count=3, dtype="float32", crs="EPSG:4326", transform=big.affine,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data)
    gbox = resolve_geobox((110.40, -7.05, 110.427, -7.023), resolution=30)
    with LoopbackServer(tmp_path) as srv:
        remote = read_file(srv.file_url(path.name), gbox, ("vv_db", "vh_db", "ndvi"))
        sent = srv.total_bytes
    local = read_file(path, gbox, ("vv_db", "vh_db", "ndvi"))
    for role in ("vv", "vh", "ndvi"):
        np.testing.assert_array_equal(remote[role], local[role])
        assert np.isfinite(local[role]).all()
    size = path.stat().st_size
    assert sent < 0.05 * size, (sent, size)  # a few tiles, not the file
