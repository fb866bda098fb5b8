"""Choose the sequential retrievers' settings on the VALIDATION split.

Each run trains one model on the leave-one-out training part and measures full-ranking
validation HR/NDCG at 5, 10, 50 after every checkpoint epoch (``models/eval_sequential.py``:
exact MIPS, history masked, as served). The test split is never read. Results are appended as
JSON lines to ``--out``; the chosen settings go into ``models/build.py``'s profiles.

    python benchmarks/tune_sequential.py --dataset beauty --runs sasrec-bce,hstu --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.build_retrieval import sequence_length
from models.data import leave_one_out, load_dataset
from models.eval_sequential import sequential_metrics
from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.hstu_retrieval import HSTURetrieval, HSTURetrievalConfig
from models.sasrec import SASRec, SASRecConfig
from models.train.gru4rec import GRU4RecTrainConfig, train_gru4rec
from models.train.hstu_retrieval import HSTURetrievalTrainConfig, train_hstu_retrieval
from models.train.sasrec import SASRecTrainConfig, train_sasrec

# name -> (model kind, model overrides, train overrides, checkpoint epochs)
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any], list[int]]] = {
    "sasrec-bce": ("sasrec", {"dim": 64, "dropout": 0.5}, {"epochs": 200},
                   [25, 50, 100, 150, 200]),
    "sasrec-bce-d2": ("sasrec", {"dim": 64, "dropout": 0.2}, {"epochs": 200},
                      [25, 50, 100, 150, 200]),
    "sasrec-softmax": ("sasrec", {"dim": 64, "dropout": 0.5}, {"epochs": 200, "loss": "softmax"},
                       [25, 50, 100, 150, 200]),
    "hstu": ("hstu", {"dropout": 0.2}, {"epochs": 150}, [25, 50, 75, 100, 150]),
    "hstu-d5": ("hstu", {"dropout": 0.5}, {"epochs": 150}, [25, 50, 75, 100, 150]),
    "hstu-d5-64": ("hstu", {"dropout": 0.5, "dim": 64, "qk_dim": 32, "v_dim": 32},
                   {"epochs": 150}, [25, 50, 75, 100, 150]),
    "gru4rec": ("gru4rec", {"dim": 64, "hidden": 100}, {"epochs": 10, "lr": 3e-3,
                                                        "batch_size": 64}, list(range(1, 11))),
    "gru4rec-top1": ("gru4rec", {"dim": 64, "hidden": 100},
                     {"epochs": 10, "lr": 3e-3, "batch_size": 64, "loss": "top1-max"},
                     list(range(1, 11))),
}


def run(name: str, dataset: str, device: str, out: Path) -> None:
    kind, model_over, train_over, checkpoints = RUNS[name]
    ds = load_dataset(dataset)
    split = leave_one_out(ds)
    torch.manual_seed(0)
    dev = torch.device(device)
    threads = {"num_threads": None} if dev.type == "cuda" else {}
    if kind == "sasrec":
        model_over = {"max_len": sequence_length(split, "auto"), **model_over}
        model = SASRec(SASRecConfig(n_items=ds.n_items, **model_over)).to(dev)
    elif kind == "hstu":
        model_over = {"max_len": sequence_length(split, "auto"), **model_over}
        model = HSTURetrieval(HSTURetrievalConfig(n_items=ds.n_items, **model_over)).to(dev)
    else:
        model = GRU4Rec(GRU4RecConfig(n_items=ds.n_items, **model_over)).to(dev)
    t0 = time.perf_counter()

    def check(epoch: int) -> None:
        if epoch not in checkpoints:
            return
        m = sequential_metrics(model, split, "valid", ds.timestamps)
        row = {"dataset": ds.name, "run": name, "epoch": epoch, "valid": m,
               "seconds": round(time.perf_counter() - t0, 1), "model": model_over,
               "train": train_over, "device": device}
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if kind == "sasrec":
        train_sasrec(model, split.train, ds.n_items, SASRecTrainConfig(**train_over, **threads),
                     progress=False, on_epoch=check)
    elif kind == "hstu":
        train_hstu_retrieval(model, split.train, ds.n_items,
                             HSTURetrievalTrainConfig(**train_over, **threads),
                             timestamps=ds.timestamps, progress=False, on_epoch=check)
    else:
        train_gru4rec(model, split.train, GRU4RecTrainConfig(**train_over, **threads),
                      progress=False, on_epoch=check)
    check(int(train_over["epochs"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--runs", default="sasrec-bce,hstu,gru4rec",
                    help=f"comma-separated, from: {','.join(RUNS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("tune_sequential.jsonl"))
    args = ap.parse_args()
    np.random.seed(0)
    for name in args.runs.split(","):
        run(name.strip(), args.dataset, args.device, args.out)


if __name__ == "__main__":
    main()
