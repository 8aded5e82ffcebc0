"""Training progress of neural fusion: step, loss and ETA on the console, in JSON and the API.

Before, a run training its fusion model printed the same "... fusion_train running" line
every few seconds; now every reporter and the API's run status say which step of how many,
the loss and the time left.
"""

from __future__ import annotations

import io
import json
import os
import time
from types import SimpleNamespace

import pytest

from fusecube.fusion.neural.training_progress import report_step, training_progress
from fusecube.runner.progress import (
    JsonLinesReporter,
    PlainReporter,
    training_events,
    training_message,
)


def test_updates_are_throttled_and_carry_eta():
    got = []
    with training_progress(lambda **f: got.append(f), every_s=0.0):
        for step in range(1, 6):
            time.sleep(0.002)
            report_step(step, 5, 0.5 / step)
    assert [g["step"] for g in got] == [1, 2, 3, 4, 5]
    assert got[-1]["loss"] == pytest.approx(0.1) and got[-1]["eta_s"] == 0.0
    # no rate from the first step alone (it pays for start-up); then one from step 2 on
    assert got[0]["eta_s"] is None and all(g["eta_s"] is not None for g in got[1:])
    assert got[1]["eta_s"] >= got[3]["eta_s"] and all(g["total"] == 5 for g in got)
    slow = []
    with training_progress(lambda **f: slow.append(f), every_s=1e9):
        for step in range(1, 101):
            report_step(step, 100, 1.0)
    assert [g["step"] for g in slow] == [1, 100]  # the first, then only the last
    report_step(1, 2, 1.0)  # no listener: nothing happens, nothing fails


def test_training_events_go_to_the_run_events():
    sent = []

    def emit(level, kind, message="", *, record=True, **fields):
        sent.append({"level": level, "kind": kind, "message": message, "record": record, **fields})

    with training_events(emit, record_s=1e9):
        for step in range(1, 4):
            report_step(step, 3, 0.25)
    assert {(s["level"], s["kind"], s["stage"]) for s in sent} == {("stage", "train", "fusion_train")}
    assert [s["step"] for s in sent] == [1, 3]  # throttled to one a second, the last always
    assert [s["record"] for s in sent] == [True, True]  # the ledger keeps the first and the last
    assert sent[-1]["message"].startswith("training step 3/3, loss 0.2500, ETA")


def test_plain_lines_say_step_loss_and_eta():
    stream = io.StringIO()
    plain = PlainReporter(stream)
    fields = {"stage": "fusion_train", "step": 120, "total": 300, "loss": 0.0123, "eta_s": 75.0}
    plain.event("stage", "train", **fields)
    plain.last = 0.0  # long quiet: the heartbeat repeats the training state, not "running"
    plain.event("run", "heartbeat", stage="fusion_train", rss_mb=100.0)
    plain.event("stage", "train", **{**fields, "step": 300, "eta_s": 0.0})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "fusion_train: training step 120/300, loss 0.0123, ETA 1:15"
    assert lines[1] == lines[0] and "running" not in stream.getvalue()
    assert lines[2].startswith("fusion_train: training step 300/300")
    assert training_message({"step": 1, "total": 2, "loss": None, "eta_s": None}) == \
        "training step 1/2, ETA ?"


def test_json_lines_carry_the_fields():
    stream = io.StringIO()
    JsonLinesReporter(stream).event("stage", "train", stage="fusion_train", step=5, total=10,
                                    loss=0.5, eta_s=3.0)
    record = json.loads(stream.getvalue())
    assert {k: record[k] for k in ("level", "kind", "step", "total", "loss", "eta_s")} == {
        "level": "stage", "kind": "train", "step": 5, "total": 10, "loss": 0.5, "eta_s": 3.0}


def test_real_training_reports_every_step_to_its_end(small_scene):
    pytest.importorskip("torch")

    from fusecube.cube import read_cube
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig
    from fusecube.splits import SpatialSplit

    config = TrainConfig(width=8, epochs=1, min_steps=30, batch_size=256, max_train_pixels=1500,
                         max_val_pixels=500, split=SpatialSplit(block=16, val_fraction=0.3, buffer=2),
                         threads=1, device="cpu")
    got = []
    with training_progress(lambda **f: got.append(f), every_s=0.0):
        model = NeuralFusion(config).fit(read_cube(small_scene["cube"]))
    steps = [g["step"] for g in got]
    members = model.meta_["trained_on"].get("members", 1)
    assert members == 3  # a small scene trains an ensemble: progress runs once over all members
    total = model.meta_["trained_on"]["steps"] * members
    assert steps == list(range(1, total + 1))
    assert all(g["loss"] is not None and g["loss"] >= 0 for g in got)


def test_api_status_shows_training(tmp_path):
    from fusecube.api.dependencies import _training
    from fusecube.runner.ledger import Ledger

    ledger = Ledger(str(tmp_path / "ledger.sqlite"))
    ledger.create_run(run_id="20260101-000000-abcdef", out=str(tmp_path / "out"),
                      store=str(tmp_path / "store"), fingerprint="x", config="{}",
                      memory_limit=1, scheduler="")
    ledger.stage_started("20260101-000000-abcdef", "fusion_train")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(ledger=ledger)))
    record = ledger.get_run("20260101-000000-abcdef")
    assert _training(request, record) is None  # no update yet
    ledger.event(record.id, "stage", "train", "training step 7/30", stage="fusion_train", step=7,
                 total=30, loss=0.2, eta_s=12.5, steps_per_s=2.0)
    record = ledger.get_run(record.id)
    if record.state not in ("running", "paused"):  # the record's process is this test: alive
        pytest.skip(f"ledger state {record.state} (pid {os.getpid()})")
    assert _training(request, record) == {"step": 7, "total": 30, "loss": 0.2, "eta_s": 12.5,
                                          "steps_per_s": 2.0}
    ledger.dispose()


def test_rich_bar_shows_steps_and_loss():
    from rich.console import Console

    from fusecube.runner.progress import RichReporter

    buffer = io.StringIO()
    with RichReporter(Console(file=buffer, force_terminal=False, width=120)) as rich:
        rich.event("stage", "start", stage="fusion_train", total=None)
        for step in (1, 50, 100):
            rich.event("stage", "train", stage="fusion_train", step=step, total=100, loss=0.01,
                       eta_s=3.0)
    text = buffer.getvalue()
    assert "fusion_train loss 0.0100" in text and "100/100" in text
