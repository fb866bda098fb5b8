"""Pure ASGI middlewares (cheaper than BaseHTTPMiddleware, which wraps every response in a
stream): per-request metrics, labelled by the matched route template (never the raw path, so
/users/{user_id}/history stays one series), and the request-body size limit."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.REQUESTS.labels(endpoint, str(status)).inc()
            metrics.REQUEST_LATENCY.labels(endpoint).observe(time.perf_counter() - t0)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: refused from its Content-Length before any byte is
    read, or as soon as the streamed chunks pass the limit (chunked uploads), so a huge body is
    never buffered or parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send: Send) -> None:
        body = orjson.dumps({"detail": [{
            "loc": ["body"], "type": "body_too_large",
            "msg": f"request body larger than {self.max_bytes} bytes"}]})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False  # the server rejects a malformed length itself
                if too_big:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def _receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)
