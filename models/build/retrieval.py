"""`genrec build`, sequential retrievers (GRU4Rec, SASRec, HSTU retrieval, and any component
registered with ``build_retriever``): one generic step that builds the component's net
(``models.registry.NETS``), trains it through its trainer's ``fit`` and writes
  {name}.{safetensors,json}       weights + rebuild config
  {name}_items.faiss              exact inner-product index over the model's item vectors
Serving turns the user's stored history into ``user_vector`` and searches that index (MIPS)
with consumed and excluded items filtered inside faiss (``models/engine/recall/sequential.py``).

The index is exact (a flat faiss index): the catalogs bundled here hold at most ~12k items,
where a flat scan of 64-d vectors takes well under a millisecond, and exact search keeps the
offline figures equal to what is served.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.exact import ExactIndex
from models.artifacts.checkpoint import save_model
from models.build.job import BuildJob
from models.build.selection import EpochSelector
from models.data import Split
from models.registry import Component, resolve
from models.registry import net as registry_net


def sequence_length(split: Split, requested: int | str) -> int:
    """``"auto"``: 200 where the mean training sequence is long (MovieLens, as in the SASRec
    and HSTU papers), else 50 (Amazon reviews, as in SASRec's Beauty setup)."""
    if requested != "auto":
        return int(requested)
    mean = float(np.mean([len(s) for s in split.train])) if split.train else 0.0
    return 200 if mean > 50 else 50


def _export(model: torch.nn.Module, name: str, out: Path) -> None:
    model = model.cpu().eval()
    save_model(model, out, name)
    with torch.inference_mode():
        vecs = model.item_vectors().numpy().astype(np.float32)  # (n_items, d)
    ExactIndex(vecs, np.arange(len(vecs), dtype=np.int64)).save(out / f"{name}_items.faiss")


def _train_kwargs(opts: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The profile's training options minus ``select_every`` (epochs between validation
    checks; 0 = keep the last epoch)."""
    return opts, int(opts.pop("select_every", 0))


def build_retriever(job: BuildJob, comp: Component) -> dict[str, Any]:
    """Build ``comp.net`` from the profile's ``{name}`` settings (``max_len`` "auto" resolved
    by ``sequence_length``), train it with ``{comp.trainer}.fit`` and the profile's
    ``{name}_train`` options, keep the best validation epoch, export; -> report."""
    net = registry_net(str(comp.net))
    params = job.params(comp.name)
    if "max_len" in params:
        params["max_len"] = sequence_length(job.split, params["max_len"])
    cfg = resolve(net.config)(n_items=job.ds.n_items, **params)
    job.console.print(f"training [bold]{comp.name}[/] retriever on {job.device}")
    torch.manual_seed(job.seed)
    model = resolve(net.module)(cfg).to(torch.device(job.device))
    opts, every = _train_kwargs(job.params(f"{comp.name}_train"))
    selector = EpochSelector(model, job.split, job.ds, every)
    trainer = importlib.import_module(str(comp.trainer))
    train_cfg, losses = trainer.fit(dataclasses.replace(job, on_epoch=selector), model, opts)
    report = {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg)}
    if "timestamps" in inspect.signature(model.user_vector).parameters:  # time buckets
        report["timestamps"] = job.ds.timestamps is not None
    report.update(selector.restore(train_cfg.epochs))
    _export(model, comp.name, job.out)
    return {**report, "final_loss": round(losses[-1], 4) if losses else None,
            "device": job.device}
