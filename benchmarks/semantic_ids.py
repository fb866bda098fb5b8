"""Semantic-ID quality per dataset: RQ-VAE codebook utilisation per level, collision rate, the
largest group of items sharing one code tuple, and reconstruction error against the same
network with random codebooks (the baseline, as a ratio).

Item vectors come from the dataset's source as `genrec build` picks it ("auto"): MiniLM content
vectors (title | genres | year) together with the trained two-tower's item vectors for ml-100k,
the two-tower's alone for Amazon Beauty (no item text). Uses the default build profile's RQ-VAE
(3 x 256, beta 0.25).

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

from index.semantic_ids import SemanticIds
from models.artifacts.checkpoint import load_model
from models.build.classic import build_two_tower
from models.build.generative import SEMANTIC_IDS, build_semantic_ids, item_embedding_source
from models.build.job import BuildJob
from models.build.profiles import profile
from models.data import leave_one_out, load_dataset
from models.nets.rqvae import sq_err
from models.registry import component


def collaborative_vectors(job: BuildJob) -> float:
    """Train the default two-tower on the dataset's training split with the build's own step
    (its item vectors land in ``job.out``, where the semantic-ID step reads them) -> seconds
    (the step's HNSW index over the vectors included)."""
    t = time.perf_counter()
    build_two_tower(job, component("two_tower"))
    return time.perf_counter() - t


def run(name: str, seed: int, cache: Path) -> dict:
    ds = load_dataset(name)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "a"
        out.mkdir()
        # The semantic-ID step caches MiniLM vectors in ``.cache`` beside the directory it
        # assembles: point that at --cache, so reruns skip the encoder.
        (Path(tmp) / ".cache").symlink_to(cache.resolve(), target_is_directory=True)
        job = BuildJob(ds=ds, split=leave_one_out(ds), seed=seed, progress=False,
                       profile=profile("default"), out=out)
        # Every source but content alone reads the two-tower's item vectors.
        tt_s = collaborative_vectors(job)
        collab = job.item_vectors()
        t = time.perf_counter()
        report = build_semantic_ids(job, component("semantic_ids"))
        sid_s = time.perf_counter() - t
        rq = load_model(out, "rqvae")
        sids = SemanticIds.load(out / SEMANTIC_IDS)
    source, x = item_embedding_source(ds, report["source"], collab, cache)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        mse = sq_err(rq.reconstruct(xt), xt).item()
        rq.codebooks.copy_(torch.randn_like(rq.codebooks) * rq.codebooks.std())
        random_mse = sq_err(rq.reconstruct(xt), xt).item()
    embed_s = job.timings["item_content"]
    return {
        "dataset": name, "items": ds.n_items, "source": source,
        "utilisation": report["utilisation"], "collision_rate": report["collision_rate"],
        "collision_rate_nearest_codes": report["collision_rate_nearest_codes"],
        "max_items_per_code": report["max_items_per_code"],
        "unique_ids": len(np.unique(sids.ids, axis=0)) == len(sids),
        "recon_mse": mse, "random_codebook_mse": random_mse,
        "mse_ratio_random_over_trained": random_mse / mse,
        "seconds": {"two_tower": round(tt_s, 1), "embed": round(embed_s, 1),
                    "rqvae": round(sid_s - embed_s, 1)},
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
