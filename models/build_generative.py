"""`genrec build`, generative part: semantic IDs, the TIGER generator and the HSTU ranker.

Written next to the cascade's files (see ``models/build.py``):
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.numpy import load_file, save_file

from index.semantic_ids import SemanticIds
from models.checkpoint import save_model
from models.data import Dataset, Split
from models.hstu import HSTURanker, HSTURankerConfig
from models.rqvae import RQVAE, RQVAEConfig, code_stats
from models.tiger import TIGER, TigerConfig
from models.train.hstu import HSTUTrainConfig, train_hstu
from models.train.rqvae import RQVAETrainConfig, train_rqvae
from models.train.tiger import TigerTrainConfig, train_tiger

SEMANTIC_IDS = "semantic_ids.safetensors"


def content_vectors(ds: Dataset, cache_dir: Path | None) -> np.ndarray:
    """MiniLM vectors (n_items, 384) of the items' text, cached per dataset fingerprint under
    ``cache_dir``: rebuilds skip the encoder, and a machine without the MiniLM package (a GPU
    box) can build from a carried cache."""
    cache = None
    if cache_dir is not None and ds.fingerprint:
        cache = Path(cache_dir) / f"minilm-{ds.fingerprint[:16]}.safetensors"
        if cache.is_file():
            x = load_file(str(cache))["content"]
            if x.shape[0] == ds.n_items:
                return x
    from models.content import encode_texts, item_texts  # loads MiniLM only when needed

    x = encode_texts(item_texts(ds))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".partial")
        save_file({"content": x}, str(tmp))
        tmp.replace(cache)
    return x


def item_embedding_source(ds: Dataset, source: str, collaborative: np.ndarray,
                          cache_dir: Path | None = None) -> tuple[str, np.ndarray]:
    """-> (source actually used, (n_items, D) float32 vectors for the RQ-VAE)."""
    if source == "auto":
        source = "content" if ds.item_side.titles is not None else "collaborative"
    if source == "content":
        return source, content_vectors(ds, cache_dir)
    if source == "collaborative":
        x = np.asarray(collaborative, dtype=np.float32)
        # Unit-norm vectors: the RQ-VAE's k-means and MSE then work on directions, as with
        # MiniLM's normalised output.
        return source, x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    raise ValueError(f"semantic_ids.source must be auto, content or collaborative, not {source!r}")


def build_semantic_ids(ds: Dataset, collaborative: np.ndarray, p: dict[str, Any], out: Path,
                       seed: int, progress: bool, console: Console,
                       timings: dict[str, float], cache_dir: Path | None = None,
                       ) -> tuple[SemanticIds, dict[str, Any]]:
    """Train the RQ-VAE, derive unique semantic IDs, write both; -> (ids, report). Content
    vectors are cached under ``cache_dir`` (default: ``.cache`` beside ``out``)."""
    t = time.perf_counter()
    source, x = item_embedding_source(ds, p["semantic_ids"]["source"], collaborative,
                                      cache_dir or out.parent / ".cache")
    timings["item_content"] = time.perf_counter() - t
    t = time.perf_counter()
    cfg = RQVAEConfig(in_dim=int(x.shape[1]), seed=seed, **p["rqvae"])
    model = RQVAE(cfg)
    train_cfg = RQVAETrainConfig(seed=seed, **p["rqvae_train"])
    console.print(f"training [bold]RQ-VAE[/] on {source} item vectors "
                  f"({cfg.levels} x {cfg.codebook_size} codes)")
    train_rqvae(model, x, train_cfg, progress=progress)
    model.eval()
    codes = model.encode_codes(torch.from_numpy(x)).numpy()  # (n_items, levels)
    sids = SemanticIds.from_codes(codes)
    save_model(model, out, "rqvae")
    sids.save(out / SEMANTIC_IDS)
    timings["rqvae"] = time.perf_counter() - t
    stats = code_stats(codes, cfg.codebook_size)
    report = {
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
    util = ", ".join(f"{u:.1%}" for u in stats["utilisation"])
    console.print(f"semantic IDs: codebook use per level {util}; "
                  f"{stats['collision_rate']:.1%} of items share codes (4th token separates)")
    return sids, report


def _train_on(model: torch.nn.Module, device: str) -> torch.nn.Module:
    return model.to(torch.device(device))


def build_tiger(ds: Dataset, split: Split, sids: SemanticIds, p: dict[str, Any], out: Path,
                seed: int, progress: bool, console: Console, timings: dict[str, float],
                device: str = "cpu") -> dict[str, Any]:
    """Train the TIGER generator on the training part; write ``tiger.*``; -> its configs."""
    t = time.perf_counter()
    cfg = TigerConfig(radix=[int(r) for r in sids.radix], **p["tiger"])
    model = _train_on(TIGER(cfg), device)
    train_cfg = TigerTrainConfig(seed=seed, **p["tiger_train"])
    console.print(f"training [bold]TIGER[/] (semantic-ID generation) on {device}")
    losses = train_tiger(model, sids, split.train, ds.users.ids, train_cfg, progress=progress)
    save_model(model.cpu().eval(), out, "tiger")
    timings["tiger"] = time.perf_counter() - t
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "final_loss": round(losses[-1], 4) if losses else None, "device": device}


def build_hstu(ds: Dataset, split: Split, p: dict[str, Any], out: Path, seed: int,
               progress: bool, console: Console, timings: dict[str, float],
               device: str = "cpu") -> dict[str, Any]:
    """Train the HSTU ranker (next item vs sampled negatives, plus the rating >= 4 head where
    the data has ratings); write ``hstu.*``; -> its configs."""
    t = time.perf_counter()
    cfg = HSTURankerConfig(n_items=ds.n_items, aux_head=ds.ratings is not None, **p["hstu"])
    model = _train_on(HSTURanker(cfg), device)
    train_cfg = HSTUTrainConfig(seed=seed, **p["hstu_train"])
    console.print(f"training [bold]HSTU[/] ranker on {device}"
                  + (" (+ rating >= 4 head)" if cfg.aux_head else ""))
    losses = train_hstu(model, split, ds.n_items, train_cfg, ratings=ds.ratings,
                        timestamps=ds.timestamps, progress=progress)
    save_model(model.cpu().eval(), out, "hstu")
    timings["hstu"] = time.perf_counter() - t
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "final_loss": round(losses[-1], 4) if losses else None, "device": device}
