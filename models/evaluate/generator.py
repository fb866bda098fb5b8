"""Evaluation of the semantic-ID generator's own list (TIGER alone): trie-constrained beam
search as served (``models/nets/tiger_decode.generate``), every history item blocked, the
target's 0-based rank in the top ``k``. A batch of users shares one beam search, so a check
of 1,000 users costs seconds on a CPU; the build's epoch selection and
``benchmarks/tune_tiger.py`` both read it, so the two report the same figures.
"""

from __future__ import annotations

import numpy as np

from index.semantic_ids import SemanticIds
from models.data.dataset import Split
from models.evaluate.rank_metrics import MISS, summarize
from models.nets.tiger import TIGER, user_bucket
from models.nets.tiger_decode import generate


def generator_ranks(model: TIGER, sids: SemanticIds, split: Split, user_ids: list[str],
                    users: np.ndarray, stage: str = "valid", beam: int = 50, k: int = 50,
                    batch: int = 256) -> tuple[np.ndarray, float]:
    """-> ((len(users),) rank of each user's ``stage`` target in the generated top ``k``,
    ``MISS`` when absent; the invalid rate: generated items outside the catalogue, blocked
    (in the history) or repeated, over all generated items; it must be 0)."""
    was_training = model.training
    targets = split.valid_target if stage == "valid" else split.test_target
    ranks = np.full(len(users), MISS, dtype=np.int64)
    bad = n_out = 0
    n = len(sids)
    for lo in range(0, len(users), batch):
        us = users[lo:lo + batch]
        hists = [split.history(int(u), stage) for u in us]
        buckets = [user_bucket(user_ids[int(u)], model.cfg.n_user_buckets) for u in us]
        out = generate(model, sids, [h[-model.cfg.max_history:] for h in hists], buckets, k,
                       max(k, beam), hists)
        for i, (h, (items, _)) in enumerate(zip(hists, out, strict=True)):
            n_out += len(items)
            bad += int(np.sum((items < 0) | (items >= n) | np.isin(items, h)))
            bad += len(items) - len(np.unique(items))
            hit = np.flatnonzero(items == targets[int(us[i])])
            if len(hit):
                ranks[lo + i] = int(hit[0])
    model.train(was_training)
    return ranks, bad / max(n_out, 1)


def generator_metrics(model: TIGER, sids: SemanticIds, split: Split, user_ids: list[str],
                      users: np.ndarray, stage: str = "valid", beam: int = 50,
                      ks: tuple[int, ...] = (10, 50)) -> dict[str, float]:
    """HR@K / NDCG@K of the generator's list over ``users``, plus ``invalid_rate``."""
    ranks, invalid = generator_ranks(model, sids, split, user_ids, users, stage, beam,
                                     max(ks))
    return {**summarize(ranks, ks), "invalid_rate": invalid}
