"""Train one sequential retriever with a variant of a build profile, choose its epoch on the
validation split, then measure the test split once: for comparisons such as SASRec with the
paper's own objective (BCE, one sampled negative) against the shipped softmax loss.

The model is trained exactly as `genrec build` trains it (``models/build_retrieval.py``,
validation-based epoch selection included); test ranks come from
``models/eval_sequential.py``, which a test checks against the served recall stage.

    python benchmarks/sequential_variant.py --dataset beauty --model sasrec \
        --profile full --set sasrec_train.loss=bce --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console

from models.build_retrieval import TRAINERS
from models.data import leave_one_out, load_dataset
from models.eval_sequential import sequential_metrics
from models.profiles import PROFILES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--model", choices=sorted(TRAINERS), default="sasrec")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--set", action="append", default=[],
                    help="KEY.FIELD=VALUE override, e.g. sasrec_train.loss=bce (JSON values)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = {k: dict(v) for k, v in PROFILES[args.profile].items()}
    for item in args.set:
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        try:
            p[section][field] = json.loads(value)
        except json.JSONDecodeError:
            p[section][field] = value
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    model, cfg, _ = TRAINERS[args.model](ds, split, p, args.seed, False, args.device)
    seconds = time.perf_counter() - t
    test = sequential_metrics(model, split, "test", ds.timestamps)
    Console().print_json(data={"dataset": ds.name, "model": args.model, "set": args.set,
                               "selected_epoch": cfg.get("selected_epoch"),
                               "train_seconds": round(seconds, 1), "test": test})


if __name__ == "__main__":
    main()
