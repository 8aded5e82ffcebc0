"""Per-irrigation-block rice calendar table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from fusecube.errors import CubeSchemaError, InputFileError, MaskError
from fusecube.grid.periods import from_days, to_days
from fusecube.products.block_calendar import (
    align_to_block_calendar,
    block_calendar_table,
    write_block_calendar_csv,
)
from fusecube.stages.phenology import season_coords

gpd = pytest.importorskip("geopandas")
from shapely.geometry import box  # noqa: E402

RES, X0, Y1 = 50.0, 400000.0, 9200000.0
GEOBOX = GeoBox((4, 6), Affine(RES, 0, X0, 0, -RES, Y1), "EPSG:32749")


def _pheno(planting_days: np.ndarray, count: np.ndarray) -> xr.Dataset:
    """A (season=6, y=4, x=6) phenology with the given planting days in slot 0."""
    coords = season_coords([2023, 2024], 3)
    shape = (6, 4, 6)
    planting = np.full(shape, np.nan)
    planting[0] = planting_days
    pos = planting + 60
    data = {"planting": ((("season", "y", "x")), from_days(planting)),
            "pos": ((("season", "y", "x")), from_days(pos)),
            "length": (("season", "y", "x"), np.where(np.isfinite(planting), 80.0, np.nan)),
            "season_count": (("year", "y", "x"), count)}
    return xr.Dataset(data, coords=coords)


@pytest.fixture
def blocks_file(tmp_path):
    # block "A" covers columns 0-2, block "B" columns 3-5 (all four rows each)
    polys = [box(X0, Y1 - 4 * RES, X0 + 3 * RES, Y1), box(X0 + 3 * RES, Y1 - 4 * RES, X0 + 6 * RES, Y1)]
    path = tmp_path / "blocks.gpkg"
    gpd.GeoDataFrame({"name": ["A", "B"]}, geometry=polys, crs="EPSG:32749").to_file(path)
    return path


def test_block_medians_quartiles_and_intensity(blocks_file):
    start = to_days(np.array(["2023-11-01"], dtype="datetime64[ns]"))[0]
    planting = np.full((4, 6), np.nan)
    planting[:, :3] = start + np.arange(12).reshape(4, 3)  # block A: days 0..11 after 1 Nov
    planting[:2, 3:] = start + 30  # block B: half its pixels planted on day 30
    count = np.full((2, 4, 6), 2.0)
    count[:, 2:, 3:] = np.nan  # half of block B is not paddy: not counted
    count[1, :, :3] = 3.0
    table = block_calendar_table(_pheno(planting, count), blocks_file, GEOBOX, id_column="name")
    first = table[table["season"] == 0].set_index("block_id")
    assert first.loc["A", "n_paddy_pixels"] == 12 and first.loc["A", "n_with_season"] == 12
    assert first.loc["B", "n_paddy_pixels"] == 6 and first.loc["B", "n_with_season"] == 6
    # median of 0..11 = 5.5 days → rounded to whole days (banker's rounding: 6)
    assert first.loc["A", "planting_median"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=6)
    assert first.loc["A", "planting_p25"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=3)
    assert first.loc["A", "planting_p75"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=8)
    assert first.loc["B", "pos_median"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=90)
    assert first.loc["A", "length_median"] == 80.0
    assert first.loc["A", "season_label"] == "2023/24 season1"
    assert first.loc["A", "intensity_mean"] == 2.0
    fourth = table[table["season"] == 3].set_index("block_id")  # 2024/25 season1
    assert fourth.loc["A", "intensity_mean"] == 3.0 and fourth.loc["B", "intensity_mean"] == 2.0
    assert fourth.loc["A", "n_with_season"] == 0 and pd.isna(fourth.loc["A", "planting_median"])
    assert len(table) == 2 * 6


def test_missed_first_season_is_re_slotted_onto_the_block_calendar(blocks_file):
    start = to_days(np.array(["2023-11-01"], dtype="datetime64[ns]"))[0]
    pheno = _pheno(np.full((4, 6), np.nan), np.full((2, 4, 6), 2.0))
    pos = np.full((6, 4, 6), np.nan)
    pos[0, :2], pos[1, :2] = start + 70, start + 190  # rows 0-1: both seasons of the year
    pos[0, 2:] = start + 190  # rows 2-3 missed the first season: slot 0 holds the second
    pheno["pos"] = (("season", "y", "x"), from_days(pos))
    pheno["season_count"][0, 2:] = 1.0
    table = block_calendar_table(pheno, blocks_file, GEOBOX, id_column="name")
    a = table[table["block_id"] == "A"].set_index("season")
    assert a.loc[0, "n_with_season"] == 6 and a.loc[1, "n_with_season"] == 12
    assert a.loc[0, "pos_median"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=70)
    assert a.loc[0, "pos_p75"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=70)
    assert a.loc[1, "pos_p25"] == pd.Timestamp("2023-11-01") + pd.Timedelta(days=190)


def test_alignment_keeps_time_order_and_drops_nothing_it_can_place():
    # one block; pixel 0 is the reference (3 seasons); pixel 1 has seasons near slots 2 and 3
    pos = np.array([[10.0, 12.0], [130.0, 250.0], [250.0, np.nan]])
    counts = np.array([[3.0, 2.0]])
    out = align_to_block_calendar({"pos": pos}, np.array([1, 1]), counts, np.zeros(3, int))
    np.testing.assert_array_equal(out["pos"][:, 0], [10.0, 130.0, 250.0])
    # 12 is nearest slot 0; 250 nearest slot 2: order kept, slot 1 left empty
    np.testing.assert_array_equal(out["pos"][:, 1], [12.0, np.nan, 250.0])
    assert np.isfinite(out["pos"]).sum() == np.isfinite(pos).sum()


def test_csv_round_trip(blocks_file, tmp_path):
    planting = np.full((4, 6), 19700.0)
    table = block_calendar_table(_pheno(planting, np.full((2, 4, 6), 1.0)), blocks_file, GEOBOX)
    assert sorted(table["block_id"].unique()) == [1, 2]  # no block_id column: positions
    path = write_block_calendar_csv(table, tmp_path / "out" / "calendar.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(table.columns)
    assert back.loc[0, "planting_median"] == "2023-12-09"  # day 19700 since 1970-01-01


def test_errors_name_the_problem(blocks_file, tmp_path):
    pheno = _pheno(np.full((4, 6), 19700.0), np.full((2, 4, 6), 1.0))
    with pytest.raises(InputFileError, match="does not exist"):
        block_calendar_table(pheno, tmp_path / "missing.gpkg", GEOBOX)
    with pytest.raises(CubeSchemaError, match="does not match"):
        block_calendar_table(pheno.isel(x=slice(0, 5)), blocks_file, GEOBOX)
    with pytest.raises(MaskError, match="no column"):
        block_calendar_table(pheno, blocks_file, GEOBOX, id_column="petak")
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"name": ["Z"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:32749").to_file(far)
    with pytest.raises(MaskError, match="No analysed"):
        block_calendar_table(pheno, far, GEOBOX)


def test_synthetic_blocks_share_one_calendar(small_scene):
    """In the synthetic scene a block shares its calendar: true planting spreads < 15 days."""
    from fusecube.cube import read_cube

    truth = read_cube(small_scene["truth"]).load()
    pheno = xr.Dataset({"planting": truth["true_planting"].rename("planting"),
                        "pos": truth["true_pos"],
                        "season_count": truth["true_season_count"]}).where(truth["paddy_mask"] > 0)
    pheno["season_count"] = pheno["season_count"].where(truth["paddy_mask"] > 0)
    table = block_calendar_table(pheno, small_scene["blocks"], truth.odc.geobox)
    full = table[table["share_with_season"] == 1.0]
    assert len(full) > 0
    spread = (full["planting_p75"] - full["planting_p25"]).dt.days
    assert spread.max() < 15  # jitter 1.5 d + within-block drift: far below a season
    assert set(table["block_id"]) <= set(gpd.read_file(small_scene["blocks"])["block_id"])


@pytest.mark.realdata
def test_klambu_glapan_tertiary_blocks(real_data, tmp_path):
    """The real irrigation blocks of Klambu-Glapan (PolygonZ, EPSG:4326) on a 200 m UTM grid."""
    shp = real_data / "klambu_glapan" / "klambu-glapan.shp"
    if not shp.exists():
        pytest.skip(f"{shp} not present")
    blocks = gpd.read_file(shp)
    tertiary = blocks[blocks["k_aset"] == "F41"]  # petak tersier; the rest are roads
    path = tmp_path / "tertiary.gpkg"
    tertiary.to_file(path)
    utm = tertiary.to_crs("EPSG:32749")
    x0, y0, x1, y1 = utm.total_bounds
    res = 200.0
    geobox = GeoBox((int((y1 - y0) // res) + 1, int((x1 - x0) // res) + 1),
                    Affine(res, 0, x0, 0, -res, y1), "EPSG:32749")
    ny, nx = geobox.shape
    coords = season_coords([2023], 3)
    planting = np.full((3, ny, nx), np.nan)
    planting[0] = 19700.0
    pheno = xr.Dataset({"planting": (("season", "y", "x"), from_days(planting)),
                        "pos": (("season", "y", "x"), from_days(planting + 60)),
                        "season_count": (("year", "y", "x"), np.ones((1, ny, nx)))},
                       coords=coords)
    table = block_calendar_table(pheno, path, geobox, id_column="norec")
    first = table[table["season"] == 0]
    assert len(first) >= 0.8 * len(tertiary)  # blocks smaller than a pixel may get none
    assert (first["planting_median"] == pd.Timestamp(from_days(np.array([19700.0]))[0])).all()
    # pixel counts add up to the blocks' area (pixel centres inside; edges cancel on average)
    counted_km2 = first["n_paddy_pixels"].sum() * res * res / 1e6
    import shapely

    area_km2 = shapely.union_all(shapely.make_valid(utm.geometry.values)).area / 1e6
    assert abs(counted_km2 - area_km2) / area_km2 < 0.1
