"""Semantic-ID generator variants on the validation split: RQ-VAE item vectors, code balancing
and collision handling, TIGER's size and training sample; per variant validation HR/NDCG@10
and @50 (TIGER alone, trie-constrained beam search as served: beam max(50, --beam), history
blocked), codebook use, collisions before / after spreading, max items per code, the
invalid-ID rate (items outside the catalogue, blocked or repeated: must be 0) and seconds.

Settings start from a build profile (``--profile``: default for the CPU, full for a GPU) and
each variant overrides groups of it (``VARIANTS``). Only the validation split is read.

  python benchmarks/tune_tiger.py --dataset ml-100k --profile default --base A \
      --variants base,causal --budget 90
  python benchmarks/tune_tiger.py --dataset beauty --profile full --device cuda --mode quick

``--base``: an artifacts directory of the same dataset whose two-tower item vectors to use
(the collaborative source; ``--collab sasrec`` reads SASRec's item table there instead);
without it the default two-tower is trained first (CPU, ~90 s on Beauty).
``--mode quick`` (meant to fit 9 min on one H200 for Beauty) runs the recommended variants
(``QUICK``) with 20 epochs, evaluated on 4,000 validation users; ``full`` runs every variant
with the profile's epochs on every validation user. ``--budget S`` stops a CPU
variant after the first epoch that ends past S seconds of training (epochs are then counted
in the report). ``--set GROUP.FIELD=VALUE`` applies to every variant (on a shared CPU,
``--set tiger_train.num_threads=1``: two threads contending with other jobs ran 10-20x
slower per batch here). ``--eval-every E`` also prints validation figures every E epochs (on
up to 2,000 users). With ``tiger_train.select_every`` set, the kept epoch is chosen on up to
``select_users`` validation users (all of ml-100k's), so a row whose kept epoch is not its
last leans upward, as the build's own validation figures do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from index.semantic_ids import SemanticIds
from models.artifacts.checkpoint import load_model
from models.build.classic import build_two_tower
from models.build.generative import item_embedding_source, semantic_ids_from, tiger_training
from models.build.job import BuildJob
from models.build.profiles import profile
from models.build.retrieval import build_retriever
from models.data import leave_one_out, load_dataset
from models.evaluate.generator import generator_metrics
from models.nets.rqvae import RQVAE, RQVAEConfig
from models.nets.tiger import TIGER, TigerConfig
from models.registry import component
from models.train.rqvae import RQVAETrainConfig, train_rqvae
from models.train.tiger import train_tiger

# name -> overrides per profile group ("semantic_ids" takes "source": auto, content,
# collaborative or both). Each builds on the profile's values.
CAUSAL = {"tiger": {"causal": True}}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "tied": {"tiger": {"tie_heads": True}},
    "causal": CAUSAL,  # source "auto": content where items have text, else collaborative
    "content": {"semantic_ids": {"source": "content"}, **CAUSAL},
    "causal_h20": {"tiger": {"causal": True, "max_history": 20}},
    "causal_tied": {"tiger": {"causal": True, "tie_heads": True}},
    "spread": {"rqvae": {"reassign_collisions": True}, **CAUSAL},
    "sinkhorn": {"rqvae": {"sinkhorn_eps": 0.003, "reassign_collisions": True}, **CAUSAL},
    "both": {"semantic_ids": {"source": "both"}, **CAUSAL},
    "both_spread": {"semantic_ids": {"source": "both"}, "rqvae": {"reassign_collisions": True},
                    **CAUSAL},
    # TIGER's paper shape (6 heads do not divide 128: 4 heads of 32, see TigerConfig).
    "paper_4x4": {"tiger": {"causal": True, "enc_layers": 4, "dec_layers": 4, "dim": 128,
                            "ff_dim": 1024, "n_heads": 4, "dropout": 0.1}},
}
# Without item text (Beauty) the "both" variants are skipped.
QUICK = ["base", "causal", "spread", "both_spread", "paper_4x4"]


def settings(prof: str, overrides: dict[str, dict[str, Any]], epochs: int | None,
             sets: list[str]) -> dict[str, dict[str, Any]]:
    """The profile's groups for the generator, a variant's overrides on top, then ``--set``
    GROUP.FIELD=VALUE (JSON values) on every variant."""
    base = profile(prof)
    out = {g: {**base.params(g), **overrides.get(g, {})}
           for g in ("semantic_ids", "rqvae", "rqvae_train", "tiger", "tiger_train")}
    if epochs is not None:
        out["tiger_train"]["epochs"] = epochs
    for item in sets:
        key, _, raw = item.partition("=")
        group, _, name = key.partition(".")
        try:
            out[group][name] = json.loads(raw)
        except json.JSONDecodeError:
            out[group][name] = raw
    return out


def make_ids(ds: Any, x_of: Any, s: dict[str, dict[str, Any]], seed: int,
             nets: dict[str, Any]) -> tuple[SemanticIds, dict[str, Any]]:
    """Semantic IDs of a variant; the RQ-VAE is trained once per (source, config but the
    collision spreading, which only post-processes its codes)."""
    rq = {k: v for k, v in s["rqvae"].items() if k != "reassign_collisions"}
    key = json.dumps([s["semantic_ids"], rq, s["rqvae_train"]], sort_keys=True)
    if key not in nets:
        source, x = x_of(s["semantic_ids"].get("source", "auto"))
        t = time.perf_counter()
        torch.manual_seed(seed)  # as the build step does
        model = RQVAE(RQVAEConfig(in_dim=int(x.shape[1]), seed=seed, **rq))
        train_rqvae(model, x, RQVAETrainConfig(seed=seed, **s["rqvae_train"]), progress=False)
        nets[key] = (model, source, x, round(time.perf_counter() - t, 1))
    model, source, x, seconds = nets[key]
    model.cfg = dataclasses.replace(
        model.cfg, reassign_collisions=bool(s["rqvae"].get("reassign_collisions", False)))
    sids, stats = semantic_ids_from(model, x)
    return sids, {"source": source, "rqvae_s": seconds,
                  "utilisation": [round(float(u), 4) for u in stats["utilisation"]],
                  "collision_rate_nearest": round(stats["collision_rate_nearest"], 4),
                  "collision_rate": round(float(stats["collision_rate"]), 4),
                  "max_items_per_code": stats["max_group"]}


def evaluate(model: TIGER, sids: SemanticIds, ds: Any, split: Any, beam: int,
             users: np.ndarray) -> dict[str, float]:
    """Validation figures of TIGER's own list (k = 50) over ``users``."""
    m = generator_metrics(model, sids, split, ds.users.ids, users, "valid", beam)
    return {k: round(v, 4) for k, v in m.items() if k != "NDCG@50"} | {
        "invalid_rate": m["invalid_rate"]}


class Budget(Exception):
    """Raised from the epoch hook once the training-time budget is spent."""


def run_variant(name: str, args: argparse.Namespace, ds: Any, split: Any, x_of: Any,
                nets: dict[str, Any]) -> dict[str, Any]:
    s = settings(args.profile, VARIANTS[name], args.epochs, args.set)
    sids, id_stats = make_ids(ds, x_of, s, args.seed, nets)
    torch.manual_seed(args.seed)
    model = TIGER(TigerConfig(radix=sids.radix.tolist(), **s["tiger"])).to(args.device)
    # The build's training settings and epoch selection: its checks count as training.
    cfg, selector = tiger_training(model, sids, ds, split, s["tiger_train"], args.seed)
    users = split.eval_users("valid")
    if args.users:  # a fixed random subset, the same for every variant
        users = np.sort(np.random.default_rng(0).permutation(users)[: args.users])
    some = np.random.default_rng(0).permutation(users)[:2000]
    curve: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    paused = 0.0

    def after_epoch(e: int) -> None:
        nonlocal paused
        if args.eval_every and e % args.eval_every == 0:
            t = time.perf_counter()
            curve.append({"epoch": e, **evaluate(model, sids, ds, split, args.beam, some)})
            model.train()
            paused += time.perf_counter() - t
            print(f"  {name} epoch {e}: {curve[-1]}", flush=True)
        if args.budget and time.perf_counter() - t0 - paused > args.budget:
            raise Budget(e)

    def hook(e: int) -> None:
        selector(e)
        after_epoch(e)

    epochs_run = cfg.epochs
    try:
        train_tiger(model, sids, split.train, ds.users.ids, cfg, progress=False,
                    after_epoch=hook)
    except Budget as stop:
        epochs_run = int(stop.args[0])
    selected = selector.restore(epochs_run)
    train_s = time.perf_counter() - t0 - paused
    model.eval()
    t = time.perf_counter()
    res = evaluate(model, sids, ds, split, args.beam, users)
    return {"variant": name, **res, "train_s": round(train_s, 1), "epochs": epochs_run,
            "eval_s": round(time.perf_counter() - t, 1), **id_stats,
            "tiger": dataclasses.asdict(model.cfg) | {"radix": None}, "train": s["tiger_train"],
            "curve": curve, "selected_epoch": selected["selected_epoch"]}


def train_collaborative(args: argparse.Namespace, ds: Any, split: Any) -> np.ndarray:
    """(n_items, d) item vectors of ``args.collab`` trained here with the profile's settings
    (the two-tower on the CPU as before; a sequential retriever on ``--device``, its best
    validation epoch kept as in the build)."""
    prof = profile(args.profile)
    group = f"{args.collab}_train"
    if args.collab_epochs:
        prof = prof.model_copy(update={"groups": {
            **prof.groups, group: {**prof.params(group), "epochs": args.collab_epochs}}})
    with tempfile.TemporaryDirectory() as tmp:
        job = BuildJob(ds=ds, split=split, seed=args.seed, progress=False, profile=prof,
                       out=Path(tmp), device="cpu" if args.collab == "two_tower" else args.device)
        if args.collab == "two_tower":
            build_two_tower(job, component("two_tower"))
            return job.item_vectors()
        t = time.perf_counter()
        report = build_retriever(job, component(args.collab))
        print(f"{args.collab}: {time.perf_counter() - t:.0f} s, kept epoch "
              f"{report.get('selected_epoch')}", flush=True)
        net = load_model(Path(tmp), args.collab)
        return net.item_vectors().detach().float().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--base", type=Path, help="artifacts directory with two-tower vectors")
    ap.add_argument("--collab", default="two_tower",
                    help="the collaborative vectors: two_tower, or a sequential retriever's "
                         "item table (sasrec, hstu_retrieval), read from --base or trained")
    ap.add_argument("--collab-epochs", type=int,
                    help="epochs of the retriever trained for --collab when there is no --base")
    ap.add_argument("--cache", type=Path, default=Path("artifacts/.cache"))
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--variants", help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--epochs", type=int, help="override tiger_train.epochs")
    ap.add_argument("--budget", type=float, help="training seconds per variant (CPU)")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--users", type=int, help="validation users (a fixed random subset)")
    ap.add_argument("--set", action="append", default=[],
                    help="GROUP.FIELD=VALUE on every variant, e.g. tiger_train.num_threads=1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.mode == "quick" and args.device != "cpu":
        args.epochs = args.epochs or 20
        args.users = args.users or 4000
    ds = load_dataset(args.dataset)
    texts = ds.item_side.titles is not None
    names = args.variants.split(",") if args.variants else \
        [v for v in (QUICK if args.mode == "quick" else VARIANTS)
         if texts or VARIANTS[v].get("semantic_ids", {}).get("source") != "both"]
    split = leave_one_out(ds)
    args.cache.mkdir(parents=True, exist_ok=True)
    collab: dict[str, np.ndarray] = {}

    def collaborative() -> np.ndarray:
        if "x" not in collab:
            if args.base is not None and args.collab != "two_tower":
                net = load_model(args.base, args.collab)  # SASRec / HSTU: item_vectors()
                collab["x"] = net.item_vectors().detach().float().numpy()
            elif args.base is not None:
                path = args.base / "item_embeddings.safetensors"
                collab["x"] = load_file(str(path))["two_tower"]
            else:
                collab["x"] = train_collaborative(args, ds, split)
        return collab["x"]

    def x_of(source: str) -> tuple[str, np.ndarray]:
        return item_embedding_source(ds, source, collaborative, args.cache)

    nets: dict[str, Any] = {}
    rows = []
    for name in names:
        row = run_variant(name, args, ds, split, x_of, nets)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("tiger", "train")}),
              flush=True)
    print(f"\n{'variant':<12} {'HR@10':>6} {'N@10':>6} {'HR@50':>6} {'coll%':>6} {'max':>4} "
          f"{'invalid':>7} {'train s':>8} {'epochs':>6}")
    for r in rows:
        print(f"{r['variant']:<12} {r['HR@10']:>6.4f} {r['NDCG@10']:>6.4f} {r['HR@50']:>6.4f} "
              f"{100 * r['collision_rate']:>6.2f} {r['max_items_per_code']:>4} "
              f"{r['invalid_rate']:>7.4f} {r['train_s']:>8.1f} {r['epochs']:>6}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": rows}, indent=2))


if __name__ == "__main__":
    main()
