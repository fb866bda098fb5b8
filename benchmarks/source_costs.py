"""Each recall source's cost, ms per request, and each path's whole run, timed as the plan
fit times them (``models.build.fusion.source_costs``: one thread, one call per validation
user's context, after one untimed call). Run it from two checkouts on the same artifacts,
alternately, to compare code versions.

  python benchmarks/source_costs.py --artifacts artifacts/ml-100k [--users 64] [--repeat 3]

Quotas are the fitted plans' (``fusion.json``), 100 for a source no plan serves.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from models.build.fusion import source_costs
from models.data import leave_one_out, load_dataset
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.engine.paths.fused import FusedPath
from models.evaluate.offline import eval_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--dataset", default=None, help="default: the manifest's source")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    rt = Runtime.load(args.artifacts)
    ds = load_dataset(args.dataset or rt.manifest["dataset"]["source"])
    split = leave_one_out(ds)
    comp = build_components(rt, EngineSettings())
    users = np.sort(np.random.default_rng(0).permutation(split.eval_users("valid"))[:args.users])
    contexts = [eval_context(rt, split, int(u), "valid", ds.timestamps) for u in users]
    quotas = dict.fromkeys(comp.recall, 100)
    for pipe in comp.pipelines.values():
        if isinstance(pipe, FusedPath):  # plan.sources: {source: quota}
            quotas.update(pipe.plan.sources)
    torch.set_num_threads(1)
    for r in range(args.repeat):
        costs = source_costs(comp.recall, contexts, quotas)
        line = ", ".join(f"{s} {ms:.2f}" for s, ms in sorted(costs.items(), key=lambda x: -x[1]))
        print(f"run {r + 1} sources ms/request: {line}")
        with torch.inference_mode():
            for name, pipe in comp.pipelines.items():
                pipe.run(contexts[0], args.k)
                t = time.perf_counter()
                for ctx in contexts:
                    pipe.run(ctx, args.k)
                print(f"run {r + 1} {name} run ms/request: "
                      f"{1e3 * (time.perf_counter() - t) / len(contexts):.2f}")


if __name__ == "__main__":
    main()
