"""Shared test helpers (importable as ``tests.helpers``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx

from service.app import create_app
from service.config import Settings


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An ASGI client for an app on ``settings``, once ready (or once loading failed)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(600):
                if (await client.get("/readyz")).status_code == 200:
                    break
                if app.state.genrec.load_error:
                    break
                await asyncio.sleep(0.05)
            yield client


async def delete_keys(redis_url: str, prefix: str) -> None:
    """Remove every key under ``prefix`` (a test's private namespace) from a real Redis."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port free now (released before the server binds it; a clash is rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def uvicorn_app(settings: str, ready: Callable[[int], bool] = tcp_open,
                timeout_s: float = 180.0) -> Iterator[int]:
    """uvicorn serving ``create_app(Settings(<settings>))`` in a subprocess (its own event loop
    and GIL, as in production) on a free port; yields the port once ``ready(port)``."""
    port = free_port()
    code = ("import uvicorn\nfrom service.app import create_app\n"
            "from service.config import Settings\n"
            f"uvicorn.run(create_app(Settings({settings})), host='127.0.0.1', port={port}, "
            "log_level='error')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready(port):
            assert proc.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not become ready"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
