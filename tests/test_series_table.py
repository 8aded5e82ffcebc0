"""``fusecube fuse series`` on tables as users have them: series without radar, Parquet."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from fusecube.cli.app import main
from fusecube.errors import CubeSchemaError, MissingDependencyError
from fusecube.fusion.guided.series_table import fuse_series_table


def _table(tmp_path, *, without_radar=("east", "west")):
    """Four fields, NDVI every 5 days, radar every 6 days except on the fields ``without_radar``."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2021-01-01", "2021-12-31", freq="D")
    day = np.arange(dates.size, dtype=float)
    rows = []
    for field, centre in (("north", 150.0), ("south", 200.0), ("east", 180.0), ("west", 220.0)):
        bump = np.exp(-0.5 * ((day - centre) / 35.0) ** 2)
        for k in np.flatnonzero((day % 5 == 0) | (day % 6 == 0)):
            radar = 0.1 + 0.35 * bump[k] + rng.normal(0, 0.01) if k % 6 == 0 else np.nan
            rows.append({"field": field, "date": dates[k].strftime("%Y-%m-%d"),
                         "NDVI": 0.2 + 0.6 * bump[k] if k % 5 == 0 else np.nan,
                         "RVI_DESC": np.nan if field in without_radar else radar})
    path = tmp_path / "fields.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_series_without_radar_are_skipped_and_named(tmp_path, capsys):
    path = _table(tmp_path)
    result = fuse_series_table(path, id_column="field")
    assert result.skipped == ["east", "west"]
    assert set(result.fused["id"]) == {"north", "south"} and result.fused["ndvi_fused"].notna().all()
    assert any("skipped 2 series without radar: east, west" in line for line in result.lines)
    assert set(pd.read_csv(result.path)["id"]) == {"north", "south"}
    with pytest.raises(SystemExit) as info:
        main(["fuse", "series", str(path), "--id", "field", "--no-plot"])
    assert info.value.code == 0
    assert "east, west" in capsys.readouterr().out


def test_a_table_where_no_series_has_radar_is_refused(tmp_path, capsys):
    path = _table(tmp_path, without_radar=("north", "south", "east", "west"))
    with pytest.raises(CubeSchemaError, match="No series .* has a radar value"):
        fuse_series_table(path, id_column="field")
    with pytest.raises(SystemExit) as info:
        main(["fuse", "series", str(path), "--id", "field", "--no-plot"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--radar" in err and "Traceback" not in err


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")),
                    reason="a Parquet engine is installed")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path, capsys):
    path = tmp_path / "fields.parquet"
    path.write_bytes(b"PAR1")  # never read: the check comes first
    with pytest.raises(MissingDependencyError, match="pip install pyarrow"):
        fuse_series_table(path, id_column="field")
    with pytest.raises(SystemExit) as info:
        main(["fuse", "series", str(path), "--id", "field"])
    assert info.value.code == 2
    assert "pip install pyarrow" in capsys.readouterr().err
