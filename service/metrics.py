"""Every Prometheus metric of the service, declared once. Labels stay low-cardinality: the
route template (never the raw path), the stage name, the model name, and A/B arm names, which
come from the experiment config (never from requests).

CTR per arm: ``sum by (arm) (rate(genrec_ab_clicks_total[5m]))
/ sum by (arm) (rate(genrec_ab_exposures_total[5m]))``.  These counters are per process; the
cumulative totals shared by all replicas are in Redis (``GET /admin/experiment``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    ["model", "version"],
)
READY = Gauge("genrec_ready", "1 once the artifacts are loaded")

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
AB_SHARE = Gauge("genrec_ab_share", "Current traffic share of each A/B arm", ["arm"])

# Model lifecycle.
MODEL_RELOADS = Counter(
    "genrec_model_reloads_total", "Artifact versions offered to the service, by outcome "
    "(swapped, rejected, rollback)", ["result"],
)
SERVING_VERSION = Gauge(
    "genrec_serving_version_info", "The artifact version serving (value 1)", ["version"]
)

# Degradation and the store.
DEGRADED = Counter(
    "genrec_degraded_responses_total", "Answers served without a part they normally use, by "
    "reason (store: Redis unreachable; models: a path's models not live yet)", ["reason"],
)
REDIS_LATENCY = Histogram(
    "genrec_redis_latency_seconds", "Redis call latency by operation", ["op"],
    buckets=_LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "genrec_redis_errors_total", "Failed Redis calls by operation and kind (timeout, "
    "connection, breaker_open)", ["op", "kind"],
)
REDIS_BREAKER_OPEN = Gauge("genrec_redis_breaker_open", "1 while the Redis circuit is open")
EXPOSURES_DROPPED = Counter(
    "genrec_exposures_dropped_total", "Exposures that could not be written (store down)"
)
STORE_RESETS = Counter(
    "genrec_store_resets_total", "Store resets detected (seed marker gone) and re-seeded"
)
STORE_USERS = Gauge("genrec_store_users", "Users held by the embedded store")
STORE_EVICTIONS = Counter(
    "genrec_store_evictions_total", "Users evicted from the embedded store (LRU cap)"
)
EXPERIMENT_REVISION = Gauge(
    "genrec_experiment_revision", "Revision of the experiment state this process applies"
)
