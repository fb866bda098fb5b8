"""TDM: layer-wise beam search down the tree with the node scorer (``index/tdm_tree.py``);
blocked items are pruned inside the search, so k come back whenever k are unblocked."""

from __future__ import annotations

import numpy as np
import torch

from index.tdm_tree import TDMTree, beam_search
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import empty
from models.nets.tdm import node_score_fn


class TDMRecall:
    name = "tdm"

    def __init__(self, model: torch.nn.Module, tree: TDMTree, beam: int) -> None:
        self.model = model
        self.tree = tree
        self.beam = beam

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return empty()
        items, scores = beam_search(self.tree, node_score_fn(self.model, ctx.history), k,
                                    self.beam, blocked=ctx.blocked)
        return items.astype(np.int64), scores.astype(np.float32)


def make(rt: Runtime, settings: EngineSettings, name: str) -> TDMRecall:
    return TDMRecall(rt.nets["tdm"], TDMTree(**rt.arrays["tdm_tree"]), beam=settings.tdm_beam)
