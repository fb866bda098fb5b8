"""The one settings class. Every field reads ``GENREC_<NAME>`` from the environment and is
validated when the app starts, so a bad value fails fast with the variable's name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
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

    # Cascade.
    recall_ann_k: int = Field(200, ge=0, le=5_000)
    recall_itemcf_k: int = Field(200, ge=0, le=5_000)
    recall_popular_k: int = Field(50, ge=0, le=5_000)
    ranker: Literal["din", "deepfm"] = "din"
    rerank: Literal["dpp", "mmr", "none"] = "dpp"
    # Chosen on the ml-100k validation split: DPP at 0.05 costs ~3% HR@10 against no rerank
    # (0.207 vs 0.213); 0.2 cost 28%.
    rerank_diversity: float = Field(0.05, ge=0.0, le=1.0)
    rerank_window: int = Field(100, ge=1, le=2_000)
    hnsw_ef_search: int = Field(128, ge=1, le=4_096)

    # TDM layer-wise beam search: nodes kept per level (at least k are kept either way).
    tdm_beam: int = Field(100, ge=1, le=10_000)

    # Generative path (service/pipeline/factory.py): beam width of the semantic-ID search
    # (widened to the candidate count when smaller), first-token sampling temperature (0 =
    # deterministic), candidates handed to HSTU, M-FALCON microbatch and history-cache size/TTL.
    semantic_id_beam_size: int = Field(50, ge=1, le=1_000)
    semantic_id_temperature: float = Field(0.0, ge=0.0, le=10.0)
    # 50 chosen on the ml-100k validation split (HR@10 0.251 vs 0.228 at 100, 0.222 at 200).
    generative_candidates: int = Field(50, ge=1, le=1_000)
    hstu_microbatch: int = Field(128, ge=1, le=4_096)
    hstu_cache_size: int = Field(256, ge=1, le=1_000_000)
    hstu_cache_ttl_s: float = Field(30.0, gt=0.0, le=86_400.0)

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

    # Runtime.
    torch_threads: int = Field(1, ge=1, le=256)
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
