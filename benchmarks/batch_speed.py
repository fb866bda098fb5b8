"""Compute per request of each path when several requests are computed together, in-process:
``models.engine.core.batch.run_batch`` over the same test users at batch sizes 1 (what the
service does without batching) up to 64, one torch thread, as served.

    python benchmarks/batch_speed.py --artifacts artifacts/ml-100k --users 128

Each size runs the same users in consecutive batches, after a warm-up; the HSTU ranker's
history cache is off (contexts carry no store version), so every request encodes its history,
as a request for a user not seen recently does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models.data import leave_one_out, load_dataset
from models.engine.core.batch import Call, run_batch
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.evaluate.offline import eval_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/ml-100k"))
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(args.artifacts)
    ds = load_dataset(rt.manifest["dataset"]["name"])
    split = leave_one_out(ds)
    comp = build_components(rt, EngineSettings())
    users = split.eval_users("test")[:args.users]
    contexts = [eval_context(rt, split, int(u), "test", ds.timestamps) for u in users]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{rt.manifest['dataset']['name']}: {len(contexts)} users, k 10, 1 torch thread")
    print("| path | " + " | ".join(f"batch {b} ms/request" for b in sizes) + " | best vs 1 |")
    print("| --- |" + " --- |" * (len(sizes) + 1))
    for path, pipeline in comp.pipelines.items():
        run_batch([Call(pipeline, c, 10) for c in contexts[:16]])  # warm-up
        best = {}
        for b in sizes:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for lo in range(0, len(contexts), b):
                    run_batch([Call(pipeline, c, 10) for c in contexts[lo:lo + b]])
                times.append((time.perf_counter() - t) / len(contexts) * 1e3)
            best[b] = min(times)
        ratio = best[sizes[0]] / min(best.values())
        print(f"| {path} | " + " | ".join(f"{best[b]:.2f}" for b in sizes)
              + f" | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
