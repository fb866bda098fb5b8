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
from safetensors.numpy import load_file, save_file

from index.hnsw import HNSWIndex
from index.semantic_ids import SemanticIds
from models.build_generative import SEMANTIC_IDS, build_hstu, build_semantic_ids, build_tiger
from models.build_retrieval import SEQUENTIAL, build_sequential
from models.build_reuse import Reuse
from models.build_tdm import build_tdm
from models.checkpoint import save_model
from models.data import Dataset, Split, leave_one_out, load_dataset
from models.deepfm import DeepFM, DeepFMConfig
from models.din import DIN, DINConfig
from models.features import ItemFeatureTables, user_codes_from_dataset
from models.itemcf import ItemCF
from models.popularity import Popularity
from models.profiles import PROFILES
from models.train.ranker import RankerTrainConfig, train_ranker
from models.train.two_tower import TwoTowerTrainConfig, train_two_tower
from models.two_tower import TwoTower, TwoTowerConfig

ARTIFACT_VERSION = 3  # 2: + semantic IDs, TIGER, HSTU; 3: + sequential retrievers, TDM

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
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Train everything and write the artifacts directory; returns the manifest.

    ``only``: retrain just these components (``COMPONENTS``; models that depend on one are
    retrained with it) and copy every other model from the existing ``out_dir``, which must
    have been built from the same data. Popularity and ItemCF are always refitted (seconds)."""
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
    reuse = Reuse(out_dir, ds.fingerprint, only)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _train_and_export(ds, dataset, split, tables, codes, common, p, tmp, seed,
                                     progress, console, timings, profile,
                                     device, reuse)
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
                      device: str = "cpu", reuse: Reuse | None = None) -> dict[str, Any]:
    reuse = reuse or Reuse(tmp, ds.fingerprint, None)

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

    if reuse.train("two_tower"):
        item_emb = _two_tower(ds, split, tables, codes, common, p, tmp, seed, progress,
                              console, timings, configs)
    else:
        reuse.keep("two_tower", tmp, configs, timings)
        item_emb = load_file(str(tmp / "item_embeddings.safetensors"))["two_tower"]

    if reuse.train("semantic_ids"):
        sids, sid_report = build_semantic_ids(ds, item_emb, p, tmp, seed, progress, console,
                                              timings)
        configs["semantic_ids"] = sid_report
    else:
        reuse.keep("semantic_ids", tmp, configs, timings)
        sids, sid_report = SemanticIds.load(tmp / SEMANTIC_IDS), configs["semantic_ids"]
    if reuse.train("tiger"):
        configs["tiger"] = build_tiger(ds, split, sids, p, tmp, seed, progress, console,
                                       timings, device)
    else:
        reuse.keep("tiger", tmp, configs, timings)
    if reuse.train("hstu"):
        configs["hstu"] = build_hstu(ds, split, p, tmp, seed, progress, console, timings, device)
    else:
        reuse.keep("hstu", tmp, configs, timings)
    wanted = [m for m in SEQUENTIAL.values() if reuse.train(m)]
    configs.update(build_sequential(ds, split, p, tmp, seed, progress, console, timings,
                                    device, wanted))
    for name in SEQUENTIAL.values():
        if name not in wanted:
            reuse.keep(name, tmp, configs, timings)

    if reuse.train("tdm"):
        configs["tdm"] = build_tdm(ds, split, item_emb, p, tmp, seed, progress, console,
                                   timings, device)
    else:
        reuse.keep("tdm", tmp, configs, timings)

    rk_train = RankerTrainConfig(seed=seed, **p["ranker_train"])
    for name, cfg_cls, model_cls in (("deepfm", DeepFMConfig, DeepFM), ("din", DINConfig, DIN)):
        if not reuse.train(name):
            reuse.keep(name, tmp, configs, timings)
            continue
        t = time.perf_counter()
        cfg = cfg_cls(**common, **p[name])
        model = model_cls(cfg, tables.genres, tables.year_bucket)
        console.print(f"training [bold]{name}[/] (positives vs sampled negatives)")
        train_ranker(model, split, codes, ds.n_items, rk_train, progress=progress)
        model.eval()
        save_model(model, tmp, name)
        timings[name] = time.perf_counter() - t
        configs[name] = {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(rk_train)}
    return _finish(ds, dataset, codes, tmp, seed, timings, profile, configs, sid_report, reuse)


def _two_tower(ds: Dataset, split: Split, tables: ItemFeatureTables, codes: torch.Tensor,
               common: dict[str, Any], p: dict[str, Any], tmp: Path, seed: int,
               progress: bool, console: Console, timings: dict[str, float],
               configs: dict[str, Any]) -> np.ndarray:
    """Train and export the two-tower and its HNSW index; -> item vectors (n_items, D)."""
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
    return item_emb


def _finish(ds: Dataset, dataset: str, codes: torch.Tensor, tmp: Path, seed: int,
            timings: dict[str, float], profile: str, configs: dict[str, Any],
            sid_report: dict[str, Any], reuse: Reuse) -> dict[str, Any]:
    """Id maps, user features and the manifest (written last: it marks the build complete)."""
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
        # A partial rebuild (`--only`): which components this profile retrained.
        "retrained": None if reuse.only is None else sorted(reuse.only),
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
    """Store evaluation results in the manifest, keyed by split stage then method; methods
    evaluated earlier and not in ``metrics`` keep their figures."""
    path = Path(out_dir) / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    manifest.setdefault("metrics", {}).setdefault(stage, {}).update(metrics)
    tmp = path.with_suffix(".json.tmp")
    _write_json(tmp, manifest)
    tmp.replace(path)
