"""TDM: layer-wise beam search down the tree with the node scorer (``index/tdm_tree.py``);
blocked items are pruned inside the search, so k come back whenever k are unblocked.

``recall`` serves one request; ``recall_batch`` (offline evaluation) runs the same search for
many users, scoring each level's nodes of all of them in batched forward passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.tdm_tree import TDMTree, beam_search, beam_search_batch
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import Answer, empty
from models.nets.features import pad_histories
from models.nets.tdm import node_score_fn

# Users per scorer pass are bounded by the elements of its (users, nodes, history, h1)
# attention input: past a few MB it leaves the CPU's cache, and one pass of 8 users (200
# nodes, 20 items of history) cost 1.9x four passes of 2 on ml-100k (docs/benchmarks.md).
PASS_ELEMENTS = 1 << 19


class TDMRecall:
    name = "tdm"

    def __init__(self, model: torch.nn.Module, tree: TDMTree, beam: int) -> None:
        self.model = model
        self.tree = tree
        self.beam = beam

    @property
    def prefix_depth(self) -> int:
        """Answers for every k <= this are the first k of its answer: the search keeps
        ``max(beam, k)`` nodes per level, so for k <= beam it scores the same nodes and only
        the final cut of the same (stably sorted) leaf pool differs."""
        return self.beam

    def recall(self, ctx: UserContext, k: int) -> Answer:
        if ctx.cold:
            return empty()
        items, scores = beam_search(self.tree, node_score_fn(self.model, ctx.history), k,
                                    self.beam, blocked=ctx.blocked)
        return items.astype(np.int64), scores.astype(np.float32)

    def recall_batch(self, contexts: Sequence[UserContext], k: int,
                     users_per_pass: int | None = None) -> list[Answer]:
        """``recall`` for each context, the levels' node scores computed for
        ``users_per_pass`` users per forward pass (default: as many as keep the scorer's
        (users, nodes, history, h1) attention input within ``PASS_ELEMENTS``). The same
        search; scores may differ from one-user passes in the last float bits (another
        summation order), so near-tied nodes may swap."""
        out: list[Answer] = [empty() for _ in contexts]
        warm = [i for i, ctx in enumerate(contexts) if not ctx.cold]
        if not warm:
            return out
        model = self.model.eval()
        cfg = model.cfg
        hists = [contexts[i].history[-cfg.max_history:] for i in warm]
        # Passes of users with similar history lengths, each padded to its longest: the
        # scorer's cost grows with the padded length, and Amazon histories are mostly short.
        by_length = np.argsort([len(h) for h in hists], kind="stable")
        rank = np.empty(len(hists), np.int64)
        rank[by_length] = np.arange(len(hists))

        @torch.inference_mode()
        def score(rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
            """rows (M,) index into ``warm`` (grouped, ascending), nodes (M,) -> (M,) logits."""
            users, first, counts = np.unique(rows, return_index=True, return_counts=True)
            out_s = np.empty(len(rows), np.float32)
            order = np.argsort(rank[users], kind="stable")
            per_user = int(counts.max()) * cfg.max_history * cfg.attention_hidden[0]
            step = users_per_pass or max(1, PASS_ELEMENTS // per_user)
            for lo in range(0, len(order), step):
                part = order[lo:lo + step]  # positions into ``users``
                width = int(counts[part].max())
                # (u, width) node ids, each user's nodes in their given order, padded with
                # node 0 (scored, then dropped); (u, L) histories right-aligned, left-padded
                # (the scorer masks padding and counts recency from the right).
                grid = np.zeros((len(part), width), np.int64)
                for j, p in enumerate(part):
                    grid[j, :counts[p]] = nodes[first[p]:first[p] + counts[p]]
                sel = [hists[u] for u in users[part]]
                hist = pad_histories(sel, max(len(h) for h in sel), cfg.n_items)
                logits = model(hist, torch.from_numpy(grid)).float().numpy()  # (u, width)
                for j, p in enumerate(part):
                    out_s[first[p]:first[p] + counts[p]] = logits[j, :counts[p]]
            return out_s

        found = beam_search_batch(self.tree, score, k, self.beam,
                                  [contexts[i].blocked for i in warm])
        for i, (items, scores) in zip(warm, found, strict=True):
            out[i] = items.astype(np.int64), scores.astype(np.float32)
        return out


def make(rt: Runtime, settings: EngineSettings, name: str) -> TDMRecall:
    return TDMRecall(rt.nets["tdm"], TDMTree(**rt.arrays["tdm_tree"]), beam=settings.tdm_beam)
