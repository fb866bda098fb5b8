"""A circuit breaker for the Redis link, and the one error a store raises when Redis can't be
used (down, hung, or the circuit open).

Written by hand (about 60 lines) because none of the PyPI options fits: aiobreaker is unmaintained
since 2021, pybreaker's async path needs Tornado, and purgatory / circuitbreaker let every
concurrent call through while half-open and keep process-global registries, where we need one
trial call, one instance per Redis URL and our own metrics.

States: closed (calls pass; ``failures`` consecutive failures open it), open (calls fail at once
for ``reset_s``), half-open (exactly one trial call passes; its success closes the circuit, its
failure opens it again for another ``reset_s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class StoreUnavailable(RedisConnectionError):
    """Redis could not be used: a timeout, a connection error or an open circuit.

    A ``redis.exceptions.ConnectionError`` subclass, so any handler that maps Redis outages to
    a 503 (``service/errors.py``) covers it; callers that can degrade catch it by this name.
    ``kind`` is the metrics label: timeout, connection or breaker_open (the store adds expired
    and reset). ``breaker``: the circuit of the link that failed, if any, so the 503 can tell
    when Redis will next be tried (``retry_after_s``, read when the answer is made)."""

    def __init__(self, op: str, kind: str, detail: str = "",
                 breaker: CircuitBreaker | None = None) -> None:
        super().__init__(f"redis {op}: {kind}{': ' + detail if detail else ''}")
        self.op, self.kind, self.breaker = op, kind, breaker

    def retry_after_s(self) -> float:
        """Seconds until the breaker lets the next trial call through now (0 when it is not
        open, or there is no breaker)."""
        return self.breaker.retry_after_s() if self.breaker is not None else 0.0


class CircuitBreaker:
    """Not thread-safe: it lives on one event loop, and nothing here awaits."""

    def __init__(self, failures: int = 3, reset_s: float = 1.0,
                 on_change: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self.failures, self.reset_s = failures, reset_s
        self._on_change, self._clock = on_change, clock
        self.state = CLOSED
        self._count = 0  # consecutive failures while closed
        self._opened_at = 0.0
        self._trial_out = False  # the half-open trial call is in flight

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def allow(self) -> bool:
        """True when a call may go out now; the caller must then report ``success``,
        ``failure`` or ``release`` (a call that ended without telling either way)."""
        if self.state == OPEN:
            if self._clock() - self._opened_at < self.reset_s:
                return False
            self._set(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self._trial_out:
                return False  # one trial at a time: the rest still fail fast
            self._trial_out = True
        return True

    def success(self) -> None:
        self._count, self._trial_out = 0, False
        self._set(CLOSED)

    def failure(self) -> None:
        self._trial_out = False
        self._count += 1
        if self.state == HALF_OPEN or self._count >= self.failures:
            self._opened_at = self._clock()
            self._set(OPEN)

    def release(self) -> None:
        """A call that neither succeeded nor failed (cancelled): free the trial slot."""
        self._trial_out = False

    def retry_after_s(self) -> float:
        """Seconds until the next trial call is let through (0 when closed)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))
