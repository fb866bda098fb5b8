"""Semantic-ID generation as a recall source: TIGER beam search over the semantic-ID trie,
consumed and excluded items pruned inside decoding; scores are the IDs' log-probabilities."""

from __future__ import annotations

import numpy as np
import torch

from index.semantic_ids import SemanticIds
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import empty
from models.nets.tiger import TIGER, user_bucket
from models.nets.tiger_decode import generate


class SemanticIdRecall:
    name = "semantic_id"

    def __init__(self, model: TIGER, sids: SemanticIds, beam_size: int = 50,
                 temperature: float = 0.0) -> None:
        self.model = model
        self.sids = sids
        self.beam_size = beam_size
        self.temperature = temperature
        self.max_history = int(model.cfg.max_history)

    def recall(self, ctx: UserContext, k: int, beam_size: int | None = None,
               temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return empty()
        # Users the model never saw share the trained anonymous bucket rather than landing in
        # some trained user's hashed bucket.
        known = ctx.user_id if ctx.user_index is not None else None
        bucket = user_bucket(known, self.model.cfg.n_user_buckets)
        beam = max(beam_size or self.beam_size, k)
        temp = self.temperature if temperature is None else temperature
        with torch.inference_mode():
            (ids, scores), = generate(self.model, self.sids, [ctx.history[-self.max_history:]],
                                      [bucket], k, beam, [ctx.blocked], temperature=temp)
        return ids.astype(np.int64), scores.astype(np.float32)


def make(rt: Runtime, settings: EngineSettings, name: str) -> SemanticIdRecall:
    return SemanticIdRecall(rt.nets["tiger"], SemanticIds.from_state(rt.arrays["semantic_ids"]),
                            settings.semantic_id_beam_size, settings.semantic_id_temperature)
