"""`genrec build`, the paths' rankers trained on what they serve: the HSTU ranker (the
generative path's) on its path's recall candidates as hard negatives
(``models/build/ranker_candidates.py``) among many uniform ones, plus the rating >= 4 head
where the data has ratings. DIN and DeepFM are built by ``models/build/classic.py``
(``build_ranker``, same mining for the cascade's ranker)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from models.artifacts.checkpoint import save_model
from models.build.job import BuildJob
from models.build.ranker_candidates import mine_pools, ranked_path
from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig
from models.registry import Component
from models.train.hstu_ranker import HSTUTrainConfig, train_hstu


def build_hstu_ranker(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Train the HSTU ranker: sampled softmax over the next item, ``n_hard`` negatives from the
    generative path's recall candidates and ``n_negatives`` uniform ones, plus the rating >= 4
    head where the data has ratings."""
    ds = job.ds
    cfg = HSTURankerConfig(n_items=ds.n_items, aux_head=ds.ratings is not None,
                           **job.params("hstu"))
    model = HSTURanker(cfg).to(torch.device(job.device))
    train_cfg = HSTUTrainConfig(seed=job.seed, **job.params("hstu_train"))
    path = ranked_path(comp.name)
    pools, mined = None, {}
    if train_cfg.n_hard > 0 and path is not None:
        pools, mined = mine_pools(job, path, train_cfg.mine_positions, train_cfg.mine_quota,
                                   train_cfg.mine_gap)
    job.console.print(f"training [bold]HSTU[/] ranker on {job.device}"
                      + (" (+ rating >= 4 head)" if cfg.aux_head else ""))
    losses = train_hstu(model, job.split, ds.n_items, train_cfg, ratings=ds.ratings,
                        timestamps=ds.timestamps, progress=job.progress, pools=pools)
    save_model(model.cpu().eval(), job.out, "hstu")
    return {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "hard_negatives": mined, "final_loss": round(losses[-1], 4) if losses else None,
            "device": job.device}
