"""`genrec build`, generative part: semantic IDs, the TIGER generator and the HSTU ranker.

Written next to the other components' files (``models.registry``):
  rqvae.{safetensors,json}        RQ-VAE over the items' embedding source
  semantic_ids.safetensors        (n_items, L+1) unique semantic IDs (codes + dedup token)
  tiger.{safetensors,json}        encoder-decoder generator over semantic-ID tokens
  hstu.{safetensors,json}         HSTU ranker (M-FALCON at serving time)

The item embedding source is chosen per dataset (``semantic_ids.source``): "content" embeds
"title | genres | year" with MiniLM (items with text, e.g. MovieLens), "collaborative" uses the
trained two-tower's item vectors (items without text, e.g. Amazon Beauty), "both" concatenates
the two (each unit-norm, so they weigh alike); "auto" picks both when the dataset has
titles, collaborative otherwise. On ml-100k (CPU default, validation HR@10 of TIGER after 4
epochs of chunks) both gave 0.146 to 0.153 against 0.127 to 0.140 for content alone
(benchmarks/tune_tiger.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.semantic_ids import SemanticIds, spread_collisions
from models.artifacts.checkpoint import save_model
from models.build.content import content_vectors
from models.build.job import BuildJob
from models.build.selection import EpochSelector
from models.data import Dataset, Split
from models.evaluate.generator import generator_metrics
from models.nets.rqvae import RQVAE, RQVAEConfig, code_stats
from models.nets.tiger import TIGER, TigerConfig
from models.registry import Component
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
        source = "both" if ds.item_side.titles is not None else "collaborative"
    if source not in ("content", "collaborative", "both"):
        raise ValueError("semantic_ids.source must be auto, content, collaborative or both, "
                         f"not {source!r}")
    if source == "both" and ds.item_side.titles is None:
        raise ValueError("semantic_ids.source both needs item text, and this dataset has none")
    parts = []
    if source in ("content", "both"):
        parts.append(np.asarray(content_vectors(ds, cache_dir), dtype=np.float32))  # unit
    if source in ("collaborative", "both"):
        # Unit-norm vectors: the RQ-VAE's k-means and MSE then work on directions, as with
        # MiniLM's normalised output.
        parts.append(_unit(collaborative() if callable(collaborative) else collaborative))
    if len(parts) == 1:
        return source, parts[0]
    # Both: each unit-norm part carries half of the concatenation's squared norm.
    return source, np.concatenate([_unit(p) for p in parts], axis=1) / np.float32(np.sqrt(2))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (N, D)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def semantic_ids_from(model: RQVAE, x: np.ndarray) -> tuple[SemanticIds, dict[str, Any]]:
    """Codes of the trained ``model`` for item vectors x (N, D) -> (unique semantic IDs,
    stats: codebook use, collision rate and max items per code before the 4th token, and
    before spreading when the config spreads collisions)."""
    model.eval()
    codes, dist = model.last_level_distances(torch.from_numpy(x))
    codes = codes.numpy()  # (N, levels)
    raw = code_stats(codes, model.cfg.codebook_size)
    if model.cfg.reassign_collisions:
        codes = spread_collisions(codes, dist.numpy())
    stats = code_stats(codes, model.cfg.codebook_size)
    stats["collision_rate_nearest"] = raw["collision_rate"]
    return SemanticIds.from_codes(codes), stats


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
    sids, stats = semantic_ids_from(model, x)
    save_model(model, job.out, "rqvae")
    sids.save(job.out / SEMANTIC_IDS)
    job.timings["rqvae"] = time.perf_counter() - t  # beside "semantic_ids", which adds encoding
    util = ", ".join(f"{u:.1%}" for u in stats["utilisation"])
    job.console.print(f"semantic IDs: codebook use per level {util}; "
                      f"{stats['collision_rate']:.1%} of items share codes (4th token separates)")
    return {
        "source": source,
        "levels": cfg.levels,
        "codebook_size": cfg.codebook_size,
        "utilisation": [round(float(u), 4) for u in stats["utilisation"]],
        "collision_rate": round(float(stats["collision_rate"]), 4),
        "collision_rate_nearest_codes": round(float(stats["collision_rate_nearest"]), 4),
        "max_items_per_code": stats["max_group"],
        "id_length": sids.length,
        "model": dataclasses.asdict(cfg),
        "train": dataclasses.asdict(train_cfg),
    }


def tiger_training(model: TIGER, sids: SemanticIds, ds: Dataset, split: Split,
                   opts: dict[str, Any], seed: int) -> tuple[TigerTrainConfig, EpochSelector]:
    """The ``tiger_train`` settings -> (the trainer's config, the epoch selector of the build
    options ``select_every`` / ``select_users``: the generator's own validation check on a
    fixed random subset of validation users)."""
    opts = dict(opts)
    every, n_check = int(opts.pop("select_every", 0)), int(opts.pop("select_users", 1000))
    users = np.sort(np.random.default_rng(seed).permutation(split.eval_users("valid"))[:n_check])
    selector = EpochSelector(model, split, ds, every, measure=lambda: generator_metrics(
        model, sids, split, ds.users.ids, users, "valid", ks=(10,)))
    return TigerTrainConfig(seed=seed, **opts), selector


def build_tiger(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Train the TIGER generator on the training part over this run's semantic IDs. With
    ``tiger_train.select_every`` E > 0, the generator's own validation NDCG@10 (beam search
    as served, on ``select_users`` fixed validation users) is checked every E epochs and
    after the last, and the best epoch's weights are kept, as the retrievers' are."""
    sids = SemanticIds.load(job.out / SEMANTIC_IDS)
    cfg = TigerConfig(radix=[int(r) for r in sids.radix], **job.params("tiger"))
    model = TIGER(cfg).to(torch.device(job.device))
    train_cfg, selector = tiger_training(model, sids, job.ds, job.split,
                                         job.params("tiger_train"), job.seed)
    job.console.print(f"training [bold]TIGER[/] (semantic-ID generation) on {job.device}")
    losses = train_tiger(model, sids, job.split.train, job.ds.users.ids, train_cfg,
                         progress=job.progress, after_epoch=selector)
    selected = selector.restore(train_cfg.epochs)
    save_model(model.cpu().eval(), job.out, "tiger")
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "final_loss": round(losses[-1], 4) if losses else None, "device": job.device,
            **selected}
