"""HSTU ranker training: the next interaction against many negatives (sampled softmax, the
objective that works for HSTU retrieval), hard ones from the path's own recall candidates,
plus an optional auxiliary label (rating >= 4 on MovieLens) on a second head.

One example is (user, position t) of a ``split.train`` sequence: history = seq[:t] (its last
``max_history`` items), candidates = [seq[t]] + ``n_hard`` items drawn from the user's
candidate pool (what the generative path's recall sources proposed for the user's latest
training positions, ``models/build/ranker_candidates.py``: the lists the ranker reorders when
serving) + ``n_negatives`` items drawn uniformly; every negative is an item the user never
consumed in training (so never the target). The main loss is softmax cross-entropy over the
candidate list (target at index 0). With ratings and ``model.cfg.aux_head``, the target's
auxiliary logit is trained with BCE on rating >= 4. Without pools (or ``n_hard = 0``) every
negative is uniform.

Candidates see the whole history and themselves, never each other, so training scores them
M-FALCON style (``HSTURanker.list_states``): each row's history is encoded once and its
1 + n_hard + n_negatives candidates attend to it, O(L^2 + K L) per row rather than
O((L + K)^2) for one pass over ``history + candidates``; the scores are the same.

Timestamps: when given, the history's timestamps are fed and ``query_time`` is left None, so
candidates take the last history timestamp. Serving does the same (``HSTURankStage``): a
replayed dataset's "now" is unknowable at serving time, and training with the true next-event
time would teach the time bias a signal serving can never supply.

Batches are formed from examples of similar history length and cut to the longest history in
the batch (left padding is invisible to the model, so trimming it is exact). Each epoch takes
every user's last ``recent_per_user`` positions (the ones most like the serving-time query:
longest histories, most recent tastes, and the positions the pools were mined for) plus a
fresh ``sample_frac`` of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.data.dataset import Split
from models.nets.hstu_ranker import HSTURanker
from models.train.loop import run_epochs, setup
from models.train.samples import (
    CandidatePools,
    build_samples,
    consumed_keys,
    n_sampled,
    sample_mixed_negatives,
    select_positions,
)

__all__ = ["HSTUTrainConfig", "length_batches", "select_positions", "train_hstu"]


@dataclass
class HSTUTrainConfig:
    epochs: int = 4
    batch_size: int = 128  # examples per batch; each brings 1 + n_hard + n_negatives candidates
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_negatives: int = 32  # uniform unconsumed items per example
    n_hard: int = 0  # per example, from the user's recall candidate pool (when given)
    # Mining the pools (models/build/ranker_candidates.py): each user's last ``mine_positions``
    # training positions are sent to the path's recall sources, ``mine_quota`` items each.
    mine_positions: int = 1
    mine_quota: int = 50
    mine_gap: int = 0  # positions between the last mined one and the user's last one
    aux_weight: float = 0.5  # weight of the auxiliary BCE next to the main cross-entropy
    max_history: int | None = None  # None: the model's cfg.max_history
    recent_per_user: int = 16  # every epoch: each user's last N training positions...
    sample_frac: float = 0.1  # ...plus this fraction of the other positions, redrawn per epoch
    length_chunk: int = 16  # batches sorted by history length within chunks of this many
    seed: int = 0
    num_threads: int | None = 2  # torch intra-op threads; None leaves torch's setting alone


def _aligned(name: str, values: list[np.ndarray] | None, train: list[np.ndarray],
             max_history: int, dtype: type) -> np.ndarray | None:
    """Per-user arrays aligned with the training sequences (or longer, e.g. the full
    sequences: the training part is their prefix) -> one flat array in ``build_samples``'s
    layout: per user [0] * max_history + the first len(train[u]) values."""
    if values is None:
        return None
    if len(values) != len(train):
        raise ValueError(f"{name}: {len(values)} users, the split has {len(train)}")
    parts = []
    for u, (v, s) in enumerate(zip(values, train, strict=True)):
        if len(v) < len(s):
            raise ValueError(f"{name}[{u}] has {len(v)} values for {len(s)} training items")
        parts.append(np.zeros(max_history, dtype=dtype))
        parts.append(np.asarray(v[: len(s)], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def length_batches(idx: np.ndarray, lengths: np.ndarray, batch_size: int, chunk: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle ``idx``, then within chunks of ``chunk`` batches sort by history length and cut
    into batches: similar lengths share a batch (little padding), the batch order is shuffled
    later by the loop. Always ceil(len(idx) / batch_size) batches."""
    idx = rng.permutation(idx)
    out: list[np.ndarray] = []
    span = batch_size * max(chunk, 1)
    for c in range(0, len(idx), span):
        part = idx[c : c + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        out.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    return out


def train_hstu(model: HSTURanker, split: Split, n_items: int, cfg: HSTUTrainConfig,
               ratings: list[np.ndarray] | None = None,
               timestamps: list[np.ndarray] | None = None,
               progress: bool = True, pools: CandidatePools | None = None) -> list[float]:
    """Train ``model`` in place; returns the mean loss (main + aux_weight * aux) per epoch.

    ratings / timestamps: per user, aligned with ``split.train`` (the full sequences' arrays
    work too, only their training prefix is read). The auxiliary loss runs only when ratings
    are given and the model has an aux head. pools: per user, recall candidates never
    consumed in training, the source of the ``n_hard`` negatives."""
    rng = setup(cfg.seed, cfg.num_threads)
    L = cfg.max_history or model.cfg.max_history
    samples = build_samples(split.train, L, pad=n_items)
    if len(samples) == 0:
        raise ValueError("no training examples: every training sequence has < 2 items")
    counts = np.array([max(len(s) - 1, 0) for s in split.train], dtype=np.int64)
    # History length of each example: min(t, L) with t = 1.. within each user.
    first = np.cumsum(counts) - counts
    hist_len = np.minimum(np.arange(len(samples)) - np.repeat(first, counts) + 1, L)
    flat_t = _aligned("timestamps", timestamps, split.train, L, np.float64)
    use_aux = ratings is not None and model.aux_head is not None and cfg.aux_weight > 0
    flat_r = _aligned("ratings", ratings, split.train, L, np.float64) if use_aux else None
    consumed = consumed_keys(split.train, n_items)

    # This epoch's examples (sel, into samples), their negatives (len(sel), k) and batches of
    # rows of sel; rebuilt by new_epoch.
    epoch: dict[str, np.ndarray] = {}
    batches: list[np.ndarray] = []

    def new_epoch(_: int) -> None:
        sel = select_positions(counts, cfg.recent_per_user, cfg.sample_frac, rng)
        epoch["sel"] = sel
        epoch["negs"] = sample_mixed_negatives(samples.users[sel], cfg.n_hard, cfg.n_negatives,
                                               n_items, consumed, rng, pools)
        batches[:] = length_batches(np.arange(len(sel)), hist_len[sel], cfg.batch_size,
                                    cfg.length_chunk, rng)

    dev = next(model.parameters()).device  # batches go to the model's device

    def batch_loss(which: np.ndarray) -> torch.Tensor:
        rows = batches[int(which[0])]
        idx = epoch["sel"][rows]  # (b,) example indices
        m = int(hist_len[idx].max())  # longest history in the batch: the rest is padding
        win = samples.starts[idx][:, None] + np.arange(L - m, L)  # (b, m) into samples.flat
        history = torch.from_numpy(samples.flat[win]).to(dev)  # (b, m) right-aligned
        ts = None if flat_t is None else torch.from_numpy(flat_t[win]).to(dev)  # (b, m) s
        items = torch.from_numpy(
            np.concatenate([samples.targets[idx, None], epoch["negs"][rows]], axis=1)
        ).to(dev)  # (b, K) = (b, 1 + n_hard + n_negatives)
        zeros = torch.zeros(len(idx), dtype=torch.long, device=dev)  # target at index 0
        state = model.list_states(history, items, ts)  # (b, K, d)
        main = F.cross_entropy(model.head_logits(state, items), zeros)
        if flat_r is None:
            return main
        aux = model.aux_logits(state[:, :1], items[:, :1])[:, 0]  # (b,) the target's only
        label = torch.from_numpy(flat_r[samples.starts[idx] + L] >= 4.0).to(dev, aux.dtype)
        return main + cfg.aux_weight * F.binary_cross_entropy_with_logits(aux, label)

    # The loop's rows are whole batches (rebuilt each epoch by new_epoch), one per step.
    n_recent = int(np.minimum(counts, max(cfg.recent_per_user, 0)).sum())
    n_rows = n_recent + n_sampled(len(samples) - n_recent, cfg.sample_frac)
    if n_rows == 0:
        raise ValueError("recent_per_user and sample_frac select no training positions")
    n_batches = -(-n_rows // cfg.batch_size)
    return run_epochs(model, n_batches, 1, cfg.epochs, cfg.lr, cfg.weight_decay, rng,
                      batch_loss, "hstu", progress, on_epoch=new_epoch)
