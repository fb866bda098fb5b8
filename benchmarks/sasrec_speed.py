"""SASRec training speed against RecBole's, at RecBole's settings, on this machine.

RecBole 1.2.1's SASRec on Amazon Beauty (hidden 64, 2 layers, 2 heads, inner 256, dropout 0.5,
50 items of history, full-softmax cross-entropy, batch 256) took 195.6 s per training epoch on
the project's 2-core CPU (measured by a session before this script; RecBole does not install
cleanly here, so its side is cited, not rerun). This script trains genrec's SASRec with the same
sizes and objective through the build's own trainer, reports seconds per epoch (the first epoch
apart: it pays one-time allocation) and the full-ranking validation and test figures after the
last epoch, from the batched evaluator that a test checks against the served stage.

    python benchmarks/sasrec_speed.py --dataset beauty --epochs 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.data import leave_one_out, load_dataset
from models.evaluate.sequential import sequential_metrics
from models.nets.sasrec import SASRec, SASRecConfig
from models.train.sasrec import SASRecTrainConfig, train_sasrec

RECBOLE_SECONDS_PER_EPOCH = 195.6  # RecBole 1.2.1, Beauty, the settings above, 2-core CPU


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="cuda: the quality at convergence of the same settings, fast "
                         "(seconds per epoch then measure that device, not this CPU)")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    torch.manual_seed(args.seed)
    model = SASRec(SASRecConfig(n_items=ds.n_items, dim=64, n_layers=2, n_heads=2,
                                ff_dim=256, dropout=0.5, max_len=50)).to(args.device)
    cfg = SASRecTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                            loss="softmax", num_threads=args.threads, seed=args.seed)
    stamps: list[float] = []
    t0 = time.perf_counter()
    train_sasrec(model, split.train, ds.n_items, cfg, progress=False,
                 on_epoch=lambda e: stamps.append(time.perf_counter()))
    stamps.append(time.perf_counter())
    per_epoch = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    steady = per_epoch[1:] or per_epoch
    mean = sum(steady) / len(steady)
    t_eval = time.perf_counter()
    valid = sequential_metrics(model, split, "valid", ds.timestamps, ks=(10,))
    eval_seconds = time.perf_counter() - t_eval
    test = sequential_metrics(model, split, "test", ds.timestamps, ks=(10,))
    print(json.dumps({
        "dataset": ds.name, "device": args.device, "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads, "seconds_per_epoch": [round(s, 2) for s in per_epoch],
        "mean_seconds_per_epoch_after_first": round(mean, 2),
        "recbole_seconds_per_epoch": RECBOLE_SECONDS_PER_EPOCH,
        "speedup_vs_recbole": round(RECBOLE_SECONDS_PER_EPOCH / mean, 2),
        "total_train_seconds": round(stamps[-1] - t0, 1),
        "full_ranking_eval_seconds_valid": round(eval_seconds, 2),
        "valid": {k: round(v, 4) for k, v in valid.items()},
        "test": {k: round(v, 4) for k, v in test.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
