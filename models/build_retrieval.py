"""`genrec build`, sequential retrievers: GRU4Rec, SASRec and HSTU as recall sources.

Each model is trained on the leave-one-out training part and written next to the cascade's
files (see ``models/build.py``):
  {name}.{safetensors,json}       weights + rebuild config (name: gru4rec, sasrec, hstu_retrieval)
  {name}_items.faiss              exact inner-product index over the model's item vectors
Serving turns the user's stored history into ``user_vector`` and searches that index (MIPS)
with consumed and excluded items filtered inside faiss (``service/pipeline/stages.py``).

The index is exact (a flat faiss index): the catalogs bundled here hold at most ~12k items,
where a flat scan of 64-d vectors takes well under a millisecond, and exact search keeps the
offline figures equal to what is served.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from index.exact import ExactIndex
from models.checkpoint import save_model
from models.data import Dataset, Split
from models.eval_sequential import sequential_metrics
from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.hstu_retrieval import HSTURetrieval, HSTURetrievalConfig
from models.sasrec import SASRec, SASRecConfig
from models.train.gru4rec import GRU4RecTrainConfig, train_gru4rec
from models.train.hstu_retrieval import HSTURetrievalTrainConfig, train_hstu_retrieval
from models.train.sasrec import SASRecTrainConfig, train_sasrec

# Recall method name (``/recall``, ``genrec eval``) -> artifact file stem.
SEQUENTIAL = {"gru4rec": "gru4rec", "sasrec": "sasrec", "hstu": "hstu_retrieval"}


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


class EpochSelector:
    """Validation-based epoch selection ("early stopping" without stopping): every
    ``every`` epochs, and after the last one, measure full-ranking validation NDCG@10
    (``models/eval_sequential.py``) and keep a copy of the best weights; ``restore`` loads
    them. The test split is never read, so test figures stay honest."""

    def __init__(self, model: torch.nn.Module, split: Split, ds: Dataset, every: int) -> None:
        self.model, self.split, self.ds, self.every = model, split, ds, every
        self.checks: list[dict[str, float]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)

    def __call__(self, epoch: int) -> None:  # the trainers' on_epoch hook (before epoch e)
        if self.every and epoch > 0 and epoch % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        m = sequential_metrics(self.model, self.split, "valid", self.ds.timestamps, ks=(10,))
        self.checks.append({"epoch": epoch, "valid_ndcg@10": round(m["NDCG@10"], 5),
                            "valid_hr@10": round(m["HR@10"], 5)})
        if m["NDCG@10"] > self.best[0]:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = (m["NDCG@10"], epoch, state)

    def restore(self, epochs: int) -> dict[str, Any]:
        """After training ``epochs`` epochs: final check, load the best weights; -> report."""
        if not self.every:
            return {"selected_epoch": epochs}
        self.check(epochs)
        _, epoch, state = self.best
        if state is not None:
            self.model.load_state_dict(state)
        self.model.eval()
        return {"selected_epoch": epoch, "validation": self.checks}


def _train_kwargs(p: dict[str, Any], key: str) -> tuple[dict[str, Any], int]:
    """The profile's training options minus ``select_every`` (epochs between validation
    checks; 0 = keep the last epoch)."""
    opts = dict(p[key])
    return opts, int(opts.pop("select_every", 0))


def _with_length(cfg_cls: type, model_cls: type, params: dict[str, Any], ds: Dataset,
                 split: Split, device: str) -> tuple[Any, torch.nn.Module]:
    """Config (with ``max_len`` "auto" resolved by ``sequence_length``) and its model on
    ``device``, for the attention models that read a fixed-length history."""
    params = dict(params)
    params["max_len"] = sequence_length(split, params.get("max_len", "auto"))
    cfg = cfg_cls(n_items=ds.n_items, **params)
    return cfg, model_cls(cfg).to(torch.device(device))


def _sasrec(ds: Dataset, split: Split, p: dict[str, Any], seed: int, progress: bool,
            device: str) -> tuple[torch.nn.Module, dict[str, Any], list[float]]:
    cfg, model = _with_length(SASRecConfig, SASRec, p["sasrec"], ds, split, device)
    opts, every = _train_kwargs(p, "sasrec_train")
    train_cfg = SASRecTrainConfig(seed=seed, **opts)
    sel = EpochSelector(model, split, ds, every)
    losses = train_sasrec(model, split.train, ds.n_items, train_cfg, progress=progress,
                          on_epoch=sel)
    return model, {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
                   **sel.restore(train_cfg.epochs)}, losses


def _gru4rec(ds: Dataset, split: Split, p: dict[str, Any], seed: int, progress: bool,
             device: str) -> tuple[torch.nn.Module, dict[str, Any], list[float]]:
    cfg = GRU4RecConfig(n_items=ds.n_items, **p["gru4rec"])
    model = GRU4Rec(cfg).to(torch.device(device))
    opts, every = _train_kwargs(p, "gru4rec_train")
    train_cfg = GRU4RecTrainConfig(seed=seed, **opts)
    sel = EpochSelector(model, split, ds, every)
    losses = train_gru4rec(model, split.train, train_cfg, progress=progress, on_epoch=sel)
    return model, {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
                   **sel.restore(train_cfg.epochs)}, losses


def _hstu(ds: Dataset, split: Split, p: dict[str, Any], seed: int, progress: bool,
          device: str) -> tuple[torch.nn.Module, dict[str, Any], list[float]]:
    cfg, model = _with_length(HSTURetrievalConfig, HSTURetrieval, p["hstu_retrieval"], ds,
                              split, device)
    opts, every = _train_kwargs(p, "hstu_retrieval_train")
    train_cfg = HSTURetrievalTrainConfig(seed=seed, **opts)
    sel = EpochSelector(model, split, ds, every)
    losses = train_hstu_retrieval(model, split.train, ds.n_items, train_cfg,
                                  timestamps=ds.timestamps, progress=progress, on_epoch=sel)
    return model, {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
                   "timestamps": ds.timestamps is not None,
                   **sel.restore(train_cfg.epochs)}, losses


Trainer = Callable[[Dataset, Split, dict[str, Any], int, bool, str],
                   tuple[torch.nn.Module, dict[str, Any], list[float]]]
TRAINERS: dict[str, Trainer] = {"gru4rec": _gru4rec, "sasrec": _sasrec, "hstu": _hstu}


def build_sequential(ds: Dataset, split: Split, p: dict[str, Any], out: Path, seed: int,
                     progress: bool, console: Console, timings: dict[str, float],
                     device: str = "cpu", names: list[str] | None = None) -> dict[str, Any]:
    """Train the sequential retrievers whose artifact names (``SEQUENTIAL`` values) are in
    ``names`` (default: all) and export them; -> configs by artifact name."""
    configs: dict[str, Any] = {}
    for method, trainer in TRAINERS.items():
        name = SEQUENTIAL[method]
        if names is not None and name not in names:
            continue
        t = time.perf_counter()
        console.print(f"training [bold]{method}[/] retriever on {device}")
        torch.manual_seed(seed)
        model, cfg, losses = trainer(ds, split, p, seed, progress, device)
        _export(model, name, out)
        timings[name] = time.perf_counter() - t
        configs[name] = {**cfg, "final_loss": round(losses[-1], 4) if losses else None,
                         "device": device}
    return configs
