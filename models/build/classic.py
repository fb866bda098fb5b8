"""`genrec build`, the cascade's models: popularity, ItemCF, the two-tower with its HNSW index,
and the DeepFM / DIN rankers. Each step is ``build_x(job, component) -> report`` and writes the
component's files (``models.registry``) into ``job.out``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from index.hnsw import HNSWIndex
from models.artifacts.checkpoint import save_model
from models.build.job import BuildJob
from models.build.ranker_candidates import mine_pools, ranked_path
from models.nets.deepfm import DeepFM, DeepFMConfig
from models.nets.din import DIN, DINConfig
from models.nets.itemcf import ItemCF
from models.nets.popularity import Popularity
from models.nets.two_tower import TwoTower, TwoTowerConfig
from models.registry import Component
from models.train.item_scorer import RankerTrainConfig, train_ranker
from models.train.two_tower import TwoTowerTrainConfig, train_two_tower

RANKER_NETS = {"deepfm": (DeepFMConfig, DeepFM), "din": (DINConfig, DIN)}


def build_popularity(job: BuildJob, comp: Component) -> dict[str, Any]:
    params = job.params("popularity")
    # Timestamps cut to the training part, so popularity never sees the held-out targets.
    window = None if job.ds.timestamps is None else [
        ts[: len(seq)] for ts, seq in zip(job.ds.timestamps, job.split.train, strict=True)]
    pop = Popularity()
    pop.fit(job.split.train, window, job.ds.n_items, **params)
    save_file(pop.state_dict(), str(job.out / "popularity.safetensors"))
    return params


def build_itemcf(job: BuildJob, comp: Component) -> dict[str, Any]:
    fit, scoring = job.params("itemcf"), job.params("itemcf_scoring")
    itemcf = ItemCF(**scoring)  # scoring defaults (recent window, decay) are saved with it
    itemcf.fit(job.split.train, job.ds.n_items, **fit)
    save_file(itemcf.state_dict(), str(job.out / "itemcf.safetensors"))
    return {**fit, **scoring}


def build_two_tower(job: BuildJob, comp: Component) -> dict[str, Any]:
    """The two-tower, its item vectors (n_items, D) and the HNSW index over them."""
    cfg = TwoTowerConfig(**job.feature_sizes, **job.params("two_tower"))
    model = TwoTower(cfg, job.tables.genres, job.tables.year_bucket)
    train_cfg = TwoTowerTrainConfig(seed=job.seed, **job.params("two_tower_train"))
    job.console.print("training [bold]two-tower[/] (in-batch softmax, logQ correction)")
    train_two_tower(model, job.split, job.user_codes[0], train_cfg, progress=job.progress)
    model.eval()
    save_model(model, job.out, "two_tower")
    with torch.inference_mode():
        item_emb = model.all_item_embeddings().numpy().astype(np.float32)
    save_file({"two_tower": item_emb}, str(job.out / "item_embeddings.safetensors"))
    HNSWIndex(item_emb, np.arange(job.ds.n_items, dtype=np.int64),
              **job.params("hnsw")).save(job.out / "two_tower_items.faiss")
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg)}


def build_ranker(job: BuildJob, comp: Component) -> dict[str, Any]:
    """DeepFM or DIN (``comp.name``): positives vs sampled negatives, listwise softmax; the
    ranker of a path (DIN: the cascade) gets hard negatives from that path's recall
    candidates (``models/build/ranker_candidates.py``)."""
    cfg_cls, model_cls = RANKER_NETS[comp.name]
    cfg = cfg_cls(**job.feature_sizes, **job.params(comp.name))
    model = model_cls(cfg, job.tables.genres, job.tables.year_bucket)
    train_cfg = RankerTrainConfig(seed=job.seed, **job.params("ranker_train"))
    path = ranked_path(comp.name)
    pools, mined = None, {}
    if train_cfg.n_hard > 0 and path is not None:
        pools, mined = mine_pools(job, path, train_cfg.mine_positions, train_cfg.mine_quota,
                                   train_cfg.mine_gap)
    job.console.print(f"training [bold]{comp.name}[/] (positives vs sampled negatives)")
    train_ranker(model, job.split, job.user_codes[0], job.ds.n_items, train_cfg,
                 progress=job.progress, pools=pools)
    model.eval()
    save_model(model, job.out, comp.name)
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "hard_negatives": mined}
