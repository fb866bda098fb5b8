"""Batched full-ranking evaluation of a next-item retriever (GRU4Rec, SASRec, HSTU) straight
from the model: every evaluated user's ``user_vector`` against all ``item_vectors``, the
pre-target history masked, ties counted against the model.

It computes the same ranks as ``models/evaluate/offline.py`` does through the served stage
(exact MIPS with consumed items blocked; a target the user already consumed is a miss), but a
few thousand users per matrix product instead of one request each, on any torch device: this
module only builds the score matrices; ranking is ``rank_metrics.target_ranks``, run on the
scores' device. Training-time validation (``benchmarks/tune_sequential.py``) uses it to choose
epochs and sizes.

``recall_batch`` is the served sequential source's ``recall`` (``SequentialRecall``) for many
contexts: user vectors in one forward pass, then each user's exact MIPS as served; offline
evaluation uses it for the paths' sequential candidates.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from index.base import search_excluding
from models.data.dataset import Split
from models.engine.core.context import UserContext
from models.engine.core.runtime import DEFAULT_HISTORY, history_length
from models.engine.recall.sequential import SequentialRecall
from models.evaluate.rank_metrics import summarize, target_ranks
from models.nets.features import pad_histories


def _pad_times(times: list[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(times), length), dtype=np.float64)
    for row, t in enumerate(times):
        tail = np.asarray(t, dtype=np.float64)[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return torch.from_numpy(out)  # (B, L) seconds, 0 at padding


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
            kwargs["timestamps"] = _pad_times(
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


@torch.inference_mode()
def recall_batch(source: SequentialRecall, contexts: Sequence[UserContext], k: int,
                 users_per_pass: int = 512) -> list[tuple[np.ndarray, np.ndarray]]:
    """``source.recall(ctx, k)`` for each context, ``source`` a ``SequentialRecall`` (its
    ``model``, ``max_len``, ``timed`` and ``index``): the user vectors ``users_per_pass`` at a
    time from the same inputs as served (the last ``max_len`` items; timestamps where the
    model takes them and the context has one per item), each searched as served. Vectors may
    differ from one-user passes in the last float bits, so near-tied items may swap."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    model, n = source.model, source.model.cfg.n_items
    model.eval()
    for lo in range(0, len(contexts), users_per_pass):
        part = contexts[lo:lo + users_per_pass]
        warm = [ctx for ctx in part if not ctx.cold]
        kwargs = {}
        if source.timed and warm and all(
                c.timestamps is not None and len(c.timestamps) == len(c.history) for c in warm):
            kwargs["timestamps"] = _pad_times([c.timestamps for c in warm], source.max_len)
        elif source.timed and any(c.timestamps is not None for c in warm):
            # Mixed contexts (some without timestamps): served one by one, as the batch
            # cannot give some rows timestamps and others none.
            out.extend(source.recall(ctx, k) for ctx in part)
            continue
        vecs = iter(model.user_vector(pad_histories([c.history for c in warm], source.max_len,
                                                    n), **kwargs).float().numpy()
                    if warm else ())
        for ctx in part:
            if ctx.cold:
                out.append((np.empty(0, np.int64), np.empty(0, np.float32)))
                continue
            ids, scores = search_excluding(source.index, next(vecs), k, ctx.blocked)
            out.append((ids.astype(np.int64), scores.astype(np.float32)))
    return out
