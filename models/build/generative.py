"""`genrec build`, generative part: semantic IDs, the TIGER generator and the HSTU ranker.

Written next to the other components' files (``models.registry``):
  rqvae.{safetensors,json}        RQ-VAE over the items' embedding source
  semantic_ids.safetensors        (n_items, L+1) unique semantic IDs (codes + dedup token)
  tiger.{safetensors,json}        encoder-decoder generator over semantic-ID tokens
  hstu.{safetensors,json}         HSTU ranker (M-FALCON at serving time)

The item embedding source is chosen per dataset (``semantic_ids.source``): "content" embeds
"title | genres | year" with MiniLM (items with text, e.g. MovieLens), "collaborative" uses the
trained two-tower's item vectors (items without text, e.g. Amazon Beauty); "auto" picks content
when the dataset has titles.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.semantic_ids import SemanticIds
from models.artifacts.checkpoint import save_model
from models.build.content import content_vectors
from models.build.job import BuildJob
from models.data import Dataset
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig
from models.nets.rqvae import RQVAE, RQVAEConfig, code_stats
from models.nets.tiger import TIGER, TigerConfig
from models.registry import Component
from models.train.hstu_ranker import HSTUTrainConfig, train_hstu
from models.train.rqvae import RQVAETrainConfig, train_rqvae
from models.train.tiger import TigerTrainConfig, train_tiger

SEMANTIC_IDS = "semantic_ids.safetensors"


def item_embedding_source(ds: Dataset, source: str,
                          collaborative: np.ndarray | Callable[[], np.ndarray],
                          cache_dir: Path | None = None) -> tuple[str, np.ndarray]:
    """-> (source actually used, (n_items, D) float32 vectors for the RQ-VAE).
    ``collaborative`` may be a function: it is read only when that source is used, so a
    content build needs no two-tower file (a GPU box retraining from a carried cache)."""
    if source == "auto":
        source = "content" if ds.item_side.titles is not None else "collaborative"
    if source == "content":
        return source, content_vectors(ds, cache_dir)
    if source == "collaborative":
        x = np.asarray(collaborative() if callable(collaborative) else collaborative,
                       dtype=np.float32)
        # Unit-norm vectors: the RQ-VAE's k-means and MSE then work on directions, as with
        # MiniLM's normalised output.
        return source, x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    raise ValueError(f"semantic_ids.source must be auto, content or collaborative, not {source!r}")


def build_semantic_ids(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Train the RQ-VAE, derive unique semantic IDs, write both; -> report (codebook use,
    collisions). Content vectors are cached in ``.cache`` beside the artifacts directory."""
    t = time.perf_counter()
    source, x = item_embedding_source(job.ds, job.params("semantic_ids")["source"],
                                      job.item_vectors, job.out.parent / ".cache")
    job.timings["item_content"] = time.perf_counter() - t
    t = time.perf_counter()
    cfg = RQVAEConfig(in_dim=int(x.shape[1]), seed=job.seed, **job.params("rqvae"))
    model = RQVAE(cfg)
    train_cfg = RQVAETrainConfig(seed=job.seed, **job.params("rqvae_train"))
    job.console.print(f"training [bold]RQ-VAE[/] on {source} item vectors "
                      f"({cfg.levels} x {cfg.codebook_size} codes)")
    train_rqvae(model, x, train_cfg, progress=job.progress)
    model.eval()
    codes = model.encode_codes(torch.from_numpy(x)).numpy()  # (n_items, levels)
    sids = SemanticIds.from_codes(codes)
    save_model(model, job.out, "rqvae")
    sids.save(job.out / SEMANTIC_IDS)
    job.timings["rqvae"] = time.perf_counter() - t  # beside "semantic_ids", which adds encoding
    stats = code_stats(codes, cfg.codebook_size)
    util = ", ".join(f"{u:.1%}" for u in stats["utilisation"])
    job.console.print(f"semantic IDs: codebook use per level {util}; "
                      f"{stats['collision_rate']:.1%} of items share codes (4th token separates)")
    return {
        "source": source,
        "levels": cfg.levels,
        "codebook_size": cfg.codebook_size,
        "utilisation": [round(float(u), 4) for u in stats["utilisation"]],
        "collision_rate": round(float(stats["collision_rate"]), 4),
        "max_items_per_code": stats["max_group"],
        "id_length": sids.length,
        "model": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(train_cfg),
    }


def build_tiger(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Train the TIGER generator on the training part over this run's semantic IDs."""
    sids = SemanticIds.load(job.out / SEMANTIC_IDS)
    cfg = TigerConfig(radix=[int(r) for r in sids.radix], **job.params("tiger"))
    model = TIGER(cfg).to(torch.device(job.device))
    train_cfg = TigerTrainConfig(seed=job.seed, **job.params("tiger_train"))
    job.console.print(f"training [bold]TIGER[/] (semantic-ID generation) on {job.device}")
    losses = train_tiger(model, sids, job.split.train, job.ds.users.ids, train_cfg,
                         progress=job.progress)
    save_model(model.cpu().eval(), job.out, "tiger")
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "final_loss": round(losses[-1], 4) if losses else None, "device": job.device}


def build_hstu_ranker(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Train the HSTU ranker (next item vs sampled negatives, plus the rating >= 4 head where
    the data has ratings)."""
    ds = job.ds
    cfg = HSTURankerConfig(n_items=ds.n_items, aux_head=ds.ratings is not None,
                           **job.params("hstu"))
    model = HSTURanker(cfg).to(torch.device(job.device))
    train_cfg = HSTUTrainConfig(seed=job.seed, **job.params("hstu_train"))
    job.console.print(f"training [bold]HSTU[/] ranker on {job.device}"
                      + (" (+ rating >= 4 head)" if cfg.aux_head else ""))
    losses = train_hstu(model, job.split, ds.n_items, train_cfg, ratings=ds.ratings,
                        timestamps=ds.timestamps, progress=job.progress)
    save_model(model.cpu().eval(), job.out, "hstu")
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "final_loss": round(losses[-1], 4) if losses else None, "device": job.device}
