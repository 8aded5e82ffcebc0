"""Fuzzing the API with schemathesis against its own OpenAPI schema: no 5xx answers.

Cases are generated from ``/openapi.json`` (a bounded number per operation, no network: the
app is called in-process over ASGI). Half of the cases with a ``run_id`` get the id of a real
finished run, so the product, map and pixel code is fuzzed too, not only the 404 path.
"""

from __future__ import annotations

import os
import time
import zlib

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from fusecube.api import Settings, create_app  # noqa: E402

#: Examples per operation (FUSECUBE_FUZZ_EXAMPLES raises it for a longer run).
MAX_EXAMPLES = int(os.environ.get("FUSECUBE_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """The app (small limits: fuzzed run configs stay tiny) and one finished run in it."""
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(data_dir=root, min_free_disk_mb=0, max_active_runs=1,
                              max_run_pixels=24 * 24, max_predict_pixels=16 * 16,
                              max_predict_times=64, max_upload_mb=1, request_timeout_s=60))
    client = TestClient(app)
    response = client.post("/runs", json={"source": {"kind": "synthetic", "width": 16,
                                                     "height": 16, "seed": 4},
                                          "block_size": 16, "report": False,
                                          "memory_limit": "1GB"})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while client.get(f"/runs/{run_id}").json()["state"] not in ("done", "failed", "crashed"):
        assert time.monotonic() < deadline, "the seed run did not finish"
        time.sleep(0.25)
    assert client.get(f"/runs/{run_id}").json()["state"] == "done"
    app.state.fuzz_run_id = run_id
    yield app
    app.state.manager.shutdown(app.state.ledger)  # stop runs the fuzzer started


def operations():
    """The API's operations, read from the schema of an app built just for listing them."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fusecube-schema-") as tmp:
        app = create_app(Settings(data_dir=tmp, min_free_disk_mb=0))
        listed = schemathesis.openapi.from_asgi("/openapi.json", app)
        labels = [result.ok().label for result in listed.get_all_operations()]
        app.state.ledger.dispose()
    return labels


@pytest.mark.parametrize("label", operations())
def test_no_server_errors(label, fuzz_app):
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)

    seen = {"real_run": 0, "cases": 0}

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        params = case.path_parameters or {}
        if "run_id" in params and zlib.crc32(str(params["run_id"]).encode()) % 2 == 0:
            params["run_id"] = fuzz_app.state.fuzz_run_id
            seen["real_run"] += 1
        seen["cases"] += 1
        response = case.call()
        assert response.status_code < 500, (label, params, case.query, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error", "detail"}, body
            assert "Traceback" not in body["detail"]

    check()
    assert seen["cases"] > 0
    if "{run_id}" in label:
        assert seen["real_run"] > 0, "no case reached the finished run"
