"""Shared test helpers (importable as ``tests.helpers``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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
