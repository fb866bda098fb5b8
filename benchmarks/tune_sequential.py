"""Choose the sequential retrievers' settings on the VALIDATION split.

Each run trains one model on the leave-one-out training part and measures full-ranking
validation HR/NDCG at 5, 10, 50 after every checkpoint epoch (``models/evaluate/sequential.py``:
exact MIPS, history masked, as served). The test split is never read. Results are appended as
JSON lines to ``--out``; the chosen settings go into the build profiles
(``models/build/profile_values.py``). Models and trainers come from ``models.registry`` (the
component's net and its trainer's ``fit``), as `genrec build` trains them.

    python benchmarks/tune_sequential.py --dataset beauty --runs sasrec-bce,hstu --device cuda

With ``--profile``, one component is trained exactly as `genrec build` trains it, from the
profile's values plus ``--set`` overrides, validated every ``select_every`` epochs; the row
holds the validation curve, the selected epoch and the training seconds:

    python benchmarks/tune_sequential.py --profile default --component sasrec \
        --set sasrec_train.windows=true
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.build.retrieval import sequence_length
from models.data import leave_one_out, load_dataset
from models.evaluate.sequential import sequential_metrics
from models.registry import component, resolve
from models.registry import net as registry_net
from models.train.job import TrainJob

# name -> (component (models.registry), model overrides, train overrides, checkpoint epochs)
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any], list[int]]] = {
    "sasrec-bce": ("sasrec", {"dim": 64, "dropout": 0.5}, {"epochs": 200},
                   [25, 50, 100, 150, 200]),
    "sasrec-bce-d2": ("sasrec", {"dim": 64, "dropout": 0.2}, {"epochs": 200},
                      [25, 50, 100, 150, 200]),
    "sasrec-softmax": ("sasrec", {"dim": 64, "dropout": 0.5}, {"epochs": 200, "loss": "softmax"},
                       [25, 50, 100, 150, 200]),
    "hstu": ("hstu_retrieval", {"dropout": 0.2}, {"epochs": 150}, [25, 50, 75, 100, 150]),
    "hstu-d5": ("hstu_retrieval", {"dropout": 0.5}, {"epochs": 150}, [25, 50, 75, 100, 150]),
    "hstu-d5-64": ("hstu_retrieval", {"dropout": 0.5, "dim": 64, "qk_dim": 32, "v_dim": 32},
                   {"epochs": 150}, [25, 50, 75, 100, 150]),
    "gru4rec": ("gru4rec", {"dim": 64, "hidden": 100}, {"epochs": 10, "lr": 3e-3,
                                                        "batch_size": 64}, list(range(1, 11))),
    "gru4rec-top1": ("gru4rec", {"dim": 64, "hidden": 100},
                     {"epochs": 10, "lr": 3e-3, "batch_size": 64, "loss": "top1-max"},
                     list(range(1, 11))),
}


def run(name: str, dataset: str, device: str, out: Path, epochs: int | None = None) -> None:
    comp_name, model_over, train_over, checkpoints = RUNS[name]
    if epochs is not None:  # a shorter schedule (smoke runs): checkpoints cut to it, its end kept
        train_over = {**train_over, "epochs": epochs}
        checkpoints = sorted({*(e for e in checkpoints if e < epochs), epochs})
    comp = component(comp_name)
    net = registry_net(str(comp.net))
    cfg_cls = resolve(net.config)
    ds = load_dataset(dataset)
    split = leave_one_out(ds)
    torch.manual_seed(0)
    dev = torch.device(device)
    threads = {"num_threads": None} if dev.type == "cuda" else {}
    if "max_len" in {f.name for f in dataclasses.fields(cfg_cls)}:  # attention models
        model_over = {"max_len": sequence_length(split, "auto"), **model_over}
    model = resolve(net.module)(cfg_cls(n_items=ds.n_items, **model_over)).to(dev)
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

    job = TrainJob(ds=ds, split=split, seed=0, progress=False, device=device, on_epoch=check)
    importlib.import_module(str(comp.trainer)).fit(job, model, {**train_over, **threads})
    check(int(train_over["epochs"]))


def run_profile(args: argparse.Namespace) -> None:
    """One component of a build profile, trained by the build's own step into a scratch
    directory (``models.build.retrieval.build_retriever``)."""
    import tempfile

    from models.build.job import BuildJob
    from models.build.profiles import profile

    ds = load_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        job = BuildJob(ds=ds, split=leave_one_out(ds), seed=0, progress=False,
                       device=args.device, profile=profile(args.profile, args.set),
                       out=Path(tmp))
        t0 = time.perf_counter()
        report = resolve(component(args.component).build)(job, component(args.component))
    row = {"dataset": ds.name, "profile": args.profile, "component": args.component,
           "set": args.set, "seconds": round(time.perf_counter() - t0, 1),
           "selected_epoch": report.get("selected_epoch"),
           "validation": report.get("validation"), "device": args.device}
    print(json.dumps(row), flush=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--runs", default=None,
                    help=f"comma-separated, from: {','.join(RUNS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("tune_sequential.jsonl"))
    ap.add_argument("--epochs", type=int, default=None,
                    help="cut every run to this many epochs (default: each run's schedule)")
    ap.add_argument("--profile", help="train --component from this build profile instead")
    ap.add_argument("--component", default="sasrec")
    ap.add_argument("--set", action="append", default=[], help="GROUP.FIELD=VALUE")
    args = ap.parse_args()
    np.random.seed(0)
    if args.profile:
        comp = component(args.component)
        if comp.net is None or comp.trainer is None:
            ap.error(f"--component {args.component}: only the sequential retrievers "
                     "(gru4rec, sasrec, hstu_retrieval) train on their own")
        if args.runs or args.epochs:
            ap.error("--runs and --epochs do not apply with --profile (use --set)")
        run_profile(args)
        return
    args.runs = args.runs or "sasrec-bce,hstu,gru4rec"
    for name in args.runs.split(","):
        run(name.strip(), args.dataset, args.device, args.out, args.epochs)


if __name__ == "__main__":
    main()
