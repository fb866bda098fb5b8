"""Validation-based epoch selection for trainers that report each epoch (``on_epoch``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from models.data import Dataset, Split
from models.evaluate.sequential import sequential_metrics


class EpochSelector:
    """Validation-based epoch selection ("early stopping" without stopping): every
    ``every`` epochs, and after the last one, measure full-ranking validation NDCG@10
    (``models/eval_sequential.py``) and keep a copy of the best weights; ``restore`` loads
    them. The test split is never read, so test figures stay honest. ``measure`` replaces
    the retrievers' full-ranking check (e.g. the generator's beam search): -> at least
    {"NDCG@10", "HR@10"} on validation."""

    def __init__(self, model: torch.nn.Module, split: Split, ds: Dataset, every: int,
                 measure: Callable[[], dict[str, float]] | None = None) -> None:
        self.model, self.split, self.ds, self.every = model, split, ds, every
        self.measure = measure
        self.checks: list[dict[str, float]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)

    def __call__(self, epoch: int) -> None:  # the trainers' on_epoch hook (before epoch e)
        if self.every and epoch > 0 and epoch % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        m = self.measure() if self.measure is not None else sequential_metrics(
            self.model, self.split, "valid", self.ds.timestamps, ks=(10,))
        self.checks.append({"epoch": epoch, "valid_ndcg@10": round(m["NDCG@10"], 5),
                            "valid_hr@10": round(m["HR@10"], 5)})
        if m["NDCG@10"] > self.best[0]:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = (m["NDCG@10"], epoch, state)

    def restore(self, epochs: int) -> dict[str, Any]:
        """After training ``epochs`` epochs: final check, load the best weights; -> report."""
        if not self.every:
            return {"selected_epoch": epochs}
        if not self.checks or self.checks[-1]["epoch"] != epochs:  # not checked yet
            self.check(epochs)
        _, epoch, state = self.best
        if state is not None:
            self.model.load_state_dict(state)
        self.model.eval()
        return {"selected_epoch": epoch, "validation": self.checks}
