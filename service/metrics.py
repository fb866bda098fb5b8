"""Every Prometheus metric of the service, declared once. Labels stay low-cardinality: the
route template (never the raw path), the stage name, the model name, and A/B arm names, which
come from the experiment config (never from requests).

CTR per arm: ``sum by (arm) (rate(genrec_ab_clicks_total[5m]))
/ sum by (arm) (rate(genrec_ab_exposures_total[5m]))``.  These counters are per process; the
cumulative totals shared by all replicas are in Redis (``GET /admin/experiment``).
``docker/grafana/dashboards/genrec.json`` is the Grafana dashboard over these series.

Several worker processes per replica (uvicorn ``--workers N``): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory writable by the workers, one per replica, in the environment *before*
the workers start (prometheus-client picks its value store when it is imported), and empty it
whenever the replica (not a worker) restarts: files left by an earlier run would be summed in.
``/metrics`` then merges every worker's files (``render``): counters and histograms are summed,
each gauge by its ``multiprocess_mode`` below, and ``process_cpu_seconds_total`` /
``process_resident_memory_bytes`` are summed over the workers that wrote there and are still
alive (read from ``/proc``; a dead worker's CPU drops out, which ``rate()`` takes as a reset).
A gauge's labelset that is cleared (the old serving version) reads 0 instead of vanishing: the
multiprocess files keep every labelset they ever held. A worker that dies leaves its files:
its counts stay (as they should), its ``live*`` gauges too until
``prometheus_client.multiprocess.mark_process_dead(pid)`` removes them (gunicorn's
``child_exit`` hook can call it; uvicorn has no such hook, so restart the replica instead).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import Gauge as _BaseGauge
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Gauge(_BaseGauge):
    """A gauge whose ``clear()`` also works in multiprocess mode: every labelset is set to 0
    first, since the worker's file keeps its last value (prometheus-client's own ``clear``
    only forgets the labelsets in memory there, so a replaced version would still read 1)."""

    def clear(self) -> None:
        if not os.environ.get(MULTIPROC_ENV):
            super().clear()
            return
        for family in self.collect():
            for sample in family.samples:
                self.labels(**sample.labels).set(0)
        with warnings.catch_warnings():  # "not implemented in multi-process mode": done above
            warnings.simplefilter("ignore", UserWarning)
            super().clear()


_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

REQUESTS = Counter(
    "genrec_requests_total", "HTTP requests by route template and status code",
    ["endpoint", "status"],
)
REQUEST_LATENCY = Histogram(
    "genrec_request_latency_seconds", "HTTP request latency by route template",
    ["endpoint"], buckets=_LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "genrec_stage_latency_seconds", "Pipeline stage latency",
    ["path", "stage"], buckets=_LATENCY_BUCKETS,
)
STAGE_CANDIDATES = Histogram(
    "genrec_stage_candidates", "Candidates leaving each pipeline stage",
    ["path", "stage"], buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
COLD_START = Counter("genrec_cold_start_total", "Recommendations served by the cold-start fallback")
EVENTS = Counter("genrec_events_total", "Accepted interaction events", ["type"])
MODEL_INFO = Gauge(
    "genrec_model_info", "Loaded models (value 1), labelled by name and artifact version",
    ["model", "version"], multiprocess_mode="livemax",
)
# A replica is ready when every worker is.
READY = Gauge("genrec_ready", "1 once the artifacts are loaded", multiprocess_mode="livemin")

# A/B experiment, per arm.
AB_REQUESTS = Counter(
    "genrec_ab_requests_total", "Recommendations served, by A/B arm and pipeline path",
    ["arm", "path"],
)
AB_LATENCY = Histogram(
    "genrec_ab_latency_seconds", "/recommend handler latency by A/B arm",
    ["arm"], buckets=_LATENCY_BUCKETS,
)
AB_EXPOSURES = Counter(
    "genrec_ab_exposures_total", "Served lists recorded as exposures, by A/B arm", ["arm"]
)
AB_CLICKS = Counter(
    "genrec_ab_clicks_total", "Clicks attributed to an exposure (once per request and item), by "
    "A/B arm", ["arm"],
)
AB_SHARE = Gauge("genrec_ab_share", "Current traffic share of each A/B arm", ["arm"],
                 multiprocess_mode="livemostrecent")

# Model lifecycle.
MODEL_RELOADS = Counter(
    "genrec_model_reloads_total", "Artifact versions offered to the service, by outcome "
    "(swapped, rejected, rollback)", ["result"],
)
SERVING_VERSION = Gauge(
    "genrec_serving_version_info", "The artifact version serving (value 1)", ["version"],
    multiprocess_mode="livemax",
)

# Degradation and the store.
OVERLOAD_REJECTIONS = Counter(
    "genrec_overload_rejections_total", "Model requests answered 503 at once because "
    "max_inflight were already in the process (backpressure)", ["endpoint"],
)
DEGRADED = Counter(
    "genrec_degraded_responses_total", "Answers served without a part they normally use, by "
    "reason (store: Redis unreachable; models: a path's models not live yet)", ["reason"],
)
COMPUTE_DROPPED = Counter(
    "genrec_compute_dropped_total", "Model calls dropped before their work started, by reason "
    "(deadline: queued past GENREC_COMPUTE_DEADLINE_MS; disconnected: the client went away)",
    ["reason"],
)
COMPUTE_BATCH = Histogram(
    "genrec_compute_batch_size", "Pipeline runs computed together in one micro-batch",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
REDIS_LATENCY = Histogram(
    "genrec_redis_latency_seconds", "Redis call latency by operation", ["op"],
    buckets=_LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "genrec_redis_errors_total", "Failed Redis calls by operation and kind (timeout, "
    "connection, breaker_open)", ["op", "kind"],
)
REDIS_BREAKER_OPEN = Gauge("genrec_redis_breaker_open", "1 while the Redis circuit is open",
                           multiprocess_mode="livemax")
EXPOSURES_DROPPED = Counter(
    "genrec_exposures_dropped_total", "Exposures that could not be written (store down)"
)
STORE_RESETS = Counter(
    "genrec_store_resets_total", "Store resets detected (seed marker gone) and re-seeded"
)
# Each worker's embedded store is its own: the replica holds their sum.
STORE_USERS = Gauge("genrec_store_users", "Users held by the embedded store",
                    multiprocess_mode="livesum")
STORE_EVICTIONS = Counter(
    "genrec_store_evictions_total", "Users evicted from the embedded store (LRU cap)"
)
EXPERIMENT_REVISION = Gauge(
    "genrec_experiment_revision", "Revision of the experiment state this process applies",
    multiprocess_mode="livemin",
)

# M-FALCON: the HSTU ranker's cache of encoded histories (hit rate = hits / lookups).
HSTU_CACHE = Counter(
    "genrec_hstu_cache_lookups_total", "Lookups in the HSTU ranker's M-FALCON history cache, "
    "by result (hit, miss)", ["result"],
)

# Served lists answered from the result cache (service/result_cache.py) or computed.
RESULT_CACHE = Counter(
    "genrec_result_cache_lookups_total", "Lookups in the /recommend result cache, by result "
    "(hit, miss; degraded requests are not looked up)", ["result"],
)

# Series that exist from the start at 0, so a dashboard shows 0 rather than "no data" before
# the first degraded answer or cache lookup (the label values are a closed set).
for _reason in ("store", "models"):
    DEGRADED.labels(_reason)
for _reason in ("deadline", "disconnected"):
    COMPUTE_DROPPED.labels(_reason)
for _result in ("hit", "miss"):
    HSTU_CACHE.labels(_result)
    RESULT_CACHE.labels(_result)


# --- M-FALCON cache counts ----------------------------------------------------------------

# The cache lives in models/ (which never imports service/) and counts plain ``hits`` and
# ``misses``; each version has its own cache. What was already added to the counter is kept
# per cache object, so a reload (a new cache counting from 0) never subtracts.
_cache_seen: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()  # model compute may run on worker threads


def record_hstu_cache(components: Any) -> None:
    """Add the HSTU stage's cache hits and misses since the last call to the counters. Cheap
    (two attribute reads); call it after a request that may have ranked with HSTU."""
    stage = getattr(components, "rankers", {}).get("hstu_ranker")
    cache = getattr(stage, "cache", None)
    if cache is None:
        return
    with _cache_lock:
        hits, misses = cache.hits, cache.misses
        seen_hits, seen_misses = _cache_seen.get(cache, (0, 0))
        if hits > seen_hits:
            HSTU_CACHE.labels("hit").inc(hits - seen_hits)
        if misses > seen_misses:
            HSTU_CACHE.labels("miss").inc(misses - seen_misses)
        _cache_seen[cache] = (hits, misses)


# --- the scrape -----------------------------------------------------------------------------

def render() -> bytes:
    """The text of ``GET /metrics``: this process's registry, or, with
    ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's files merged (module docstring)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()  # per scrape, as prometheus-client documents
    MultiProcessCollector(registry, path=path)
    registry.register(WorkerProcessCollector(path))
    return generate_latest(registry)


_PID_FILE = re.compile(r"_(\d+)\.db$")


class WorkerProcessCollector(Collector):
    """CPU seconds, resident memory and open fds summed over the live processes that write
    to a multiprocess directory (its files are named ``<kind>_<pid>.db``). The default
    process collector only sees the process that answers the scrape."""

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.path, self.proc = path, proc

    def pids(self) -> set[int]:
        try:
            names = os.listdir(self.path)
        except OSError:
            return set()
        return {int(m.group(1)) for n in names if (m := _PID_FILE.search(n))}

    def collect(self) -> Iterator[Metric]:
        totals = {"process_cpu_seconds": 0.0, "process_resident_memory_bytes": 0.0,
                  "process_open_fds": 0.0}
        for pid in sorted(self.pids()):
            # Reads /proc/<pid>; yields nothing for a process that is gone.
            one = ProcessCollector(pid=lambda pid=pid: pid, proc=self.proc, registry=None)
            for family in one.collect():
                if family.name in totals:
                    totals[family.name] += sum(s.value for s in family.samples)
        yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent "
                                  "in seconds, summed over the live workers",
                                  value=totals["process_cpu_seconds"])
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in "
                                "bytes, summed over the live workers",
                                value=totals["process_resident_memory_bytes"])
        yield GaugeMetricFamily("process_open_fds", "Open file descriptors, summed over the "
                                "live workers", value=totals["process_open_fds"])
