"""Constrained beam search for TIGER: every returned ID is a real, non-blocked item.

The trie is ``SemanticIds.trie`` (``index.semantic_id_trie.SemanticIdTrie``, cached per
SemanticIds): at level p the distinct length-(p+1) prefixes are contiguous row blocks of the
sorted ID table ("groups"), and a group's children at level p+1 are a contiguous range of
groups, so every live beam is expanded with array arithmetic, not a per-beam loop.

Business rules live inside the search: a group is *dead* for a user when every item under it
is blocked (blocked rows counted per group with numpy, no per-item loop). Dead groups never
become candidates, so every kept beam can still finish on an unblocked item, and with
``width = max(beam_size, k)`` beams the search returns min(k, #unblocked items) items: each
level keeps either ``width`` live prefixes (each holding >= 1 unblocked item) or all of them.

Scores are the model's log-probabilities (log-softmax over each position's full radix, not
renormalised over allowed tokens), so a result's score equals ``TIGER.log_prob`` of its ID
and, with ``width`` >= the number of items, the search is exactly brute-force top-k.

No length normalisation: every semantic ID has the same length T, so at each level all the
prefixes compared share one length and dividing their log-probs by length**alpha (as in
machine translation, where hypotheses end at different steps) would change neither which
beams are kept nor the final order; scores stay plain log-probs (a test checks that they
equal ``TIGER.log_prob``).

Sampling (``temperature > 0``): the first-level beams are drawn without replacement from
softmax(logits / temperature) over the allowed first tokens, by Gumbel-top-k on the keys
log p / temperature + Gumbel noise; later levels stay deterministic. Returned scores are
still the untempered log-probs, and results are sorted by them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from index.semantic_id_trie import SemanticIdTrie
from index.semantic_ids import SemanticIds
from models.nets.tiger import TIGER, pack_histories


def _dead_keys(trie: SemanticIdTrie, blocked: list[set[int] | np.ndarray]) -> list[np.ndarray]:
    """Per level p: sorted int64 keys ``user * G_p + group`` of groups all of whose items the
    user blocked."""
    rows, users = [], []
    for u, b in enumerate(blocked):
        arr = np.fromiter(b, dtype=np.int64) if isinstance(b, set | frozenset) else \
            np.asarray(b, dtype=np.int64).reshape(-1)
        arr = arr[(arr >= 0) & (arr < trie.n)]
        rows.append(trie.row_of_item[arr])
        users.append(np.full(len(arr), u, dtype=np.int64))
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    user = np.concatenate(users) if users else np.zeros(0, np.int64)
    key = np.unique(user * trie.n + row)  # dedupe (user, row)
    user, row = key // trie.n, key % trie.n
    out = []
    for p in range(trie.length):
        n_groups = trie.n_groups(p)
        gkey, count = np.unique(user * n_groups + trie.row_group[p][row], return_counts=True)
        out.append(gkey[count == trie.size[p][gkey % n_groups]])
    return out


def _is_dead(dead: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(dead) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(dead, keys).clip(max=len(dead) - 1)
    return dead[pos] == keys


@torch.inference_mode()
def generate(model: TIGER, sids: SemanticIds, histories: list[np.ndarray],
             user_buckets: list[int], k: int, beam_size: int,
             blocked: list[set[int] | np.ndarray], temperature: float = 0.0,
             generator: torch.Generator | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-k items per user by constrained beam search (see the module docstring).

    histories: per user dense item ids, oldest first (the last ``max_history`` are used);
    user_buckets: per user ``user_bucket(...)``; blocked: per user items never to return.
    -> per user (items (<=k,) int64 dense ids, scores (<=k,) float32 log-probs), descending;
    fewer than k only when fewer than k items are unblocked."""
    n_users = len(histories)
    if not (len(user_buckets) == len(blocked) == n_users):
        raise ValueError("histories, user_buckets and blocked must have one entry per user")
    if sids.length != model.length or np.any(sids.radix > np.asarray(model.radix)):
        raise ValueError(f"semantic ids (radix {sids.radix.tolist()}) do not fit the model "
                         f"(radix {model.radix})")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n_users == 0 or k <= 0 or len(sids) == 0:
        return [empty for _ in range(n_users)]
    if model.training:  # dropout off; eval() on every call would cost ~0.5 ms
        model.eval()
    trie = sids.trie
    dead = _dead_keys(trie, blocked)
    width = max(beam_size, k)
    device = next(model.parameters()).device

    tokens, valid = pack_histories(sids.ids, histories, model.cfg.max_history)
    cache = model.memory_cache(torch.as_tensor(user_buckets, dtype=torch.long, device=device),
                               torch.from_numpy(tokens).to(device),
                               torch.from_numpy(valid).to(device))
    # Beam state, W slots per user: prefix (U, W, p), group at level p-1, score, alive.
    prefix = np.zeros((n_users, 1, 0), dtype=np.int64)
    group = np.zeros((n_users, 1), dtype=np.int64)  # the root
    score = np.zeros((n_users, 1))
    alive = np.ones((n_users, 1), dtype=bool)
    T = trie.length
    for p in range(T):
        W = prefix.shape[1]
        if model.radix[p] == 1:  # one token (the dedup column without collisions): log 1 = 0
            logp = np.zeros((n_users, W, 1))  # exactly log_softmax of one logit; no pass
        else:
            logits = model.step_logits(cache, torch.from_numpy(prefix).to(device))
            logp = F.log_softmax(logits.double(), -1).cpu().numpy()  # (U, W, radix[p])
        slot = np.flatnonzero(alive.reshape(-1))  # (S,) flat u * W + w of the live beams
        g = group.reshape(-1)[slot]
        lo, n_child = trie.child_lo[p][g], trie.child_hi[p][g] - trie.child_lo[p][g]
        # Expand every live beam into its children: (C,) candidates.
        parent = np.repeat(np.arange(len(slot)), n_child)
        child = lo[parent] + np.arange(len(parent)) - np.repeat(np.cumsum(n_child) - n_child,
                                                                 n_child)
        user = slot[parent] // W
        ok = ~_is_dead(dead[p], user * trie.n_groups(p) + child)
        parent, child, user = parent[ok], child[ok], user[ok]
        tok = trie.tok[p][child]
        flat = logp.reshape(n_users * W, -1)
        cand_score = score.reshape(-1)[slot[parent]] + flat[slot[parent], tok]
        key = cand_score
        if p == 0 and temperature > 0:
            unif = torch.rand(len(key), generator=generator, dtype=torch.float64).numpy()
            gumbel = -np.log(-np.log(np.clip(unif, 1e-300, 1.0 - 1e-16)))
            key = cand_score / temperature + gumbel  # Gumbel-top-k == sampling w/o replacement
        # Keep each user's best candidates by key: (U, W', p+1) beams for the next level.
        order, rank, user_s = _best_per_user(key, user, k if p == T - 1 else width)
        W_new = int(rank.max()) + 1 if len(rank) else 1
        new_prefix = np.zeros((n_users, W_new, p + 1), dtype=np.int64)
        new_prefix[user_s, rank, :p] = prefix.reshape(n_users * W, p)[slot[parent[order]]]
        new_prefix[user_s, rank, p] = tok[order]
        group = np.zeros((n_users, W_new), dtype=np.int64)
        group[user_s, rank] = child[order]
        score = np.full((n_users, W_new), -np.inf)
        score[user_s, rank] = cand_score[order]
        alive = np.zeros((n_users, W_new), dtype=bool)
        alive[user_s, rank] = True
        prefix = new_prefix
    # Level T-1 groups are single items.
    return _results(trie.item_of_row[trie.start[T - 1][group]], score, alive)


def _best_per_user(key: np.ndarray, user: np.ndarray, keep: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (C,) with ``key`` and ``user`` -> (positions, rank within the user, user) of
    each user's ``keep`` best by key, grouped by user."""
    order = np.lexsort((-key, user))
    user_s = user[order]
    rank = np.arange(len(order)) - np.searchsorted(user_s, user_s, side="left")
    return order[rank < keep], rank[rank < keep], user_s[rank < keep]


def _results(item: np.ndarray, score: np.ndarray, alive: np.ndarray
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per user (items, scores) of the live beams (U, W), by score descending (sampling may
    have kept them in key order)."""
    out = []
    for u in range(len(item)):
        live = np.flatnonzero(alive[u])
        live = live[np.argsort(-score[u, live], kind="stable")]
        out.append((item[u, live].astype(np.int64), score[u, live].astype(np.float32)))
    return out
