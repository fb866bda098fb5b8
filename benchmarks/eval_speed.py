"""`genrec eval`'s speed: the batched evaluation (recall answers shared between the rows and
the paths, beam searches and towers in batches, optionally forked workers) against the plain
per-user loop, on one artifacts directory, and whether they agree user by user.

    python benchmarks/eval_speed.py --artifacts artifacts/beauty --workers 2
    python benchmarks/eval_speed.py --artifacts A --users 2000   # a seeded sample, faster

Prints each run's seconds and the ratio, then per method the figures both ways and how many
users' ranks differ (batched float sums may order items whose scores tie within float
tolerance the other way; ``tests/test_eval_batched.py`` checks that this is the only cause).
Exits 1 when a figure differs. Both runs read the same split (``--stage``, validation by
default); the sequential retrievers' rows are the same batched code in both and are timed
once, separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.engine.recall.sequential import SequentialRecall
from models.evaluate.offline import METHODS, method_ranks
from models.evaluate.rank_metrics import summarize

KS = (5, 10, 50)


def timed(label: str, fn):  # noqa: ANN001, ANN201 (any callable)
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    print(f"{label}: {seconds:.1f} s", flush=True)
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--dataset", default=None, help="default: the manifest's source")
    ap.add_argument("--stage", choices=("valid", "test"), default="valid")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--users", type=int, default=0, help="a seeded sample (0 = all)")
    ap.add_argument("--methods", default="", help="comma-separated (default: all served)")
    ap.add_argument("--skip-reference", action="store_true",
                    help="time the batched evaluation only (no per-user loop, no check)")
    args = ap.parse_args()
    # As `genrec eval` runs: one torch and one faiss thread per process (the per-user loop
    # gets the same; before 2026-12-02 `genrec eval` left faiss at its default team, which
    # on a busy machine made each one-query search several times slower).
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rt = Runtime.load(args.artifacts)
    ds = load_dataset(args.dataset or rt.manifest["dataset"]["source"])
    split = leave_one_out(ds)
    comp = build_components(rt, EngineSettings())
    served = [m for m in METHODS if m in comp.recall or m in comp.pipelines]
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()] or served
    seq = [m for m in chosen if isinstance(comp.recall.get(m), SequentialRecall)]
    looped = [m for m in chosen if m not in seq]
    users = split.eval_users(args.stage)
    if args.users and args.users < len(users):
        users = np.sort(np.random.default_rng(0).choice(users, args.users, replace=False))
    kw = dict(stage=args.stage, depth=max(KS), progress=False, timestamps=ds.timestamps,
              users=users)
    print(f"{ds.name} {args.stage}: {len(users)} users, {rt.version}; methods {chosen}; "
          f"{args.workers} worker(s)", flush=True)
    if seq:
        timed(f"sequential rows {seq} (batched in both)",
              lambda: method_ranks(rt, split, seq, **kw))
    new, t_new = timed("batched", lambda: method_ranks(rt, split, looped, workers=args.workers,
                                                       **kw))
    if args.skip_reference:
        return
    ref, t_ref = timed("per-user loop", lambda: method_ranks(rt, split, looped, per_user=True,
                                                             **kw))
    print(f"per-user {t_ref:.1f} s / batched {t_new:.1f} s = {t_ref / t_new:.2f}x")
    table = Table(title=f"{ds.name} {args.stage}, {len(users)} users: per-user | batched")
    for col in ("method", *(f"{x}@{k}" for k in KS for x in ("HR", "NDCG")), "users differ"):
        table.add_column(col)
    same = True
    for m in looped:
        a, b = summarize(ref[m], KS), summarize(new[m], KS)
        same &= a == b
        table.add_row(m, *(f"{a[c]:.4f}" + ("" if a[c] == b[c] else f" | {b[c]:.4f}")
                           for c in a), str(int(np.sum(ref[m] != new[m]))))
    Console().print(table)
    print("every figure equal" if same else "FIGURES DIFFER")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
