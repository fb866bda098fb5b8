"""Arrival schedules: when each request of a step is due, fixed before the step starts.

Open loop: the send times depend on the offered rate only, never on how fast the server
answers, so a slow answer cannot delay the requests behind it (no coordinated omission).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

Process = Literal["constant", "poisson"]
PROCESSES: tuple[str, ...] = ("constant", "poisson")

_STEP = re.compile(r"^\s*(?P<rps>\d+(?:\.\d+)?)(?:x(?P<dur>\d+(?:\.\d+)?))?"
                   r"(?::(?P<max>\d+))?\s*$")


@dataclass(frozen=True)
class Step:
    """One offered rate held for ``duration_s`` seconds, at most ``max_requests`` sends."""

    rps: float
    duration_s: float
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if not (self.rps > 0 and math.isfinite(self.rps)):
            raise ValueError(f"step rate must be a positive number, got {self.rps}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"step duration must be positive, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"step max_requests must be >= 1, got {self.max_requests}")


def parse_steps(spec: str, default_duration_s: float = 30.0) -> list[Step]:
    """"50x30,100x30:2000" -> steps (rate x seconds, optional :max requests); a step without
    ``xSECONDS`` lasts ``default_duration_s``."""
    steps = []
    for part in spec.split(","):
        m = _STEP.match(part)
        if m is None:
            raise ValueError(f"bad step {part!r}: expected RATE[xSECONDS][:MAX], e.g. 50x30")
        steps.append(Step(float(m["rps"]), float(m["dur"] or default_duration_s),
                          int(m["max"]) if m["max"] else None))
    if not steps:
        raise ValueError("no steps given")
    return steps


def arrivals(step: Step, process: Process, rng: np.random.Generator) -> np.ndarray:
    """Send offsets in seconds from the step's start, (n,) float64 ascending, all
    < ``duration_s``. constant: one every 1/rps; poisson: exponential gaps of mean 1/rps."""
    if process == "constant":
        t = np.arange(int(math.ceil(step.rps * step.duration_s))) / step.rps
    elif process == "poisson":
        # Draw ~rps*duration gaps plus slack, extend in the rare case the sum falls short.
        n = int(step.rps * step.duration_s + 10 * math.sqrt(step.rps * step.duration_s) + 10)
        t = np.cumsum(rng.exponential(1.0 / step.rps, n))  # (n,); the first after one gap
        while t[-1] < step.duration_s:
            t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / step.rps, n))])
    else:
        raise ValueError(f"unknown arrival process {process!r}; use one of {PROCESSES}")
    t = t[t < step.duration_s]
    return t if step.max_requests is None else t[: step.max_requests]
