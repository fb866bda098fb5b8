"""Exposure logs: which A/B arm served which items per request, and click attribution.

The ``ExposureLog`` protocol and its twins side by side: ``InMemoryExposureLog`` backs the
embedded store, ``RedisExposureLog`` a Redis store (counters survive restarts and are shared by
every replica). ``create_exposure_log`` picks one from the store URL.
"""

from service.exposures.base import CLICK_TYPES, Exposure, ExposureLog
from service.exposures.factory import close_exposure_log, create_exposure_log
from service.exposures.memory import InMemoryExposureLog
from service.exposures.redis import RedisExposureLog

__all__ = [
    "CLICK_TYPES",
    "Exposure",
    "ExposureLog",
    "InMemoryExposureLog",
    "RedisExposureLog",
    "close_exposure_log",
    "create_exposure_log",
]
