"""What the engine is configured with: recall quotas, the cascade's ranker and reranker, the
generative path's search and the HSTU cache. The service's ``Settings`` extends this class with
``GENREC_`` environment variables; offline evaluation builds the same engine from it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    # Artifacts carry each path's fusion plan (fusion.json: sources, quotas, weights and
    # diversity, fitted on validation). Artifacts built before it serve these instead: the
    # cascade's recall quotas and the generative path's candidate count, ranked by the ranker.
    recall_ann_k: int = Field(200, ge=0, le=5_000)
    recall_itemcf_k: int = Field(200, ge=0, le=5_000)
    recall_popular_k: int = Field(50, ge=0, le=5_000)
    # The cascade's ranker; the fusion plan's ranker weight was fitted with the registry's
    # (din), so another choice serves that weight for it.
    ranker: Literal["din", "deepfm"] = "din"
    rerank: Literal["dpp", "mmr", "none"] = "dpp"
    # None: each path's fitted diversity (fusion.json), or 0.05 for artifacts without one.
    rerank_diversity: float | None = Field(None, ge=0.0, le=1.0)
    rerank_window: int = Field(100, ge=1, le=2_000)
    hnsw_ef_search: int = Field(128, ge=1, le=4_096)

    # TDM layer-wise beam search: nodes kept per level (at least k are kept either way).
    tdm_beam: int = Field(100, ge=1, le=10_000)

    # Generative path: beam width of the semantic-ID search (widened to the candidate count
    # when smaller), first-token sampling temperature (0 = deterministic), candidates handed to
    # HSTU, M-FALCON microbatch and history-cache size/TTL.
    semantic_id_beam_size: int = Field(50, ge=1, le=1_000)
    semantic_id_temperature: float = Field(0.0, ge=0.0, le=10.0)
    # 50 chosen on the ml-100k validation split (HR@10 0.251 vs 0.228 at 100, 0.222 at 200).
    generative_candidates: int = Field(50, ge=1, le=1_000)
    hstu_microbatch: int = Field(128, ge=1, le=4_096)
    hstu_cache_size: int = Field(256, ge=1, le=1_000_000)
    hstu_cache_ttl_s: float = Field(30.0, gt=0.0, le=86_400.0)

    # Intra-op threads per process (scale out with processes).
    torch_threads: int = Field(1, ge=1, le=256)
