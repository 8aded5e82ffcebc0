"""The bad-input catalogue, network part: `fusecube fetch` against catalogues that misbehave.

Each case configures the loopback STAC API + COG server (127.0.0.1 only) and returns the
``fetch`` arguments that must fail: assets that 404, items whose grid has no CRS, pagination
that never ends or goes round in circles, a server answering 503/429 forever, a catalogue
that cannot be reached, a partial fetch with other settings. Where the command writes
``--out`` into the previous output folder, that earlier cube must come out byte-identical.
Behaviour that is not one CLI command (bounded request counts, the retry time limit, a
previous real cube kept while the items read are kept for the rerun) is tested beside them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from catalogue import Case, Env, run_case, tree_hashes

from fusecube.cube import write_cube
from fusecube.errors import SourceError
from fusecube.grid.geobox import resolve_geobox
from fusecube.sources.retry import RetriesExhausted, RetryPolicy, with_retries
from fusecube.sources.stac.catalogues import Catalogue, StacOptions, s1_spec, s2_spec
from fusecube.sources.stac.fetch import fetch
from fusecube.testing import Fault, FaultPlan, LoopbackServer
from fusecube.testing.cog import write_cog
from fusecube.testing.scenes import make_scene

AOI = "400500,9218000,401500,9219000"  # UTM 49S, inside the 2.56 km scene
START, END = "2022-01-01", "2022-01-20"
NET = SimpleNamespace(srv=None, scene=None)  # the server and scene of the case being run


@pytest.fixture(scope="module")
def net_scene(tmp_path_factory):
    scene = make_scene(tmp_path_factory.mktemp("net-cogs"), size=256,
                       s2_dates=("2022-01-05", "2022-01-10"), s1_dates=("2022-01-09",))
    for band in ("B04", "B08", "SCL"):  # an acquisition that is no-data everywhere
        write_cog(scene.root / f"NODATA_{band}.tif", np.zeros((256, 256), np.uint16),
                  scene.geobox, nodata=0)
    return scene


def fetch_args(env: Env, *extra: str, out: str | None = None) -> list[str]:
    """``fusecube fetch`` of the AOI into the previous output folder's cube (or ``out``)."""
    target = out or str(env.tmp.parent / "out" / "result.zarr")
    return ["fetch", "--aoi", AOI, "--aoi-crs", "EPSG:32749", "--start", START, "--end", END,
            "--catalogue", NET.srv.stac_url, "--out", target, "--retries", "2", "--timeout", "5",
            *extra]


def _serve(faults: FaultPlan | None = None, *, paging: str = "normal", items=None) -> None:
    srv = NET.srv
    srv.faults = faults or FaultPlan()
    srv.paging = paging
    srv.items = items if items is not None else NET.scene.items(srv.url)


def _all_404(env: Env) -> list[str]:
    _serve(items=NET.scene.items(NET.srv.url + "/gone"))  # every href answers 404
    return fetch_args(env)


def _s1_404(env: Env) -> list[str]:
    items = [it for it in NET.scene.items(NET.srv.url) if it.collection_id != "sentinel-1-rtc"]
    _serve(items=items + [it for it in NET.scene.items(NET.srv.url + "/gone")
                          if it.collection_id == "sentinel-1-rtc"])
    # the S2 items read are kept beside --out for the rerun: not in the previous output folder
    write_cube(env.cube, env.tmp / "cube.zarr")
    return fetch_args(env, out=str(env.tmp / "cube.zarr"))


def _proj(field: str | None, value=None):
    def build(env: Env) -> list[str]:
        items = NET.scene.items(NET.srv.url)
        for item in items:
            del item.properties["proj:epsg"]
            if field:
                item.properties[field] = value
        _serve(items=items)
        return fetch_args(env)
    return build


def _no_data(env: Env) -> list[str]:
    items = NET.scene.items(NET.srv.url)
    for item in items:
        for band, asset in item.assets.items():
            asset.href = f"{NET.srv.url}/files/NODATA_{band}.tif"
    _serve(items=[it for it in items if it.collection_id == "sentinel-2-l2a"])
    return fetch_args(env, "--no-s1")


def _paging(mode: str, *extra: str, faults: FaultPlan | None = None):
    def build(env: Env) -> list[str]:
        _serve(faults, paging=mode)
        return fetch_args(env, *extra)
    return build


def _forever(path: str, fault: Fault):
    def build(env: Env) -> list[str]:
        _serve(FaultPlan(script={path: [fault] * 10_000}))
        return fetch_args(env)
    return build


def _unreachable(env: Env) -> list[str]:
    _serve()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = fetch_args(env)
    args[args.index("--catalogue") + 1] = f"http://127.0.0.1:{port}/stac"
    return args


def _other_settings(env: Env) -> list[str]:
    _serve()
    parts = env.tmp / "cube.zarr.parts"
    (parts / "items").mkdir(parents=True)
    (parts / "fingerprint").write_text("0123456789abcdef")
    return fetch_args(env, out=str(env.tmp / "cube.zarr"))


CASES = [
    Case("network_all_items_404", _all_404, SourceError,
         "'sentinel-2-l2a', 'sentinel-1-rtc' failed to read"),
    Case("network_all_s1_items_404", _s1_404, SourceError, "'sentinel-1-rtc' failed to read"),
    Case("network_items_without_any_crs_field", _proj(None), SourceError,
         "without a CRS: S2_2022-01-05/B04"),
    Case("network_unparsable_proj_code", _proj("proj:code", "EPSG:0"), SourceError,
         "proj:code='EPSG:0'"),
    Case("network_unparsable_proj_wkt2", _proj("proj:wkt2", "PROJCRS[nonsense"), SourceError,
         "cannot be parsed"),
    Case("network_every_pixel_no_data", _no_data, SourceError, "hold no valid pixel"),
    Case("network_endless_pages", _paging("endless", "--max-pages", "5"), SourceError,
         "--max-pages 5"),
    Case("network_endless_items", _paging("endless", "--max-items", "7"), SourceError,
         "--max-items 7"),
    Case("network_endless_slow_pages",
         _paging("endless", "--max-search-s", "1",
                 faults=FaultPlan(rate=1.0, kinds=(Fault.SLOW,), prefixes=("/stac/search",),
                                  slow_s=0.3)),
         SourceError, "--max-search-s 1"),
    Case("network_next_link_points_to_itself", _paging("self"), SourceError,
         "goes round in circles"),
    Case("network_pages_repeat_the_first", _paging("repeat"), SourceError,
         "page 2 holds only items already returned"),
    Case("network_search_503_forever", _forever("/stac/search", Fault.ERROR_503), SourceError,
         "STAC search of ['sentinel-2-l2a']"),
    Case("network_search_429_forever", _forever("/stac/search", Fault.TOO_MANY), SourceError,
         "too many 429 error responses"),
    Case("network_search_truncated_forever", _forever("/stac/search", Fault.TRUNCATE),
         SourceError, "Try again later or raise --retries"),
    Case("network_catalogue_503_forever", _forever("/stac", Fault.ERROR_503), SourceError,
         "cannot be opened"),
    Case("network_catalogue_unreachable", _unreachable, SourceError, "Check the URL"),
    Case("network_partial_fetch_with_other_settings", _other_settings, SourceError,
         "--restart"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, catalogue_base, tmp_path, capsys, monkeypatch, net_scene):
    with LoopbackServer(net_scene.root) as srv:
        NET.srv, NET.scene = srv, net_scene
        run_case(case, catalogue_base, tmp_path, capsys, monkeypatch)


# -- beside the catalogue ------------------------------------------------------------------
def _options(srv, **kw) -> StacOptions:
    return StacOptions(catalogue=Catalogue(srv.stac_url, s2_spec(), kw.pop("s1", s1_spec())),
                       retry=kw.pop("retry", RetryPolicy(attempts=3, backoff_s=0.01,
                                                         max_backoff_s=0.05)),
                       timeout_s=5, **kw)


def _fetch(srv, out: Path, on_item=None, **kw):
    geobox = resolve_geobox(tuple(map(float, AOI.split(","))), aoi_crs="EPSG:32749")
    return fetch(geobox=geobox, start=START, end=END, out=out, options=_options(srv, **kw),
                 on_item=on_item)


def test_failed_collection_keeps_the_previous_cube_and_the_items_read(net_scene, tmp_path):
    out = tmp_path / "cube.zarr"
    with LoopbackServer(net_scene.root) as srv:
        srv.items = net_scene.items(srv.url)
        _fetch(srv, out)
        before = tree_hashes(out)
        good = {it.id: it for it in srv.items}
        s1_gone = {it.id for it in net_scene.items(srv.url) if it.collection_id ==
                   "sentinel-1-rtc"}
        srv.items = [it for it in net_scene.items(srv.url + "/gone") if it.id in s1_gone] + [
            it for it in srv.items if it.id not in s1_gone]
        with pytest.raises(SourceError, match="Every item of 'sentinel-1-rtc' failed.*"
                           r"the 2 items read are kept in .*cube\.zarr\.parts") as info:
            _fetch(srv, out)
        assert [f.item_id for f in info.value.failures] == sorted(s1_gone)
        assert tree_hashes(out) == before
        # the rerun (server fixed) reads only the failed items, then writes the new cube
        srv.items = list(good.values())
        reports = []
        result = _fetch(srv, out, on_item=reports.append)
        assert result.n_read == len(s1_gone) and result.failures == []
        assert {r.item_id for r in reports} == s1_gone
        assert not out.with_name("cube.zarr.parts").exists()
        assert tree_hashes(out) == before  # the same data as the first fetch, to the byte


def test_a_server_failing_forever_costs_a_bounded_number_of_requests(net_scene, tmp_path):
    plan = FaultPlan(rate=1.0, kinds=(Fault.ERROR_503,), prefixes=("/stac", "/files/"),
                     max_consecutive=0)
    with LoopbackServer(net_scene.root, faults=plan) as srv:
        srv.items = net_scene.items(srv.url)
        with pytest.raises(SourceError, match=f"STAC API {srv.stac_url} cannot be opened"):
            _fetch(srv, tmp_path / "a.zarr")
        # urllib3 retries each open 2 times more, inside each of the 3 tries of fusecube
        assert len(srv.requests) == 3 * 3
        srv.faults = FaultPlan(rate=1.0, kinds=(Fault.ERROR_503,), max_consecutive=0)
        srv.reset_counters()
        with pytest.raises(SourceError, match="the data server is failing"):
            _fetch(srv, tmp_path / "a.zarr", gdal_retries=0, workers=1)
        # without GDAL retries, each item is asked 3 times for its first asset, then given up
        per_file = {}
        for request in srv.requests:
            if request[1].startswith("/files/"):
                per_file[request[1]] = per_file.get(request[1], 0) + 1
        assert len(per_file) == 3 and set(per_file.values()) == {3}, per_file
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_faulted_head_answer_has_no_body_to_spoil_the_next_answer(tmp_path):
    """A HEAD answer with a body leaves bytes on a kept-alive connection that the client reads
    as (the start of) its next answer (a retry then failed without reaching the server)."""
    import socket
    import time

    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    plan = FaultPlan(script={"/files/a.bin": (Fault.ERROR_503,)})
    with LoopbackServer(tmp_path, faults=plan) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        received = b""
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"HEAD /files/a.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /files/a.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 10
            while not received.endswith(b"x" * 10) and time.monotonic() < deadline:
                received += conn.recv(4096)
        head, rest = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503")
        assert rest.startswith(b"HTTP/1.1 200"), rest[:40]  # the GET's answer, nothing before
        assert [(r[0], r[2]) for r in srv.requests] == [("HEAD", 503), ("GET", 200)]


def test_server_counts_are_read_after_the_answers_are_recorded(tmp_path, monkeypatch):
    """The loopback server records a request after answering it, so a client could read the
    counts before the last request is in them (a test once saw 2 of 3 tries); reading a count
    waits for every request that arrived to be recorded."""
    import urllib.error
    import urllib.request

    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    original = LoopbackServer._record

    def late(self, *args, **kwargs):  # the recording lags behind the answer
        import time

        time.sleep(0.3)
        original(self, *args, **kwargs)

    monkeypatch.setattr(LoopbackServer, "_record", late)
    with LoopbackServer(tmp_path) as srv:
        for _ in range(3):
            with urllib.request.urlopen(srv.file_url("a.bin"), timeout=10) as answer:
                assert answer.read() == b"x" * 100
        assert [r[1] for r in srv.requests] == ["/files/a.bin"] * 3
        assert srv.bytes_sent["/files/a.bin"] == 300 and srv.total_bytes == 300


def test_retries_stop_at_the_time_limit():
    calls = []

    def failing():
        calls.append(1)
        raise OSError("HTTP response code: 503")

    policy = RetryPolicy(attempts=100, backoff_s=1.0, max_elapsed_s=2.5, jitter=0.0)
    slept = []
    with pytest.raises(RetriesExhausted, match="retry time limit of 2.5 s") as info:
        with_retries(failing, "x", policy, rng=random.Random(0), sleep=slept.append,
                     clock=lambda: sum(slept))
    # after 1 s of waiting, the next delay (2 s) would pass 2.5 s: stop there, not at 100 tries
    assert info.value.attempts == 2 and slept == [1.0] and len(calls) == 2


def test_a_fusecube_error_is_never_retried():
    calls = []

    def refused():
        calls.append(1)
        raise SourceError("a limit")

    with pytest.raises(SourceError):
        with_retries(refused, "x", RetryPolicy(attempts=5), sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_after_is_capped_at_the_longest_backoff():
    from urllib3.response import HTTPResponse

    from fusecube.sources.stac.search import _capped_retry

    retry = _capped_retry(2.0)(total=3)
    answer = HTTPResponse(status=429, headers={"Retry-After": "3600"})
    assert retry.get_retry_after(answer) == 2.0
    assert type(retry.new()).get_retry_after is type(retry).get_retry_after  # kept by urllib3
    assert retry.get_retry_after(HTTPResponse(status=503)) is None
