"""Train one sequential retriever with a variant of a build profile, choose its epoch on the
validation split, then measure the test split once: for comparisons such as SASRec with the
paper's own objective (BCE, one sampled negative) against the shipped softmax loss.

The model is trained exactly as `genrec build` trains it (the generic retriever step
``models/build/retrieval.py:build_retriever``, validation-based epoch selection included);
test ranks come from ``models/evaluate/sequential.py``, which a test checks against the served
recall stage. Overrides are validated like any profile (``models/build/profiles.py``).

    python benchmarks/sequential_variant.py --dataset beauty --model sasrec \
        --profile full --set sasrec_train.loss=bce --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from models.artifacts.checkpoint import load_model
from models.build.job import BuildJob
from models.build.profiles import Profile
from models.build.profiles import profile as load_profile
from models.build.retrieval import build_retriever
from models.data import leave_one_out, load_dataset
from models.evaluate.sequential import sequential_metrics
from models.registry import COMPONENTS, RECALL, canonical, component

# The components the generic retriever step builds (a net and a trainer in the registry).
RETRIEVERS = tuple(c.name for c in COMPONENTS if c.net and c.trainer)


def variant(name: str, overrides: list[str]) -> Profile:
    """Profile ``name`` with ``GROUP.FIELD=VALUE`` overrides, checked like a shipped one."""
    try:
        return load_profile(name, overrides)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    # Recall method names and their aliases (``hstu`` is ``hstu_retrieval``).
    ap.add_argument("--model", type=lambda s: canonical(RECALL, s), choices=RETRIEVERS,
                    default="sasrec")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--set", action="append", default=[],
                    help="KEY.FIELD=VALUE override, e.g. sasrec_train.loss=bce (JSON values)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    profile = variant(args.profile, args.set)
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        job = BuildJob(ds=ds, split=split, seed=args.seed, progress=False, device=args.device,
                       profile=profile, out=Path(tmp))
        t = time.perf_counter()
        report = build_retriever(job, component(args.model))
        seconds = time.perf_counter() - t
        # The step exports the selected epoch's weights (on the CPU): read them back.
        model = load_model(Path(tmp), args.model).to(torch.device(args.device))
    test = sequential_metrics(model, split, "test", ds.timestamps)
    Console().print_json(data={"dataset": ds.name, "model": args.model, "set": args.set,
                               "selected_epoch": report.get("selected_epoch"),
                               "train_seconds": round(seconds, 1), "test": test})


if __name__ == "__main__":
    main()
