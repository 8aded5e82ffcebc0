"""Request limits: a body size limit (413) and a per-request timeout (504), as ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import logging

log = logging.getLogger(__name__)


class LimitsMiddleware:
    """Pure ASGI middleware: body size limit (413) and a per-request timeout (504).

    Args:
        app: The wrapped ASGI app.
        max_body: Largest request body in bytes.
        timeout_s: Seconds before a request is answered 504 (if nothing was sent yet).
    """

    def __init__(self, app, max_body: int, timeout_s: float) -> None:
        self.app, self.max_body, self.timeout_s = app, max_body, timeout_s

    async def _send_json(self, send, status: int, kind: str, detail: str) -> None:
        body = json.dumps({"error": kind, "detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        """Serve one ASGI connection within the limits."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = (f"Request body is larger than this server accepts "
                     f"({self.max_body // 2**20} MB); send a smaller cube or tile it.")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._send_json(send, 400, "ApiError", "Content-Length is not a number.")
                return
            if declared > self.max_body:
                await self._send_json(send, 413, "ApiError", too_large)
                return
        started = False
        app_receive = receive
        if length is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            # no Content-Length (chunked): read the body first, up to the limit, then replay it
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body:
                    await self._send_json(send, 413, "ApiError", too_large)
                    return
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def app_receive():
                return replay.pop() if replay else await receive()

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, app_receive, tracking_send), self.timeout_s)
        except TimeoutError:
            log.warning("request %s %s timed out after %.0f s", scope.get("method"),
                        scope.get("path"), self.timeout_s)
            if not started:
                await self._send_json(send, 504, "ApiError",
                                      f"The request took longer than {self.timeout_s:.0f} s; "
                                      "send a smaller cube or try again later.")
