"""The run report and the gate summary shared with the viewer and the API.

Unit tests build screens by hand; one tiny synthetic run (24 x 24 px, linear gap-fill) checks
the written report: what was done first, every product linked, one gate count equal to the
API's, the planted fault labelled, screened values never answered as observations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fusecube.products import overlays
from fusecube.quality.summary import gate_summary, run_gate_summary, screened_ndvi_periods
from fusecube.sources.synthetic.planted import planted_faults, planted_in_store


def _gate(name, status="pass", stage="input", periods=()):
    return {"gate": name, "stage": stage, "status": status, "message": f"{name} {status}",
            "periods": list(periods)}


SCREEN = {"gates": [_gate("time_regular"), _gate("ndvi_zero_periods", "fail", periods=[7]),
                    _gate("s2_valid_fraction", "warn"), _gate("paddy_coverage", stage="mask")],
          "stage_counts": {"gapfill:ndvi_fused_range": 0, "phenology:season_length": 3},
          "stage_status": {"phenology:season_length": "warn"},
          "zero_periods": [7], "constant_periods": {"ndvi": [9], "vh": [2]}}
RESULT_GATES = [_gate("ndvi_fused_all_nan", stage="result")]


def test_gate_summary_counts_every_gate_once():
    summary = gate_summary(SCREEN, RESULT_GATES)
    assert summary["total"] == 4 + 2 + 1
    assert summary["counts"] == {"pass": 4, "warn": 2, "fail": 1, "skip": 0}
    assert [g["stage"] for g in summary["gates"]][-3:] == ["gapfill", "phenology", "result"]
    assert summary["text"] == "7 gates: 4 pass, 2 warn, 1 fail"
    assert summary["planted"] == 0 and not any(g["planted"] for g in summary["gates"])


def test_planted_fault_is_labelled_only_where_planted():
    planted = planted_faults({"zero_period": 7})
    assert planted[0]["gate"] == "ndvi_zero_periods" and planted[0]["periods"] == [7]
    summary = gate_summary(SCREEN, RESULT_GATES, planted)
    marked = [g for g in summary["gates"] if g["planted"]]
    assert [g["gate"] for g in marked] == ["ndvi_zero_periods"]
    assert "planted by the synthetic demo" in marked[0]["note"]
    assert summary["text"].endswith("(1 planted by the synthetic demo)")
    # a zero period the scene did not plant is a real finding, not labelled
    other = gate_summary(SCREEN, RESULT_GATES, planted_faults({"zero_period": 3}))
    assert other["planted"] == 0
    assert planted_faults({}) == [] and planted_in_store(None) == []


def test_run_gate_summary_reads_run_json(tmp_path):
    assert run_gate_summary(tmp_path)["total"] == 0  # not finished: no gates yet
    (tmp_path / "run.json").write_text(json.dumps({"screen": SCREEN, "result_gates": RESULT_GATES,
                                                   "truth": None}))
    assert run_gate_summary(tmp_path) == gate_summary(SCREEN, RESULT_GATES)


def test_screened_periods():
    assert screened_ndvi_periods(SCREEN) == [7, 9]
    assert screened_ndvi_periods(None) == []


def test_month_colours_tell_december_from_january():
    doy = np.array([[1, 31, 32, 59], [60, 334, 335, 366]], float)
    np.testing.assert_array_equal(overlays.month_of_doy(doy), [[0, 0, 1, 1], [2, 10, 11, 11]])
    rgba = overlays._rgba(np.array([[1.0, 365.0, np.nan]]), "sos")
    assert tuple(rgba[0, 0, :3]) != tuple(rgba[0, 1, :3])  # 1 January vs 31 December
    assert rgba[0, 2, 3] == 0 and rgba[0, 0, 3] == 255
    legend = overlays.month_legend()
    assert [c["label"] for c in legend["classes"]][::11] == ["Jan", "Dec"]
    assert len({c["color"] for c in legend["classes"]}) == 12
    # intensity stored with a fill value (uint8 255) is clear there
    assert overlays._rgba(np.array([[2.0, 255.0]]), "intensity")[0, :, 3].tolist() == [255, 0]


# ----------------------------------------------------------------------------- one run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from fusecube.config import RunConfig, SyntheticSource
    from fusecube.runner import run

    out = tmp_path_factory.mktemp("report") / "out"
    config = RunConfig(source=SyntheticSource(width=24, height=24, seed=2), gapfill="linear",
                       out=out, memory_limit="1GB")
    result = run(config)
    return {"out": Path(result.out), "result": result, "config": config}


@pytest.mark.slow
def test_report_opens_with_what_was_done(finished_run):
    page = (finished_run["out"] / "report.html").read_text()
    done = page.index("What was done")
    assert done < page.index("<h2>Products") < page.index("Rice calendar")
    block = page[done:page.index("</section>", done)]
    for item in ("synthetic Demak-like scene, 24 x 24 px", "EPSG:32749", "24 x 24 px of 50 m",
                 "periods of 12 days", "<b>linear</b>", "headline scores", "gates:"):
        assert item in block, item
    assert page.count("Quality gates") == 1
    for term in ("planting", "SOS", "POS", "EOS", "harvest", "before EOS"):
        assert f"{term}" in page[page.index("Season dates: definitions"):]


@pytest.mark.slow
def test_report_gate_count_is_the_apis(finished_run):
    out = finished_run["out"]
    summary = run_gate_summary(out)  # what the API and the viewer show
    assert summary["total"] >= 20 and summary["planted"] == 1
    page = (out / "report.html").read_text()
    assert page.count(summary["text"]) >= 1
    assert re.search(r"fail</b></span> \(planted\)", page)
    quality = (out / "quality" / "quality.html").read_text()
    assert summary["text"] in quality and "<style>" in quality and "../report.html" in quality


@pytest.mark.slow
def test_report_links_every_product(finished_run):
    out = finished_run["out"]
    page = (out / "report.html").read_text()
    links = set(re.findall(r"href='([^'#]+)'", page))
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    for name in manifest:
        if name.endswith((".tif", ".nc", ".csv", ".png")) and not name.startswith("quality/"):
            assert name in links, f"{name} is not linked"
    assert "quality/quality.html" in links
    missing = [link for link in links if not (out / link).exists()]
    assert not missing, missing


@pytest.mark.slow
def test_screened_period_is_never_an_observation(finished_run):
    from fusecube.products.pixel import pixel

    out = finished_run["out"]
    screened = run_gate_summary(out) and screened_ndvi_periods(
        json.loads((out / "run.json").read_text())["screen"])
    assert screened, "the synthetic scene plants an all-zero period"
    px = pixel(out, finished_run["config"], row=12, col=12)
    assert all(px["series"]["ndvi"][i] is None for i in screened)
    assert px["screened"] == [px["time"][i] for i in screened]
    assert any(v is not None for v in px["series"]["ndvi"])


@pytest.mark.slow
def test_report_says_why_season_slots_are_empty(finished_run):
    import csv

    out = finished_run["out"]
    with open(out / "season_reasons.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(int(r["unexplained"]) == 0 for r in rows)
    reasons = [k for k in rows[0] if k not in ("slot", "paddy", "with_season", "unexplained")]
    for r in rows:  # every empty paddy slot carries at least one reason
        empty = int(r["paddy"]) - int(r["with_season"])
        assert 0 <= empty <= sum(int(r[k]) for k in reasons)
    assert sum(int(r["paddy"]) - int(r["with_season"]) for r in rows) > 0
    page = (out / "report.html").read_text()
    section = page[page.index("Why season slots are empty"):page.index("<h2>Pixel curves")]
    assert "main reason the slot is empty</figcaption>" in section and rows[0]["slot"] in section
    assert "too few observations" in section
    assert (out / "figures" / "map_season_reason.png").stat().st_size > 1000
