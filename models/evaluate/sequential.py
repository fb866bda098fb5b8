"""Batched full-ranking evaluation of a next-item retriever (GRU4Rec, SASRec, HSTU) straight
from the model: every evaluated user's ``user_vector`` against all ``item_vectors``, the
pre-target history masked, ties counted against the model.

It computes the same ranks as ``models/evaluate/offline.py`` does through the served stage
(exact MIPS with consumed items blocked; a target the user already consumed is a miss), but a
few thousand users per matrix product instead of one request each, on any torch device: this
module only builds the score matrices; ranking is ``rank_metrics.target_ranks``, run on the
scores' device. Training-time validation (``benchmarks/tune_sequential.py``) uses it to choose
epochs and sizes.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from models.data.dataset import Split
from models.engine.core.runtime import DEFAULT_HISTORY, history_length
from models.evaluate.rank_metrics import summarize, target_ranks
from models.nets.features import pad_histories, pad_times


@torch.inference_mode()
def sequential_ranks(model: torch.nn.Module, split: Split, stage: str = "valid",
                     timestamps: list[np.ndarray] | None = None,
                     batch_size: int = 1024) -> np.ndarray:
    """-> (n_eval_users,) 0-based rank of each user's ``stage`` target among the items not in
    their pre-target history (``rank_metrics.MISS`` when the target is in that history)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    max_len = int(history_length(model) or DEFAULT_HISTORY)  # as served
    timed = timestamps is not None and (
        "timestamps" in inspect.signature(model.user_vector).parameters)
    users = split.eval_users(stage)
    targets = split.valid_target if stage == "valid" else split.test_target
    items = model.item_vectors()  # (N, d)
    n = items.shape[0]
    out = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        hists = [split.history(int(u), stage) for u in batch]
        seqs = pad_histories(hists, max_len, n).to(dev)  # (B, L)
        kwargs = {}
        if timed:
            kwargs["timestamps"] = pad_times(
                [timestamps[int(u)][: len(h)] for u, h in zip(batch, hists, strict=True)],
                max_len).to(dev)
        scores = model.user_vector(seqs, **kwargs).float() @ items.float().T  # (B, N)
        # Every history item is masked (all of it, not just the model's window), as served,
        # so a target already consumed is a miss.
        out[start:start + len(batch)] = target_ranks(scores, targets[batch], hists,
                                                     excluded_target="miss")
    model.train(was_training)
    return out


def sequential_metrics(model: torch.nn.Module, split: Split, stage: str = "valid",
                       timestamps: list[np.ndarray] | None = None,
                       ks: tuple[int, ...] = (5, 10, 50)) -> dict[str, float]:
    """HR@K / NDCG@K over the ``stage`` users (see ``sequential_ranks``)."""
    return summarize(sequential_ranks(model, split, stage, timestamps), ks)

