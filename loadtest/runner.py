"""The open-loop engine: sends each request at its scheduled time, whatever the server does.

Written by hand (asyncio + aiohttp) because the well-kept generators are closed loops: a
Locust user waits for its answer before it sends again, so a slow server lowers the offered
rate and hides its own queueing (coordinated omission). Here every send time is fixed before
the step starts, a request is started at its time whether or not earlier ones have answered,
and latency runs from the scheduled time, not from when the client got round to sending:
any lag of this generator counts against the server, never for it (``send_lag`` reports it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import orjson

from loadtest.schedule import Process, Step, arrivals
from loadtest.server import ServerProbe
from loadtest.traffic import Request, Traffic


@dataclass
class Record:
    """One scheduled request. ``latency_s`` from its scheduled time to the end of the answer
    (to the timeout for a timeout; nan when it was never sent)."""

    step: int
    t: float  # scheduled offset from the run's start, s
    kind: str
    route: str  # "recommend:<path>" ("recommend:?" when no path is known), "events"
    status: int  # HTTP status; 0 when there was no answer
    error: str  # "" for 2xx; else "http_<status>", "timeout", "connect", "overflow"
    latency_s: float
    send_lag_s: float  # when it was really sent - when it was due
    degraded: bool = False
    partial: bool = False


def _route(req: Request, answer: dict | None) -> str:
    if req.path != "/recommend":
        return req.path.strip("/")
    path = (answer or {}).get("path") or req.forced_path or "?"
    return f"recommend:{path}"


class Runner:
    """Steps of open-loop load against one base URL. ``max_in_flight`` bounds the client's
    open requests: a send due while it is full is recorded as an "overflow" error rather than
    delayed, so the schedule never bends."""

    def __init__(self, base_url: str, traffic: Traffic, process: Process = "poisson",
                 timeout_s: float = 10.0, max_in_flight: int = 2_000, seed: int = 0,
                 on_step: Callable[[int, Step], None] | None = None,
                 probe: ServerProbe | None = None, sample_every_s: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.probe, self.sample_every_s = probe, sample_every_s
        self.traffic, self.process, self.timeout_s = traffic, process, timeout_s
        self.max_in_flight, self.on_step = max_in_flight, on_step
        self._rng = np.random.default_rng(seed)
        self.records: list[Record] = []
        self._in_flight = 0

    async def run(self, steps: list[Step]) -> list[Record]:
        conn = aiohttp.TCPConnector(limit=self.max_in_flight, force_close=False)
        async with aiohttp.ClientSession(connector=conn) as session:
            loop = asyncio.get_running_loop()
            self._t0 = loop.time()
            sampler = asyncio.create_task(self._sample(session)) if self.probe else None
            start = 0.0
            try:
                for i, step in enumerate(steps):
                    if self.on_step:
                        self.on_step(i, step)
                    await self._step(session, i, step, start)
                    start += step.duration_s
            finally:
                if sampler is not None:
                    sampler.cancel()
                    await asyncio.gather(sampler, return_exceptions=True)
                    await self.probe.sample(session, loop.time() - self._t0)  # the last one
        return self.records

    async def _sample(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        assert self.probe is not None
        while True:
            await self.probe.sample(session, loop.time() - self._t0)
            await asyncio.sleep(self.sample_every_s)

    async def _step(self, session: aiohttp.ClientSession, i: int, step: Step,
                    start: float) -> None:
        loop = asyncio.get_running_loop()
        due = start + arrivals(step, self.process, self._rng)  # (n,) offsets from t0
        tasks: list[asyncio.Task] = []
        for t in due.tolist():
            wait = self._t0 + t - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            req = self.traffic.next()
            if self._in_flight >= self.max_in_flight:
                self.records.append(Record(i, t, req.kind, _route(req, None), 0, "overflow",
                                           math.nan, loop.time() - self._t0 - t))
                continue
            self._in_flight += 1
            tasks.append(asyncio.create_task(self._send(session, i, t, req)))
        # The step ends at its scheduled end; answers still due are waited for (bounded by
        # the timeout) and belong to this step.
        rest = self._t0 + start + step.duration_s - loop.time()
        if rest > 0:
            await asyncio.sleep(rest)
        if tasks:
            await asyncio.gather(*tasks)

    async def _send(self, session: aiohttp.ClientSession, i: int, t: float,
                    req: Request) -> None:
        loop = asyncio.get_running_loop()
        due = self._t0 + t
        lag = loop.time() - due
        status, error, answer = 0, "", None
        # The client's deadline counts from the scheduled time, as the latency does.
        budget = max(0.001, due + self.timeout_s - loop.time())
        try:
            async with session.post(self.base_url + req.path, data=orjson.dumps(req.body),
                                    headers={"content-type": "application/json"},
                                    timeout=aiohttp.ClientTimeout(total=budget)) as resp:
                status = resp.status
                raw = await resp.read()
            if 200 <= status < 300:
                answer = orjson.loads(raw) if raw else None
            else:
                error = f"http_{status}"
        except TimeoutError:  # asyncio's is the builtin since 3.11
            error = "timeout"
        except aiohttp.ClientError:
            error = "connect"
        except orjson.JSONDecodeError:
            error = "bad_json"
        finally:
            self._in_flight -= 1
        latency = min(loop.time() - due, self.timeout_s) if error == "timeout" \
            else loop.time() - due
        if answer is not None:
            self.traffic.observe(req, status, answer)
        a = answer or {}
        self.records.append(Record(i, t, req.kind, _route(req, answer), status, error, latency,
                                   lag, bool(a.get("degraded")), bool(a.get("partial"))))


def run_steps(base_url: str, traffic: Traffic, steps: list[Step], **kw: object
              ) -> tuple[list[Record], float]:
    """Blocking wrapper: -> (records, wall seconds)."""
    runner = Runner(base_url, traffic, **kw)  # type: ignore[arg-type]
    t = time.perf_counter()
    records = asyncio.run(runner.run(steps))
    return records, time.perf_counter() - t
