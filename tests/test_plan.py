"""``fusecube plan``: estimates from metadata and calibrated costs, before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fusecube.config import RunConfig, StacSource, SyntheticSource
from fusecube.evaluate.selection import validation_pixels
from fusecube.runner.calibration import (
    Costs,
    calibrate,
    calibration_path,
    load_costs,
    train_pixels,
)
from fusecube.runner.memory import BASE_OVERHEAD, BYTES_PER_PIXEL_PERIOD, MB, block_edge_for
from fusecube.runner.plan import plan_fetch, plan_run


@pytest.fixture
def calibration_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache" / "calibration.json"
    monkeypatch.setenv("FUSECUBE_CALIBRATION", str(path))
    return path


def test_plan_of_a_synthetic_run_follows_the_memory_model_and_costs(calibration_file):
    assert calibration_path() == calibration_file
    assert not load_costs().calibrated  # nothing stored: built-in defaults
    config = RunConfig(source=SyntheticSource(width=671, height=893), gapfill="ridge",
                       memory_limit="2GB", block_size=256)
    one = plan_run(config, workers=1)
    two = plan_run(config, workers=2)
    assert (one.width, one.height, one.periods, one.pixels) == (671, 893, 62, 671 * 893)
    edge = block_edge_for(2 * 10**9, 62, 256)
    assert one.block_edge == edge
    assert one.blocks == math.ceil(671 / edge) * math.ceil(893 / edge)
    assert one.peak_memory_per_worker == BASE_OVERHEAD + edge * edge * 62 * BYTES_PER_PIXEL_PERIOD
    # two workers: half the memory each, so smaller blocks; the blocks stage runs in parallel
    assert two.memory_limit_per_worker == 10**9 and two.block_edge < one.block_edge
    assert two.peak_memory_per_worker < one.peak_memory_per_worker <= 2 * 10**9
    assert two.stages["blocks"] < one.stages["blocks"]
    assert two.stages["validate"] == one.stages["validate"]  # not parallel
    assert set(one.stages) == {"source", "prepare", "validate", "blocks", "products", "other"}
    assert not one.calibrated and one.read_bytes > 0 and one.write_bytes > 0

    # the costs scale the estimate: a machine twice as slow per pixel, bytes from the costs
    costs = Costs()
    slow = Costs(seconds={m: {k: (a, 2 * b) for k, (a, b) in t.items()}
                          for m, t in costs.seconds.items()},
                 read_bytes=(0.0, 10.0), write_bytes=(0.0, 4.0), source_write_bytes=(0.0, 1.0),
                 products_bytes=(7.0, 3.0), calibrated=True, machine="test")
    fast_plan = plan_run(config, costs=costs)
    slow_plan = plan_run(config, costs=slow)
    n = 671 * 893 * 62
    assert slow_plan.read_bytes == 10 * n + 7 and slow_plan.write_bytes == 5 * n + 3
    # validation reads its windows only (at most 4 x 128² px), the screen the whole cube
    sampled = validation_pixels(893, 671) * 62
    assert sampled == 4 * 128 * 128 * 62
    for stage, pixels in (("prepare", n), ("validate", sampled)):
        a, b = costs.stage_line("ridge", stage)
        assert slow_plan.stages[stage] == pytest.approx(a + 2 * b * pixels)
        assert fast_plan.stages[stage] == pytest.approx(a + b * pixels)
    bigger = plan_run(config.model_copy(update={"source": SyntheticSource(width=1342, height=1786)}),
                      costs=costs)
    assert bigger.stages["validate"] == fast_plan.stages["validate"]
    assert bigger.stages["prepare"] > 3 * fast_plan.stages["prepare"]
    assert slow_plan.calibrated
    fusion = plan_run(config.model_copy(update={"gapfill": "fusion"}), costs=costs)
    assert "fusion_train" in fusion.stages and fusion.method == "fusion"
    a, b = costs.stage_line("fusion", "fusion_train")  # training samples at most its caps
    assert fusion.stages["fusion_train"] == pytest.approx(a + b * train_pixels() * 62)
    assert fusion.peak_memory_per_worker > one.peak_memory_per_worker


@pytest.mark.slow  # three tiny runs through every stage
def test_calibration_is_stored_reused_and_marks_the_plan(calibration_file):
    costs = calibrate(("ridge",), edges=(16, 32, 48))
    assert calibration_file.exists() and costs.calibrated
    again = load_costs()
    assert again.calibrated and again.seconds["ridge"] == costs.seconds["ridge"]
    line = again.stage_line("ridge", "blocks")
    assert line[1] > 0  # per pixel-period cost measured
    assert again.write_bytes[1] > 0 and again.read_bytes[1] > 0
    plan = plan_run(RunConfig(source=SyntheticSource(width=64, height=64), gapfill="ridge",
                              memory_limit="2GB"))
    assert plan.calibrated and plan.calibration.startswith(costs.machine)
    calibration_file.write_text("{not json")
    with pytest.raises(Exception, match="plan --calibrate"):
        load_costs()


def test_calibrating_one_method_keeps_the_others(calibration_file, monkeypatch):
    from fusecube.runner import calibration

    def fake(method, edge, folder, seed, *, report=True):  # seconds and bytes linear in pixels
        scale = (2.0 if method == "fusion" else 1.0) * edge * edge * 1e-5
        keys = (*calibration.STAGE_GROUPS, "other")
        return {**{k: 0.1 + scale for k in keys}, "read_bytes": 100.0 * edge * edge,
                "write_bytes": 10.0 * edge * edge, "source_write_bytes": 9.0 * edge * edge,
                "synth_io": 0.0}

    monkeypatch.setattr(calibration, "_measure", fake)
    ridge = calibrate(("ridge",), edges=(16, 32, 48)).seconds["ridge"]
    both = calibrate(("fusion",), edges=(16, 32, 48))
    assert both.seconds["ridge"] == ridge and both.method_calibrated("ridge")
    assert both.seconds["fusion"]["blocks"][1] > ridge["blocks"][1]
    assert load_costs().seconds["ridge"] == ridge


def test_plan_cli_table_json_and_run_plan_does_no_work(calibration_file, tmp_path, capsys):
    from fusecube.cli.app import main

    with pytest.raises(SystemExit) as done:
        main(["plan", "--json", "--workers", "2", "--memory-limit", "2GB"])
    assert done.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["workers"] == 2 and data["pixels"] == 671 * 893 and not data["calibrated"]
    assert data["seconds"] == pytest.approx(sum(data["stages"].values()), abs=0.2)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"source": {"kind": "synthetic", "width": 64, "height": 64},
                                  "out": str(tmp_path / "out"), "memory_limit": "1GB"}))
    with pytest.raises(SystemExit) as done:
        main(["run", str(config), "--plan"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "plan of the run" in text and "uncalibrated" in text and "4,096" in text
    assert f"{(1 * 10**9 - BASE_OVERHEAD) // MB}" not in text  # sanity: a table, not a dump
    assert not (tmp_path / "out").exists()  # --plan does nothing


def test_stac_plan_and_fetch_cap_count_items_and_window_bytes(tmp_path, capsys):
    from fusecube.cli.app import main
    from fusecube.cube import read_cube
    from fusecube.errors import BudgetExceeded
    from fusecube.runner.budget import Budget, fetch_guard
    from fusecube.sources.gdal_net import clear_http_cache
    from fusecube.sources.stac.fetch_aoi import fetch_aoi
    from fusecube.testing import LoopbackServer
    from fusecube.testing.scenes import make_scene

    scene = make_scene(tmp_path / "cogs", size=1024)
    with LoopbackServer(scene.root) as srv:
        items = scene.items(srv.url)
        for item in items:  # as catalogues with the file extension publish it
            for asset in item.assets.values():
                name = asset.href.rsplit("/", 1)[1]
                asset.extra_fields["file:size"] = (scene.root / name).stat().st_size
        srv.items = items
        source = StacSource(aoi="401000,9211000,409000,9219000", aoi_crs="EPSG:32749",
                            start="2022-01-01", end="2022-02-05", catalogue=srv.stac_url,
                            resolution=10, retries=2, retry_backoff_s=0.01)
        plan = plan_fetch(source)
        with pytest.raises(SystemExit) as done:
            main(["fetch", "--aoi", source.aoi, "--aoi-crs", "EPSG:32749", "--start",
                  source.start, "--end", source.end, "--catalogue", srv.stac_url,
                  "--out", str(tmp_path / "planned.zarr"), "--plan"])
        assert done.value.code == 0 and "STAC items" in capsys.readouterr().out
        assert not [p for p, n in srv.bytes_sent.items() if p.startswith("/files/") and n]
        assert not (tmp_path / "planned.zarr").exists()
        result, _ = fetch_aoi(source, tmp_path / "cube.zarr")

        # a byte cap stops the fetch between items; the same fetch again reads the rest
        capped = tmp_path / "capped.zarr"
        clear_http_cache("")  # as a new process: GDAL would serve the files from its cache
        budget = Budget(max_bytes=int(result.bytes_read * 0.4))
        with pytest.raises(BudgetExceeded, match=r"--max-bytes .* cap after \d/7 items"):
            fetch_aoi(source, capped, on_item=fetch_guard(budget, "again"))
        assert budget.used()[1] <= result.bytes_read * 0.4
        parts = list((tmp_path / "capped.zarr.parts" / "items").glob("*.npz"))
        assert 0 < len(parts) < 7 and not capped.exists()
        rest, _ = fetch_aoi(source, capped)
        assert rest.n_read == 7 - len(parts)
    assert plan.items == result.n_items == 7
    assert plan.width == plan.height == 800 and plan.periods == 3
    assert 0.5 * result.bytes_read <= plan.network_bytes <= 1.5 * result.bytes_read
    a, b = read_cube(tmp_path / "cube.zarr").load(), read_cube(capped).load()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_batch_plan_sums_its_aois_and_does_no_work(calibration_file, tmp_path, capsys):
    from fusecube.batch import BatchConfig
    from fusecube.cli.app import main
    from fusecube.runner.plan import plan_batch

    csv = tmp_path / "aois.csv"
    csv.write_text("id,lon,lat,size_km\na,110.60,-6.9,0.32\nb,110.62,-6.9,0.64\n"
                   "dup,110.60,-6.9,0.32\n")
    config = BatchConfig(out=tmp_path / "b", start="2023-11-01", end="2024-04-30",
                         concurrency=2, produce=("cube", "products"))
    plan = plan_batch(csv, config)
    assert plan.aois == 2  # the duplicate is skipped, as the batch would
    assert plan.pixels == 32 * 32 + 64 * 64 and plan.periods == 16 and plan.workers == 2
    assert {"source", "blocks", "products"} <= set(plan.stages)
    cube_only = plan_batch(csv, config.model_copy(update={"produce": ("cube",)}))
    assert set(cube_only.stages) == {"source"} and cube_only.seconds < plan.seconds
    with pytest.raises(SystemExit) as done:
        main(["batch", "run", str(csv), "--start", "2023-11-01", "--end", "2024-04-30",
              "--out", str(tmp_path / "b"), "--plan", "--json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["aois"] == 2
    assert not (tmp_path / "b").exists()
