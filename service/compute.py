"""The compute lane: every model call of a request runs on one worker thread, never on the
event loop, and the pipeline runs of concurrent requests run together as one micro-batch.

Why one thread: the event loop stays free for /healthz, /metrics and Redis I/O while a
forward pass runs (torch releases the GIL inside its kernels, and the loop gets the GIL back
at least every switch interval), and model calls never run concurrently, so the engine's
per-user caches (M-FALCON) need no locks. More compute per replica comes from more worker
processes, not threads (one GIL).

Micro-batching: when the thread takes a call, it also takes every call already queued, and
waits up to ``batch_wait_s`` for more, up to ``batch_max`` calls. Their pipeline runs go to
``models.engine.core.batch.run_batch`` (one model pass per stage for all of them, each
result the unbatched one); other calls (/recall, /rank) run one by one, in arrival order.
Under load the queue fills while a batch computes, so batches form without any wait; the
wait only buys bigger batches at moderate load, for latency.

Background work (``run_background``: the load and smoke query of a candidate version, in
steps of tens of ms) runs on the same thread, between batches, only once no request is
queued ahead of it. On a worker thread beside the lane, the same Python work held the GIL
that every torch call of the lane must take back, and the lane ran 2-3x slower for the whole
swap; here a request waits at most for the one step that is running (a step deferred for
``BACKGROUND_MAX_WAIT_S`` runs even with requests queued, so a saturated lane still swaps).

A call still queued when its request's deadline (``deadline_s`` after the request started)
has passed is dropped before its model work starts and answered 503 (``DeadlinePassed``): its
client has most likely given up, and computing it would only delay the calls behind it. A
call whose client disconnected while it waited is dropped too (``ClientGone``): given the
request's ASGI ``receive``, the waiting handler also listens for ``http.disconnect`` (after
the body, the server sends nothing else) and cancels the call's future, which the lane
checks before the work starts.

Hand-written rather than a ThreadPoolExecutor: an executor hands its thread one job at a
time, and a batch needs every queued job at once.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from models.engine.core.batch import Call, run_batch
from models.engine.core.pipeline import PipelineResult
from service import metrics

T = TypeVar("T")


_WAKE = object()  # queued when background work is added: the lane looks at it when idle
# A background step that has waited this long runs even with requests queued, so a lane that
# never empties (past capacity) still completes a swap.
BACKGROUND_MAX_WAIT_S = 0.25


class DeadlinePassed(Exception):
    """The call waited in the lane past its request's deadline; it was not run."""


class ClientGone(Exception):
    """The request's client disconnected while its call waited; it was not run."""


async def _until_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class _Job:
    work: Call | tuple[Callable[..., Any], tuple]  # a pipeline run, or fn and its args
    deadline: float  # time.perf_counter() after which it is not started
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hands the outcome to the waiting request, on its loop (thread-safe)."""
        def put() -> None:
            if self.future.done():  # cancelled meanwhile
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        self.loop.call_soon_threadsafe(put)


class ComputeLane:
    def __init__(self, deadline_s: float, batch_max: int = 8, batch_wait_s: float = 0.0,
                 ) -> None:
        self.deadline_s = deadline_s
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self._queue: queue.SimpleQueue[_Job | object | None] = queue.SimpleQueue()
        self._background: collections.deque[tuple[Callable[[], Any], Future, float]] = \
            collections.deque()
        # Guards _background against close(): a loader thread that outlives its cancelled
        # task must get an error, not wait forever on a lane that has stopped.
        self._lock = threading.Lock()
        self._closed = False
        # Requests put in the queue and taken from it; each has one writer (the event loop's
        # thread, the lane's), so their difference is the requests waiting, without a lock.
        self._submitted = 0
        self._taken = 0
        self._thread = threading.Thread(target=self._serve, name="genrec-compute", daemon=True)
        self._thread.start()

    async def run(self, started: float, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the lane's thread; ``started`` = the request's
        ``time.perf_counter()`` at its start. Raises ``DeadlinePassed`` instead of running a
        call that is already too late."""
        return await self._submit(started, (fn, args))

    async def run_pipeline(self, started: float, call: Call,
                           receive: Callable[[], Awaitable[dict]] | None = None,
                           ) -> PipelineResult:
        """``call``'s pipeline run, batched with the other queued ones; with the request's
        ASGI ``receive`` (its body already read), a client that disconnects first gets its
        call dropped unrun (``ClientGone``)."""
        return await self._submit(started, call, receive)

    async def _submit(self, started: float, work: Call | tuple,
                      receive: Callable[[], Awaitable[dict]] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(work, started + self.deadline_s, loop.create_future(), loop)
        self._submitted += 1
        self._queue.put(job)
        if receive is None:
            return await job.future
        gone = loop.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((job.future, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():  # the client left first: the lane skips a cancelled job
            job.future.cancel()  # (a job already computing finishes; its answer is dropped)
            raise ClientGone()
        return job.future.result()

    def run_background(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the lane's thread once no request waits; blocks the calling thread
        (never the event loop's) until it has run, and returns or raises what ``fn`` did."""
        if threading.current_thread() is self._thread:
            return fn()
        done: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("compute lane closed")
            self._background.append((fn, done, time.perf_counter()))
        self._queue.put(_WAKE)
        return done.result()

    def close(self) -> None:
        self._queue.put(None)

    def _serve(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                if first is _WAKE:
                    self._background_step()
                    continue
                self._taken += 1
                batch, stop, woken = self._collect(first)
                self._run(batch)
                if woken:  # background work waits behind what is queued now
                    self._queue.put(_WAKE)
                if stop:
                    return
        finally:
            with self._lock:
                self._closed = True
                while self._background:
                    self._background.popleft()[1].set_exception(RuntimeError("lane closed"))

    def _background_step(self) -> None:
        """One background job, unless requests arrived meanwhile: then they go first."""
        if not self._background:
            return
        fn, done, queued = self._background[0]
        waiting = self._submitted - self._taken  # requests only, not other wake tokens
        if waiting > 0 and time.perf_counter() - queued < BACKGROUND_MAX_WAIT_S:
            self._queue.put(_WAKE)
            return
        self._background.popleft()
        try:
            done.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - raised in the waiting thread
            done.set_exception(exc)
        if self._background:  # a batch may have taken the token of the next job: one more
            self._queue.put(_WAKE)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool, bool]:
        """``first`` + every queued job, waiting up to ``batch_wait_s`` for more, at most
        ``batch_max`` -> (jobs, whether close() was called, whether background work woke
        the lane meanwhile)."""
        batch, until, woken = [first], time.perf_counter() + self.batch_wait_s, False
        while len(batch) < self.batch_max:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                left = until - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if job is None:
                return batch, True, woken
            if job is _WAKE:
                woken = True
                continue
            self._taken += 1
            batch.append(job)
        return batch, False, woken

    def _run(self, batch: list[_Job]) -> None:
        """Plain jobs one by one in order, then the pipeline runs as one batch; each job's
        deadline is checked just before its own work starts."""
        calls: list[_Job] = []
        for job in batch:
            if isinstance(job.work, Call):
                calls.append(job)
            elif self._still_wanted(job):
                fn, args = job.work
                try:
                    job.settle(fn(*args))
                except Exception as exc:  # noqa: BLE001 - the request's handler maps it
                    job.settle(error=exc)
        calls = [job for job in calls if self._still_wanted(job)]
        if calls:
            metrics.COMPUTE_BATCH.observe(len(calls))
            for job, result in zip(calls, run_batch([j.work for j in calls]), strict=True):
                if isinstance(result, Exception):
                    job.settle(error=result)
                else:
                    job.settle(result)

    @staticmethod
    def _still_wanted(job: _Job) -> bool:
        """False (answered where someone waits) for a job past its deadline or cancelled."""
        if job.future.cancelled():  # its request is gone: nobody waits for the answer
            metrics.COMPUTE_DROPPED.labels("disconnected").inc()
            return False
        if time.perf_counter() > job.deadline:
            metrics.COMPUTE_DROPPED.labels("deadline").inc()
            job.settle(error=DeadlinePassed())
            return False
        return True

