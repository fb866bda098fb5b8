"""Semantic-ID quality per dataset: RQ-VAE codebook utilisation per level, collision rate, the
largest group of items sharing one code tuple, and reconstruction error against the same
network with random codebooks (the baseline, as a ratio).

Item vectors come from the dataset's source as `genrec build` picks it: MiniLM content vectors
for ml-100k (title | genres | year), the trained two-tower's item vectors for Amazon Beauty
(no item text). Uses the default build profile's RQ-VAE (3 x 256, beta 0.25).

Usage: python benchmarks/semantic_ids.py [--datasets ml-100k,beauty] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from models.build import _common
from models.build_generative import build_semantic_ids, item_embedding_source
from models.checkpoint import load_model
from models.data import leave_one_out, load_dataset
from models.features import ItemFeatureTables, user_codes_from_dataset
from models.profiles import PROFILES
from models.rqvae import sq_err
from models.train.two_tower import TwoTowerTrainConfig, train_two_tower
from models.two_tower import TwoTower, TwoTowerConfig


def collaborative_vectors(name: str, seed: int) -> tuple[np.ndarray, float]:
    """Train the default two-tower on the dataset's training split -> item vectors, seconds."""
    ds = load_dataset(name)
    split = leave_one_out(ds)
    tables = ItemFeatureTables.from_dataset(ds)
    codes, cards = user_codes_from_dataset(ds)
    p = PROFILES["default"]
    t = time.perf_counter()
    tt = TwoTower(TwoTowerConfig(**_common(ds, tables, cards), **p["two_tower"]),
                  tables.genres, tables.year_bucket)
    train_two_tower(tt, split, codes, TwoTowerTrainConfig(seed=seed, **p["two_tower_train"]),
                    progress=False)
    tt.eval()
    with torch.inference_mode():
        emb = tt.all_item_embeddings().numpy().astype(np.float32)
    return emb, time.perf_counter() - t


def run(name: str, seed: int, cache: Path) -> dict:
    ds = load_dataset(name)
    p = PROFILES["default"]
    source = "content" if ds.item_side.titles is not None else "collaborative"
    collab, tt_s = (np.zeros((ds.n_items, 1), np.float32), 0.0)
    if source == "collaborative":
        collab, tt_s = collaborative_vectors(name, seed)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "a"
        out.mkdir()
        sids, report = build_semantic_ids(ds, collab, p, out, seed, False, Console(quiet=True),
                                          timings, cache)
        rq = load_model(out, "rqvae")
    _, x = item_embedding_source(ds, source, collab, cache)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        mse = sq_err(rq.reconstruct(xt), xt).item()
        rq.codebooks.copy_(torch.randn_like(rq.codebooks) * rq.codebooks.std())
        random_mse = sq_err(rq.reconstruct(xt), xt).item()
    return {
        "dataset": name, "items": ds.n_items, "source": source,
        "utilisation": report["utilisation"], "collision_rate": report["collision_rate"],
        "max_items_per_code": report["max_items_per_code"],
        "unique_ids": len(np.unique(sids.ids, axis=0)) == len(sids),
        "recon_mse": mse, "random_codebook_mse": random_mse,
        "mse_ratio_random_over_trained": random_mse / mse,
        "seconds": {"two_tower": round(tt_s, 1), "embed": round(timings["item_content"], 1),
                    "rqvae": round(timings["rqvae"], 1)},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml-100k,beauty")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("artifacts/.cache"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    res = {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
           "machine": f"{platform.processor() or platform.machine()}",
           "results": [run(d.strip(), args.seed, args.cache) for d in args.datasets.split(",")]}
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
