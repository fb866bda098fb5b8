"""Each path's stages, one at a time: recall only (the fitted fusion of its sources), + ranker,
+ rerank (what `/recommend` serves), beside every recall source alone, through the served stage
objects (``models.engine.factory``) with the history blocked as `/recommend` blocks it.

    python benchmarks/path_ablation.py --artifacts artifacts/ml-100k --stage test

``--stage valid`` reproduces what the build's fusion fit saw (on all validation users, where
the fit may have used a sample); the test split is for the final table only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.evaluate import batched
from models.evaluate.offline import eval_context, rank_in_list
from models.evaluate.rank_metrics import summarize

STAGES = ("recall", "rank", "rerank")
KS = (5, 10, 50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--dataset", default=None, help="default: the manifest's source")
    ap.add_argument("--stage", choices=("valid", "test"), default="test")
    ap.add_argument("--users", type=int, default=0, help="evaluate a seeded sample (0 = all)")
    ap.add_argument("--workers", type=int, default=1,
                    help="forked processes, users batched per chunk as `genrec eval` runs "
                         "them (no ms/user then); 1: the per-user loop, timed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(args.artifacts)
    ds = load_dataset(args.dataset or rt.manifest["dataset"]["source"])
    split = leave_one_out(ds)
    comp = build_components(rt, EngineSettings())
    users = split.eval_users(args.stage)
    if args.users and args.users < len(users):
        users = np.sort(np.random.default_rng(0).choice(users, args.users, replace=False))
    targets = split.valid_target if args.stage == "valid" else split.test_target
    if args.workers > 1:
        ranks, seconds = _batched(rt, comp, split, ds, users, targets, args)
    else:
        ranks, seconds = _looped(rt, comp, split, ds, users, targets, args.stage)
    out = {m: {**summarize(ranks[m], KS), "ms_per_user": 1e3 * seconds[m] / len(users)}
           for m in ranks}
    table = Table(title=f"{ds.name} {args.stage}, {len(users)} users ({rt.version})")
    for col in ("method", *(f"{x}@{k}" for k in KS for x in ("HR", "NDCG")), "ms/user"):
        table.add_column(col)
    for m, v in out.items():
        table.add_row(m, *(f"{v[f'{x}@{k}']:.4f}" for k in KS for x in ("HR", "NDCG")),
                      f"{v['ms_per_user']:.1f}" if args.workers <= 1 else "")
    Console().print(table)
    plans = rt.documents.get("fusion", {})
    print(json.dumps({p: {k: v for k, v in plan.items() if k != "validation"}
                      for p, plan in plans.items()}))


def _stage_fns(pipelines: dict) -> dict:
    return {f"{path}: {stage}": (lambda ctx, k, p=pipe, s=stage:
                                 p.run(ctx, k, {"last_stage": s}).items)
            for path, pipe in pipelines.items() for stage in STAGES}


def _looped(rt, comp, split, ds, users, targets, stage):
    """Every method user by user through the served objects, timed per method."""
    fns = {name: (lambda ctx, k, s=src: s.recall(ctx, k)[0]) for name, src in comp.recall.items()}
    fns.update(_stage_fns(comp.pipelines))
    ranks = {m: np.empty(len(users), np.int64) for m in fns}
    seconds = dict.fromkeys(fns, 0.0)
    for row, u in enumerate(users.tolist()):
        ctx = eval_context(rt, split, u, stage, ds.timestamps)
        for m, fn in fns.items():
            t = time.perf_counter()
            ranks[m][row] = rank_in_list(fn(ctx, max(KS)), int(targets[u]))
            seconds[m] += time.perf_counter() - t
    return ranks, seconds


def _batched(rt, comp, split, ds, users, targets, args):
    """The same methods over forked workers, each recall computed once per chunk in batches
    (``models/evaluate/batched.py``, what `genrec eval --workers` runs)."""
    memos = batched.memos(comp)
    parts = {**comp.recall, **memos}
    views = {path: p.with_parts(parts, p.ranker) for path, p in comp.pipelines.items()}
    fns = {name: (lambda ctx, k, s=src: s.recall(ctx, k)[0]) for name, src in parts.items()}
    fns.update(_stage_fns(views))
    job = batched.Job(users, targets,
                      lambda u: eval_context(rt, split, u, args.stage, ds.timestamps), fns,
                      memos, batched.requests(comp, [*comp.recall, *comp.pipelines], max(KS)),
                      max(KS))
    ranks = batched.run(job, args.workers, 256, True, "ablation")
    return ranks, dict.fromkeys(fns, 0.0)


if __name__ == "__main__":
    main()
