"""The one settings class. Every field reads ``GENREC_<NAME>`` from the environment and is
validated when the app starts, so a bad value fails fast with the variable's name. The engine's
fields (recall, rank, rerank, generative path) come from ``models.engine.core.settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.engine.core.settings import EngineSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings, EngineSettings):
    model_config = SettingsConfigDict(env_prefix="GENREC_", extra="ignore")

    # Data and artifacts.
    dataset: str = Field("ml-100k", description="bundled dataset name or a path")
    artifacts_dir: Path = Field(REPO_ROOT / "artifacts" / "ml-100k")
    build_if_missing: bool = Field(True, description="`genrec serve` builds missing artifacts")

    # User store: no URL means the embedded in-process store.
    redis_url: str | None = None
    redis_prefix: str = "genrec:"
    max_history: int = Field(200, ge=1, le=10_000)
    seed_store: bool = Field(True, description="seed the store with the dataset's histories")

    # A/B experiment (see service/experiments.py). GENREC_EXPERIMENT_JSON wins over the file;
    # neither means one arm, "cascade", with all traffic.
    experiment_file: Path | None = None
    experiment_json: str | None = None
    # Bearer token for /admin/*; unset means the admin endpoints answer 403 (disabled).
    admin_token: SecretStr | None = None
    # Exposures: the Redis stream is capped near this length (MAXLEN ~); the embedded store
    # remembers this many requests for click attribution.
    exposure_stream_maxlen: int = Field(100_000, ge=1, le=100_000_000)
    # How long (seconds) a served list can still be credited with a click (Redis backend).
    exposure_ttl_s: float = Field(86_400.0, ge=0.001, le=90 * 86_400, allow_inf_nan=False)

    # Redis faults: every call times out after redis_timeout_ms; after breaker_failures
    # failures in a row the circuit opens and calls fail at once for breaker_reset_s, then one
    # trial call is let through (half-open).
    redis_timeout_ms: float = Field(50.0, gt=0, le=60_000, allow_inf_nan=False)
    breaker_failures: int = Field(3, ge=1, le=1_000)
    breaker_reset_s: float = Field(1.0, gt=0, le=3_600, allow_inf_nan=False)
    # The embedded store keeps at most this many users (least recently used evicted first).
    memory_store_max_users: int = Field(200_000, ge=1, le=100_000_000)

    # Input limits: request bodies above max_body_bytes get 413 before they are parsed.
    max_body_bytes: int = Field(1_000_000, ge=1_024, le=1_000_000_000)
    # Backpressure: at most max_inflight model requests (/recommend, /recall, /rank) are in
    # the process at once; one more is answered 503 + Retry-After at once, before its body is
    # read, instead of queueing behind work its client may have given up on.
    max_inflight: int = Field(64, ge=1, le=100_000)
    # Model calls run on one compute thread in arrival order (service/compute.py); a call
    # still queued compute_deadline_ms after its request started is dropped and answered 503.
    compute_deadline_ms: float = Field(2_000.0, gt=0, le=600_000, allow_inf_nan=False)
    # Micro-batches: the compute thread runs every queued /recommend pipeline run together
    # (at most batch_max), waiting up to batch_wait_ms for more; 1 turns batching off.
    batch_max: int = Field(8, ge=1, le=1_024)
    batch_wait_ms: float = Field(0.0, ge=0, le=100, allow_inf_nan=False)
    # Served lists kept for a repeat of the same request (same version, arm, k, history and
    # exclusions: service/result_cache.py), least recently used evicted; 0 turns it off.
    # About 1.3 KB a list at k = 10 (3 KB at k = 100): 20,000 lists take 25-60 MB.
    result_cache_size: int = Field(20_000, ge=0, le=10_000_000)

    # Model lifecycle: the `current` pointer of artifacts_dir is polled every reload_poll_s
    # (0 turns the watch off; POST /admin/models/reload still works); smoke_users known users
    # are run through every pipeline before a new version may serve.
    reload_poll_s: float = Field(2.0, ge=0, le=3_600, allow_inf_nan=False)
    smoke_users: int = Field(3, ge=1, le=100)

    # Experiment state shared by replicas (Redis backend): polled this often.
    experiment_sync_s: float = Field(1.0, gt=0, le=3_600, allow_inf_nan=False)
    # Redis backend: how often the seed marker is checked to detect a store that came back
    # empty (then re-seeded); 0 turns the check off.
    store_check_s: float = Field(2.0, ge=0, le=3_600, allow_inf_nan=False)

    # Process.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65_535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("experiment_file", "experiment_json", "admin_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        # An exported-but-empty variable (GENREC_ADMIN_TOKEN=) means "not set", never an
        # empty token that every empty Authorization header would match.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError("must start with redis://, rediss://, unix:// or memory://")
        return v
