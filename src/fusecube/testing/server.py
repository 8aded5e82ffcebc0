"""A loopback HTTP server for tests: files with range requests, a fake STAC API, faults.

It binds 127.0.0.1 on a free port, counts every body byte it sends (per path), and can
inject faults — HTTP 500/503/429, truncated bodies, hangs past the client timeout, slow
responses — either at random with a seeded rate or scripted per path, so that tests can
prove retries, failure records and windowed reads.
"""

from __future__ import annotations

import bisect
import enum
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pystac
from odc.geo import geom

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
STAC_PREFIX = "/stac"
FILES_PREFIX = "/files/"
SETTLE_S = 2.0
"""Longest wait for requests still being answered before counts are read (a hung request is
not waited for past this)."""


class Fault(enum.Enum):
    """A kind of failure the server can inject into one response."""

    ERROR_500 = "500"
    ERROR_503 = "503"
    TOO_MANY = "429"
    TRUNCATE = "truncate"
    HANG = "hang"
    SLOW = "slow"


@dataclass
class FaultPlan:
    """Which responses fail and how.

    Attributes:
        rate: Probability that a matching request gets a random fault.
        kinds: Faults drawn at random.
        seed: Random seed (the same seed gives the same fault sequence per request order).
        prefixes: Only requests whose path starts with one of these can fail.
        script: Path → faults for its first requests, in order (deterministic injection).
        hang_s: How long a ``HANG`` waits before closing without an answer.
        slow_s: Delay of a ``SLOW`` response.
        max_consecutive: Never fail more than this many requests in a row on one path, so a
            client with enough retries always gets through (0 = no limit).
    """

    rate: float = 0.0
    kinds: Sequence[Fault] = (Fault.ERROR_500, Fault.ERROR_503, Fault.TOO_MANY, Fault.TRUNCATE,
                              Fault.HANG, Fault.SLOW)
    seed: int = 0
    prefixes: Sequence[str] = (FILES_PREFIX,)
    script: Mapping[str, Sequence[Fault]] = field(default_factory=dict)
    hang_s: float = 1.5
    slow_s: float = 0.05
    max_consecutive: int = 3


class LoopbackServer:
    """Serve ``root`` under ``/files/`` and ``items`` as a STAC API under ``/stac``.

    Use as a context manager; ``url`` is the base URL once started. No directory listings are
    served: GDAL clients must set ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` (fusecube's
    readers do), otherwise GDAL's directory probe after opening a file stalls.

    Attributes:
        bytes_sent: Body bytes sent per request path.
        requests: One ``(method, path, status, body_bytes, fault)`` per request, in the order
            the requests arrived (a hang is listed before the retry made while it hangs).
    """

    def __init__(self, root: str | Path | None = None, items: Iterable[pystac.Item] = (), *,
                 faults: FaultPlan | None = None, page_size: int = 2,
                 paging: str = "normal") -> None:
        self.root = Path(root) if root is not None else None
        self.items: list[pystac.Item] = list(items)
        self.faults = faults or FaultPlan()
        self.page_size = page_size
        self.paging = paging
        """How search pages link on: ``normal``; ``self`` (each ``next`` link repeats the
        request just made); ``repeat`` (new tokens, the first page's items again and again);
        ``endless`` (new tokens, new item ids, forever)."""
        self._bytes_sent: Counter[str] = Counter()
        self._requests: list[tuple[str, str, int, int, str | None]] = []
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_flight = 0  # requests arrived and not recorded yet
        self._arrived = 0
        self._order: list[int] = []  # arrival number of each entry of ``requests``
        self._rng = random.Random(self.faults.seed)
        self._scripted: Counter[str] = Counter()
        self._consecutive: Counter[str] = Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def stac_url(self) -> str:
        """Root of the fake STAC API."""
        return self.url + STAC_PREFIX

    def file_url(self, name: str) -> str:
        """URL of a file under ``root``."""
        return f"{self.url}{FILES_PREFIX}{name}"

    # -- accounting ------------------------------------------------------------------------
    def settle(self, timeout: float = SETTLE_S) -> None:
        """Wait (at most ``timeout`` s) until every request that arrived has been recorded.

        A handler records a request after writing its response, so a client can have its
        answer before the server counted it; every accessor below settles first, so a test
        never reads a count that is still moving.
        """
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def requests(self) -> list[tuple[str, str, int, int, str | None]]:
        """``(method, path, status, body bytes, fault)`` of every request, in arrival order."""
        self.settle()
        return self._requests

    @property
    def bytes_sent(self) -> Counter[str]:
        """Body bytes sent per path."""
        self.settle()
        return self._bytes_sent

    @property
    def total_bytes(self) -> int:
        """Body bytes sent so far."""
        self.settle()
        with self._lock:
            return sum(self._bytes_sent.values())

    def faults_injected(self) -> list[tuple[str, str]]:
        """``(path, fault)`` for every injected fault (SLOW included)."""
        self.settle()
        with self._lock:
            return [(r[1], r[4]) for r in self._requests if r[4]]

    def reset_counters(self) -> None:
        """Forget bytes and requests counted so far."""
        self.settle()
        with self._lock:
            self._bytes_sent.clear()
            self._requests.clear()
            self._order.clear()

    def _arrive(self) -> int:
        with self._lock:
            self._arrived += 1
            self._in_flight += 1
            return self._arrived

    def _settle_one(self) -> None:
        """A request is done (recorded, or dropped by an error): one fewer in flight."""
        with self._settled:
            self._in_flight -= 1
            self._settled.notify_all()

    def _record(self, method: str, path: str, status: int, nbytes: int, fault: Fault | None,
                arrival: int) -> None:
        with self._lock:
            self._bytes_sent[path] += nbytes
            at = bisect.bisect_right(self._order, arrival)
            self._order.insert(at, arrival)
            self._requests.insert(at, (method, path, status, nbytes,
                                       fault.value if fault else None))

    def _draw_fault(self, path: str) -> Fault | None:
        plan = self.faults
        with self._lock:
            script = plan.script.get(path, ())
            done = self._scripted[path]
            if done < len(script):
                self._scripted[path] += 1
                return script[done]
            if not any(path.startswith(p) for p in plan.prefixes) or plan.rate <= 0:
                return None
            fault = plan.kinds[self._rng.randrange(len(plan.kinds))] \
                if self._rng.random() < plan.rate else None
            if fault is not None and fault is not Fault.SLOW:
                if plan.max_consecutive and self._consecutive[path] >= plan.max_consecutive:
                    fault = None
            self._consecutive[path] = self._consecutive[path] + 1 \
                if fault not in (None, Fault.SLOW) else 0
            return fault

    # -- STAC API --------------------------------------------------------------------------
    def _search(self, params: Mapping) -> list[dict]:
        collections = params.get("collections")
        if isinstance(collections, str):
            collections = collections.split(",")
        region = None
        if params.get("intersects"):
            intersects = params["intersects"]
            if isinstance(intersects, str):
                intersects = json.loads(intersects)
            region = geom.Geometry(intersects, "EPSG:4326")
        elif params.get("bbox"):
            bbox = params["bbox"]
            bbox = [float(v) for v in (bbox.split(",") if isinstance(bbox, str) else bbox)]
            region = geom.box(*bbox, "EPSG:4326")
        start = end = None
        if params.get("datetime"):
            lo, _, hi = str(params["datetime"]).partition("/")
            start = _parse_time(lo) if lo not in ("", "..") else None
            end = _parse_time(hi or lo) if hi not in ("..",) else None
        found = []
        for item in self.items:
            if collections and item.collection_id not in collections:
                continue
            when = _aware(item.datetime)
            if start and when < start or end and when > end:
                continue
            if region is not None and not geom.Geometry(item.geometry, "EPSG:4326").intersects(
                    region):
                continue
            found.append(item.to_dict())
        return found


def _parse_time(text: str) -> datetime:
    return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class _Handler(BaseHTTPRequestHandler):
    server_ref: LoopbackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence stderr logging
        return

    # -- dispatch --------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self, head: bool = False) -> None:
        self.arrival = self.server_ref._arrive()
        try:
            self._answer(head)
        finally:  # recorded or not (a client gone mid-answer), it is no longer in flight
            self.server_ref._settle_one()

    def _answer(self, head: bool) -> None:
        srv = self.server_ref
        url = urlparse(self.path)
        fault = srv._draw_fault(url.path)
        if fault is Fault.HANG:
            time.sleep(srv.faults.hang_s)
            srv._record(self.command, url.path, 0, 0, fault, self.arrival)
            self.close_connection = True
            return
        if fault is Fault.SLOW:
            time.sleep(srv.faults.slow_s)
        if fault in (Fault.ERROR_500, Fault.ERROR_503, Fault.TOO_MANY):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep-alive in step
            status = int(fault.value)
            body = json.dumps({"error": f"injected {status}"}).encode()
            # a HEAD answer has no body: one left on a kept-alive connection would be read by
            # the client as (the start of) its next answer
            self._send(status, body, "application/json", fault=fault, head=head,
                       headers={"Retry-After": "0"} if status == 429 else None)
            return
        if url.path.startswith(FILES_PREFIX):
            self._file(url.path, head, fault)
        elif url.path.startswith(STAC_PREFIX):
            self._stac(url, fault)
        else:
            self._send(404, b"not found", "text/plain", fault=fault, head=head)

    def _send(self, status: int, body: bytes, ctype: str, *, fault: Fault | None = None,
              headers: Mapping[str, str] | None = None, head: bool = False,
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        sent = 0
        if not head:
            if fault is Fault.TRUNCATE:
                body = body[: len(body) // 2]
                self.close_connection = True
            try:
                self.wfile.write(body)
                self.wfile.flush()
                sent = len(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
        self.server_ref._record(self.command, urlparse(self.path).path, status, sent, fault,
                                self.arrival)

    # -- files with ranges -----------------------------------------------------------------
    def _file(self, path: str, head: bool, fault: Fault | None) -> None:
        srv = self.server_ref
        name = path[len(FILES_PREFIX):]
        target = (srv.root / name).resolve() if srv.root else None
        if target is None or srv.root.resolve() not in target.parents or not target.is_file():
            self._send(404, b"not found", "text/plain", fault=fault, head=head)
            return
        size = target.stat().st_size
        header = self.headers.get("Range")
        if header is None:
            with open(target, "rb") as fh:
                body = b"" if head else fh.read()
            self._send(200, body, "image/tiff", fault=fault, head=head, length=size,
                       headers={"Accept-Ranges": "bytes"})
            return
        match = _RANGE.match(header.strip())
        if not match or int(match.group(1)) >= size:
            self._send(416, b"", "text/plain", fault=fault,
                       headers={"Content-Range": f"bytes */{size}"})
            return
        first = int(match.group(1))
        last = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        with open(target, "rb") as fh:
            fh.seek(first)
            body = fh.read(last - first + 1)
        self._send(206, b"" if head else body, "image/tiff", fault=fault, head=head,
                   length=len(body), headers={"Accept-Ranges": "bytes",
                                              "Content-Range": f"bytes {first}-{last}/{size}"})

    # -- STAC API --------------------------------------------------------------------------
    def _stac(self, url, fault: Fault | None) -> None:
        srv = self.server_ref
        base = srv.stac_url
        rest = url.path[len(STAC_PREFIX):].strip("/")
        if rest == "":
            body = {"type": "Catalog", "id": "fake", "stac_version": "1.0.0",
                    "description": "fusecube loopback STAC API",
                    "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                   "https://api.stacspec.org/v1.0.0/item-search",
                                   "https://api.stacspec.org/v1.0.0/collections"],
                    "links": [{"rel": "self", "href": base, "type": "application/json"},
                              {"rel": "root", "href": base, "type": "application/json"},
                              {"rel": "search", "href": base + "/search", "method": "POST",
                               "type": "application/geo+json"},
                              {"rel": "search", "href": base + "/search", "method": "GET",
                               "type": "application/geo+json"},
                              {"rel": "data", "href": base + "/collections"}]}
        elif rest == "conformance":
            body = {"conformsTo": ["https://api.stacspec.org/v1.0.0/item-search"]}
        elif rest == "search":
            if self.command == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                params = json.loads(self.rfile.read(length) or b"{}")
            else:
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
            found = srv._search(params)
            offset = int(params.get("token") or 0)
            limit = min(int(params.get("limit") or srv.page_size), srv.page_size)
            page = found[offset:offset + limit]
            if srv.paging in ("repeat", "endless"):
                page = found[:limit]
                if srv.paging == "endless":
                    page = [{**f, "id": f"{f['id']}-{offset}"} for f in page]
                found = found * (offset + 2 * limit + 1)  # always more to come
            if srv.paging == "self" and found:
                found = found * (offset + 2 * limit + 1)
                offset -= limit  # the next link below then points at this very page
            links = []
            if offset + limit < len(found):
                if self.command == "POST":
                    links.append({"rel": "next", "href": base + "/search", "method": "POST",
                                  "body": {**params, "token": str(offset + limit)}})
                else:
                    query = "&".join(f"{k}={v}" for k, v in {**params,
                                                             "token": offset + limit}.items())
                    links.append({"rel": "next", "href": f"{base}/search?{query}"})
            body = {"type": "FeatureCollection", "features": page, "links": links,
                    "numberMatched": len(found), "numberReturned": len(page)}
        else:
            self._send(404, b"{}", "application/json", fault=fault)
            return
        self._send(200, json.dumps(body).encode(), "application/json", fault=fault)
