"""`genrec build`: dataset -> trained cascade models -> an artifacts directory.

Layout (read back by ``service.runtime.Runtime.load``; nothing is pickled):
  manifest.json                 version, dataset fingerprint, creation time, configs, metrics
  id_maps.json                  {"users": [...], "items": [...]}: dense index -> external id
  user_features.safetensors     codes (n_users, F); user_features.json names + vocab
  popularity.safetensors        recent-window popularity
  itemcf.safetensors            top-N neighbours and similarities per item
  two_tower.{safetensors,json}  two-tower weights + rebuild config
  item_embeddings.safetensors   the item tower's vectors (for ANN and rerank similarity)
  two_tower_items.faiss         HNSW index over those vectors
  deepfm.*, din.*               rankers
  rqvae.*, semantic_ids.*, tiger.*, hstu.*   the generative path (models/build_generative.py)
  gru4rec.*, sasrec.*, hstu_retrieval.* (+ *_items.faiss)   sequential retrievers
                                (models/build_retrieval.py)
Models train on the leave-one-out training part only, so `genrec eval` numbers are honest.
The directory is assembled under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from rich.console import Console
from safetensors.numpy import save_file

from index.hnsw import HNSWIndex
from models.build_generative import build_hstu, build_semantic_ids, build_tiger
from models.build_retrieval import build_sequential
from models.checkpoint import save_model
from models.data import Dataset, Split, leave_one_out, load_dataset
from models.deepfm import DeepFM, DeepFMConfig
from models.din import DIN, DINConfig
from models.features import ItemFeatureTables, user_codes_from_dataset
from models.itemcf import ItemCF
from models.popularity import Popularity
from models.train.ranker import RankerTrainConfig, train_ranker
from models.train.two_tower import TwoTowerTrainConfig, train_two_tower
from models.two_tower import TwoTower, TwoTowerConfig

ARTIFACT_VERSION = 3  # 2: + semantic IDs, TIGER, HSTU; 3: + sequential retrievers, TDM

# Model and training sizes. "default" is what `genrec build` ships; "tiny" keeps tests fast.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "two_tower": {},
        "two_tower_train": {},
        "deepfm": {},
        "din": {},
        "ranker_train": {},
        # Chosen on the validation split by benchmarks/tune_itemcf.py (ml-100k).
        "itemcf": {"top_n": 50},
        "itemcf_scoring": {"recent": 10, "decay": 0.8},
        "popularity": {"window_days": 30.0},
        "hnsw": {"m": 32, "ef_construction": 200},
        "semantic_ids": {"source": "auto"},
        "rqvae": {},
        "rqvae_train": {},
        # TIGER reads the last 20 items, as in the paper. On a CPU an epoch is a random
        # subset of the ~97k ml-100k samples (see models/train/tiger.py); `genrec retrain`
        # trains on every sample on a GPU.
        # CPU budget (~3 min on 2 cores), chosen on the validation split: a 64-wide model seeing
        # 8,192 samples per epoch in batches of 64 beat the 128-wide one seeing 4,096 in
        # batches of 256 (semantic_id HR@10 0.115 vs 0.072).
        "tiger": {"max_history": 20, "dim": 64, "ff_dim": 256},
        "tiger_train": {"epochs": 10, "samples_per_epoch": 8192, "batch_size": 64, "lr": 3e-3},
        "hstu": {},
        "hstu_train": {},
        # Sequential retrievers (models/build_retrieval.py); max_len "auto" = 200 for long
        # MovieLens histories, 50 for short Amazon ones, as in the papers.
        "sasrec": {"dim": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.2, "max_len": "auto"},
        "sasrec_train": {"epochs": 40, "batch_size": 128, "lr": 1e-3},
        "gru4rec": {"dim": 64, "hidden": 100},
        "gru4rec_train": {"epochs": 5, "batch_size": 32},
        "hstu_retrieval": {"max_len": "auto"},
        "hstu_retrieval_train": {"epochs": 15},
    },
    "tiny": {
        "two_tower": {"item_dim": 8, "hidden_dim": 32, "out_dim": 16, "max_history": 20},
        "two_tower_train": {"epochs": 1, "batch_size": 512},
        "deepfm": {"embed_dim": 4, "hidden_dims": [16], "max_history": 20},
        "din": {"item_dim": 4, "attention_hidden": [8], "hidden_dims": [16], "max_history": 20},
        "ranker_train": {"epochs": 1, "batch_size": 1024},
        "itemcf": {"top_n": 20},
        "itemcf_scoring": {"recent": 10, "decay": 0.8},
        "popularity": {"window_days": 30.0},
        "hnsw": {"m": 16, "ef_construction": 64},
        "semantic_ids": {"source": "auto"},
        "rqvae": {"hidden": (64,), "code_dim": 8, "codebook_size": 16, "kmeans_iters": 5},
        "rqvae_train": {"epochs": 30, "batch_size": 512},
        "tiger": {"dim": 16, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "ff_dim": 32,
                  "max_history": 10},
        "tiger_train": {"epochs": 1, "samples_per_epoch": 256},
        "hstu": {"dim": 16, "n_layers": 1, "qk_dim": 8, "v_dim": 8, "max_history": 20,
                 "head_hidden": 16},
        "hstu_train": {"epochs": 1, "recent_per_user": 2, "sample_frac": 0.0},
        "sasrec": {"dim": 8, "n_layers": 1, "n_heads": 1, "max_len": 20},
        "sasrec_train": {"epochs": 1, "batch_size": 256},
        "gru4rec": {"dim": 8, "hidden": 8},
        "gru4rec_train": {"epochs": 1, "batch_size": 256, "n_negatives": 16},
        "hstu_retrieval": {"dim": 8, "n_layers": 1, "qk_dim": 4, "v_dim": 4, "max_len": 20},
        "hstu_retrieval_train": {"epochs": 1, "batch_size": 256, "n_negatives": 16},
    },
}

# "full": the default models trained on every sample, for a GPU (`genrec build --profile full
# --device cuda`); the CPU default subsamples TIGER's and HSTU's training positions per epoch.
PROFILES["full"] = {
    **PROFILES["default"],
    "tiger": {"max_history": 20},  # 128 wide, 2 + 2 layers
    "tiger_train": {"epochs": 30, "samples_per_epoch": None, "batch_size": 512,
                    "num_threads": None},
    "hstu_train": {"epochs": 10, "sample_frac": 1.0, "batch_size": 256, "num_threads": None},
    "sasrec_train": {"epochs": 200, "batch_size": 128, "lr": 1e-3, "num_threads": None},
    "gru4rec_train": {"epochs": 10, "batch_size": 32, "num_threads": None},
    "hstu_retrieval_train": {"epochs": 100, "num_threads": None},
}


def _common(ds: Dataset, tables: ItemFeatureTables, cards: list[int]) -> dict[str, Any]:
    return {"n_items": ds.n_items, "user_cardinalities": cards, "n_genres": tables.n_genres,
            "n_year_buckets": tables.n_year_buckets}


def _write_json(path: Path, obj: Any) -> None:
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def _train_window(ds: Dataset, train: list[np.ndarray]) -> list[np.ndarray] | None:
    # Timestamps cut to the training part, so popularity never sees the held-out targets.
    if ds.timestamps is None:
        return None
    return [ts[: len(seq)] for ts, seq in zip(ds.timestamps, train, strict=True)]


def build(
    dataset: str,
    out_dir: Path,
    profile: str = "default",
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train everything and write the artifacts directory; returns the manifest."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    console = console or Console(quiet=not progress)
    p = PROFILES[profile]
    torch.manual_seed(seed)
    np.random.seed(seed)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    ds = load_dataset(dataset)
    split = leave_one_out(ds)
    console.print(f"[bold]{ds.name}[/]: {ds.n_users} users, {ds.n_items} items, "
                  f"{ds.n_interactions} interactions")
    tables = ItemFeatureTables.from_dataset(ds)
    codes, cards = user_codes_from_dataset(ds)
    common = _common(ds, tables, cards)

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _train_and_export(ds, dataset, split, tables, codes, common, p, tmp, seed,
                                     progress, console, timings, profile,
                                     device)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-built directory behind
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    console.print(f"artifacts written to {out_dir} in {time.perf_counter() - t_start:.1f}s")
    return manifest


def _train_and_export(ds: Dataset, dataset: str, split: Split, tables: ItemFeatureTables,
                      codes: torch.Tensor, common: dict[str, Any], p: dict[str, Any],
                      tmp: Path, seed: int, progress: bool, console: Console,
                      timings: dict[str, float], profile: str,
                      device: str = "cpu") -> dict[str, Any]:

    configs: dict[str, Any] = {}
    t = time.perf_counter()
    pop = Popularity()
    pop.fit(split.train, _train_window(ds, split.train), ds.n_items, **p["popularity"])
    save_file(pop.state_dict(), str(tmp / "popularity.safetensors"))
    itemcf = ItemCF(**p["itemcf_scoring"])
    itemcf.fit(split.train, ds.n_items, **p["itemcf"])
    save_file(itemcf.state_dict(), str(tmp / "itemcf.safetensors"))
    timings["popularity+itemcf"] = time.perf_counter() - t
    configs["itemcf"] = {**p["itemcf"], **p["itemcf_scoring"]}
    configs["popularity"] = p["popularity"]
    console.print(f"popularity + itemcf fitted in {timings['popularity+itemcf']:.1f}s")

    t = time.perf_counter()
    tt_cfg = TwoTowerConfig(**common, **p["two_tower"])
    tt = TwoTower(tt_cfg, tables.genres, tables.year_bucket)
    tt_train = TwoTowerTrainConfig(seed=seed, **p["two_tower_train"])
    console.print("training [bold]two-tower[/] (in-batch softmax, logQ correction)")
    train_two_tower(tt, split, codes, tt_train, progress=progress)
    tt.eval()
    save_model(tt, tmp, "two_tower")
    with torch.inference_mode():
        item_emb = tt.all_item_embeddings().numpy().astype(np.float32)
    save_file({"two_tower": item_emb}, str(tmp / "item_embeddings.safetensors"))
    HNSWIndex(item_emb, np.arange(ds.n_items, dtype=np.int64), **p["hnsw"]).save(
        tmp / "two_tower_items.faiss")
    timings["two_tower"] = time.perf_counter() - t
    configs["two_tower"] = {"model": dataclasses.asdict(tt_cfg),
                            "train": dataclasses.asdict(tt_train)}

    sids, sid_report = build_semantic_ids(ds, item_emb, p, tmp, seed, progress, console, timings)
    configs["semantic_ids"] = sid_report
    configs["tiger"] = build_tiger(ds, split, sids, p, tmp, seed, progress, console, timings,
                                   device)
    configs["hstu"] = build_hstu(ds, split, p, tmp, seed, progress, console, timings, device)
    configs["retrievers"] = build_sequential(ds, split, p, tmp, seed, progress, console,
                                             timings, device)

    rk_train = RankerTrainConfig(seed=seed, **p["ranker_train"])
    for name, cfg_cls, model_cls in (("deepfm", DeepFMConfig, DeepFM), ("din", DINConfig, DIN)):
        t = time.perf_counter()
        cfg = cfg_cls(**common, **p[name])
        model = model_cls(cfg, tables.genres, tables.year_bucket)
        console.print(f"training [bold]{name}[/] (positives vs sampled negatives)")
        train_ranker(model, split, codes, ds.n_items, rk_train, progress=progress)
        model.eval()
        save_model(model, tmp, name)
        timings[name] = time.perf_counter() - t
        configs[name] = {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(rk_train)}

    _write_json(tmp / "id_maps.json", {"users": ds.users.ids, "items": ds.items.ids})
    save_file({"codes": codes.numpy().astype(np.int64)}, str(tmp / "user_features.safetensors"))
    side = ds.user_side
    _write_json(tmp / "user_features.json",
                {"names": side.names if side else [], "vocab": side.vocab if side else {}})
    manifest = {
        "version": f"{ds.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}",
        "artifact_format": ARTIFACT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "profile": profile,
        "seed": seed,
        "dataset": {"name": ds.name, "source": dataset, "fingerprint": ds.fingerprint,
                    "n_users": ds.n_users, "n_items": ds.n_items,
                    "n_interactions": ds.n_interactions, "split": "leave-one-out"},
        "configs": configs,
        "train_seconds": {k: round(v, 3) for k, v in timings.items()},
        "semantic_ids": {k: sid_report[k] for k in ("source", "utilisation", "collision_rate",
                                                     "max_items_per_code", "id_length")},
        "metrics": {},
    }
    _write_json(tmp / "manifest.json", manifest)
    return manifest


def update_metrics(out_dir: Path, stage: str, metrics: dict[str, dict[str, float]]) -> None:
    """Store evaluation results in the manifest, keyed by split stage."""
    path = Path(out_dir) / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    manifest.setdefault("metrics", {})[stage] = metrics
    tmp = path.with_suffix(".json.tmp")
    _write_json(tmp, manifest)
    tmp.replace(path)
