"""Field series from a table: ``fusecube fuse series`` (radar-guided Whittaker per series)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fusecube.cli.app import app, main
from fusecube.errors import CubeSchemaError, InputFileError
from fusecube.fusion.guided.series import fuse_series, read_series_table

FIELD_CSV = "fusets_bids/mogpr_input.csv"


def _fields(tmp_path, *, hide=("2021-05-01", "2021-07-15"), seed=0):
    """Two fields: a crop bump seen by radar every 6 days and by NDVI every 5 days (cloudy)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2021-01-01", "2021-12-31", freq="D")
    day = np.arange(dates.size, dtype=float)
    rows = []
    for field, centre in (("north", 170.0), ("south", 200.0)):
        bump = np.exp(-0.5 * ((day - centre) / 35.0) ** 2)
        ndvi = 0.2 + 0.6 * bump
        radar = 0.1 + 0.35 * bump + rng.normal(0, 0.01, day.size)
        seen = (np.arange(day.size) % 5 == 0) & (rng.random(day.size) > 0.3)
        radar_seen = np.arange(day.size) % 6 == 0
        for k, stamp in enumerate(dates):
            if seen[k] or radar_seen[k]:
                rows.append({"field": field, "date": stamp.strftime("%Y-%m-%d"),
                             "NDVI": ndvi[k] if seen[k] else np.nan,
                             "RVI_DESC": radar[k] if radar_seen[k] else np.nan, "truth": ndvi[k]})
    frame = pd.DataFrame(rows)
    hidden = (frame["date"] >= hide[0]) & (frame["date"] <= hide[1]) & frame["NDVI"].notna()
    cloudy = frame.assign(NDVI=frame["NDVI"].where(~hidden))
    path = tmp_path / "fields.csv"
    cloudy.drop(columns="truth").to_csv(path, index=False)
    return path, frame, hidden


def test_guided_fill_beats_interpolation_through_a_cloudy_season(tmp_path):
    path, truth, hidden = _fields(tmp_path)
    series = read_series_table(path, id_column="field")
    assert list(series.ids) == ["north", "south"]
    fused = fuse_series(series)
    merged = truth.assign(date=pd.to_datetime(truth["date"])).merge(
        fused, left_on=["field", "date"], right_on=["id", "date"])
    at_hidden = merged[hidden.to_numpy()]
    assert len(at_hidden) > 10
    error = np.sqrt(np.mean((at_hidden["ndvi_fused"] - at_hidden["truth"]) ** 2))
    # what linear interpolation of the remaining observations gives at the same dates
    linear = []
    for _, rows in merged.groupby("field"):
        seen = rows[rows["ndvi"].notna()]
        days = rows["date"].astype("int64")
        linear.append(pd.Series(np.interp(days, seen["date"].astype("int64"), seen["ndvi"]),
                                index=rows.index))
    linear = pd.concat(linear).loc[at_hidden.index]
    linear_error = np.sqrt(np.mean((linear - at_hidden["truth"]) ** 2))
    assert error < 0.5 * linear_error, (error, linear_error)
    observed = fused["ndvi"].notna()
    np.testing.assert_array_equal(fused.loc[observed, "ndvi_fused"].to_numpy(np.float32),
                                  fused.loc[observed, "ndvi"].to_numpy(np.float32))
    assert fused["ndvi_fused"].between(-1, 1).all()
    assert (fused["coef"] > 0).all()  # radar rises with the crop in both fields


def test_series_are_filled_independently(tmp_path):
    path, _, _ = _fields(tmp_path)
    a = fuse_series(read_series_table(path, id_column="field"))
    frame = pd.read_csv(path)
    north = frame["field"] == "north"
    frame.loc[north, "NDVI"] = frame.loc[north, "NDVI"] * 0.5  # change one field only
    frame.to_csv(tmp_path / "changed.csv", index=False)
    b = fuse_series(read_series_table(tmp_path / "changed.csv", id_column="field"))
    south_a, south_b = a[a["id"] == "south"], b[b["id"] == "south"]
    pd.testing.assert_frame_equal(south_a.reset_index(drop=True), south_b.reset_index(drop=True))
    assert not np.allclose(a.loc[a["id"] == "north", "ndvi_fused"], b.loc[b["id"] == "north", "ndvi_fused"])


@pytest.mark.parametrize(("edit", "error", "match"), [
    (lambda f: f.drop(columns="RVI_DESC"), CubeSchemaError, "no column 'RVI_DESC'"),
    (lambda f: pd.concat([f, f.head(1)]), CubeSchemaError, "appears more than once"),
    (lambda f: f.assign(NDVI=f["NDVI"] * 10000), CubeSchemaError, "looks scaled|look scaled"),
    (lambda f: f.assign(date="not a date"), CubeSchemaError, "not dates"),
])
def test_bad_tables_get_specific_errors(tmp_path, edit, error, match):
    path, _, _ = _fields(tmp_path)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(error, match=match):
        fuse_series(read_series_table(path, id_column="field"))


def test_too_few_observations_and_missing_file(tmp_path):
    path, _, _ = _fields(tmp_path, hide=("2021-01-01", "2021-12-10"))
    with pytest.raises(CubeSchemaError, match="fewer than 4 NDVI observations"):
        fuse_series(read_series_table(path, id_column="field"))
    with pytest.raises(InputFileError, match="does not exist"):
        read_series_table(tmp_path / "nope.csv")


def test_cli_writes_csv_and_plot_and_fails_cleanly(tmp_path, capsys):
    path, _, _ = _fields(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["fuse", "series", str(path), "--id", "field"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "fields_fused.csv")
    assert set(written["id"]) == {"north", "south"} and written["ndvi_fused"].notna().all()
    assert (tmp_path / "fields_fused.png").stat().st_size > 10_000
    before = (tmp_path / "fields_fused.csv").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["fuse", "series", str(path), "--id", "field", "--radar", "VH"])
    assert info.value.code not in (0, None)
    stderr = capsys.readouterr().err
    assert "no column 'VH'" in stderr and "Traceback" not in stderr
    assert (tmp_path / "fields_fused.csv").read_bytes() == before  # earlier output kept


@pytest.mark.realdata
def test_real_field_series(real_data, tmp_path):
    path = real_data / FIELD_CSV
    series = read_series_table(path)
    assert series.ndvi.shape == (1, 145) and int(np.isfinite(series.ndvi).sum()) == 33
    fused = fuse_series(series)
    assert fused["ndvi_fused"].notna().all() and fused["ndvi_fused"].between(-1, 1).all()
    # the crop's peak (May, NDVI 0.77 observed) is kept, winter stays low
    by_month = fused.set_index("date")["ndvi_fused"].resample("MS").mean()
    assert by_month.idxmax().month in (4, 5, 6) and by_month.max() > 0.6
    assert by_month.iloc[0] < 0.4
