"""The compute lane: every model call of a request runs on one worker thread, in arrival
order, never on the event loop.

Why one thread: the event loop stays free for /healthz, /metrics and Redis I/O while a
forward pass runs (torch releases the GIL inside its kernels, and the loop gets the GIL back
at least every switch interval), and model calls never run concurrently, so the engine's
per-user caches (M-FALCON) need no locks. More compute per replica comes from more worker
processes, not threads (one GIL).

A call still queued when its request's deadline (``compute_deadline_ms`` after the request
started) has passed is dropped before its model work starts and answered 503: its client has
most likely given up, and computing it would only delay the requests behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The call waited in the lane past its request's deadline; it was not run."""


class ComputeLane:
    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-compute")

    async def run(self, started: float, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the lane's thread; ``started`` = the request's
        ``time.perf_counter()`` at its start. Raises ``DeadlinePassed`` instead of running a
        call that is already too late. A cancelled request's call that has not started is
        dropped (the executor's future is cancelled with it)."""
        deadline = started + self.deadline_s

        def job() -> T:
            if time.perf_counter() > deadline:
                raise DeadlinePassed
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, job)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
