"""Pure ASGI middlewares (cheaper than BaseHTTPMiddleware, which wraps every response in a
stream): per-request metrics, labelled by the matched route template (never the raw path, so
/users/{user_id}/history stays one series), backpressure on the model endpoints, and the
request-body limits."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import OverloadedError

# The largest valid body (1,000 events or items) has about 1,000 arrays and objects.
MAX_JSON_CONTAINERS = 20_000


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


# The endpoints that run models: what backpressure admits (health, metrics, events and the
# admin API are cheap and always answered).
MODEL_PATHS = frozenset({"/recommend", "/recall", "/rank"})
for _path in sorted(MODEL_PATHS):  # series at 0 from the start (a dashboard shows 0)
    metrics.OVERLOAD_REJECTIONS.labels(_path)


class AdmissionMiddleware:
    """At most ``limit`` model requests in the process at once; one more gets 503 with
    ``Retry-After: 1`` before its body is read, and is counted. Past capacity the answers
    then stay fast and the admitted ones keep their latency, instead of every request
    waiting behind a queue whose clients have timed out (goodput falling below capacity)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.inflight = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in MODEL_PATHS:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            metrics.OVERLOAD_REJECTIONS.labels(path).inc()
            exc = OverloadedError()  # the one definition of this answer (service/errors.py)
            body = orjson.dumps(exc.body())
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()),
                       *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
            await send({"type": "http.response.start", "status": exc.status_code,
                        "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class BodyLimitMiddleware:
    """Bounds what a request body can cost before any route parses it.

    * 413 for a body over ``max_bytes``: from its Content-Length before any byte is read, or
      as soon as the bytes actually received pass the limit (chunked uploads, or a length
      header that lies: the count never trusts the header), so a huge body is never buffered.
    * 400 for a JSON body with more than ``max_containers`` ``[`` / ``{`` characters. Python's
      JSON parser (stdlib or orjson) holds the event loop while it builds every list, and with
      the app's large heap the garbage collector makes that superlinear: 330,000 empty arrays
      in a 1 MB body took 3-4 s, during which /healthz waited. The count is a C-speed
      ``bytes.count`` (~2 ms per MB); it includes brackets inside strings, which only a body
      built to be hostile has by the thousand (the largest valid body has ~1,000 containers).

    The body is read here (it is at most ``max_bytes``) and replayed to the app in one message.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 max_containers: int = MAX_JSON_CONTAINERS) -> None:
        self.app, self.max_bytes, self.max_containers = app, max_bytes, max_containers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await _reject(send, 413, "body_too_large",
                          f"request body larger than {self.max_bytes} bytes", close=True)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await _reject(send, 413, "body_too_large",
                              f"request body larger than {self.max_bytes} bytes", close=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _parsed_as_json(scope) and (
                body.count(b"[") + body.count(b"{") > self.max_containers):
            await _reject(send, 400, "json_too_complex",
                          f"JSON body with more than {self.max_containers} arrays and objects "
                          "([ and { characters)")
            return
        replayed = False

        async def _receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect can come

        await self.app(scope, _receive, send)


def _declared_length(scope: Scope) -> int:
    """The largest Content-Length header (0 if none). A value that is not a plain number is
    left to the server, which refuses it; an absurdly long one counts as too large."""
    longest = 0
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.strip()
            if text.isdigit():
                longest = max(longest, int(text) if len(text) < 19 else 1 << 62)
    return longest


def _parsed_as_json(scope: Scope) -> bool:
    """Whether FastAPI will parse this body as JSON: no content type, application/json or
    application/*+json (mirrors fastapi.routing)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            mime = value.split(b";", 1)[0].strip().lower()
            return mime == b"application/json" or (
                mime.startswith(b"application/") and mime.endswith(b"+json"))
    return True


async def _reject(send: Send, status: int, kind: str, msg: str, close: bool = False) -> None:
    body = orjson.dumps({"detail": [{"loc": ["body"], "msg": msg, "type": kind}]})
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:  # the rest of an oversized body is never read: the connection can't be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
