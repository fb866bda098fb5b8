"""Semantic-ID generation as a recall source: TIGER beam search over the semantic-ID trie,
consumed and excluded items pruned inside decoding; scores are the IDs' log-probabilities.

``recall`` serves one request; ``recall_batch`` (offline evaluation) decodes many users per
``generate`` call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.semantic_ids import SemanticIds
from models.engine.core.context import UserContext
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall import Answer, empty
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

    @property
    def deterministic(self) -> bool:
        """Whether a request's answer is a function of it (no first-token sampling)."""
        return self.temperature == 0.0

    @property
    def prefix_depth(self) -> int:
        """Answers for every k <= this are the first k of its answer: the beam is
        ``max(beam_size, k)`` wide at every level, so for k <= beam_size the search is the
        same and only the last level's cut (the best k by score) differs."""
        return self.beam_size if self.deterministic else 0

    def _bucket(self, ctx: UserContext) -> int:
        # Users the model never saw share the trained anonymous bucket rather than landing in
        # some trained user's hashed bucket.
        known = ctx.user_id if ctx.user_index is not None else None
        return user_bucket(known, self.model.cfg.n_user_buckets)

    def recall(self, ctx: UserContext, k: int, beam_size: int | None = None,
               temperature: float | None = None) -> Answer:
        if ctx.cold:
            return empty()
        beam = max(beam_size or self.beam_size, k)
        temp = self.temperature if temperature is None else temperature
        with torch.inference_mode():
            (ids, scores), = generate(self.model, self.sids, [ctx.history[-self.max_history:]],
                                      [self._bucket(ctx)], k, beam, [ctx.blocked],
                                      temperature=temp)
        return ids.astype(np.int64), scores.astype(np.float32)

    def recall_batch(self, contexts: Sequence[UserContext], k: int,
                     beam_size: int | None = None, temperature: float | None = None,
                     users_per_pass: int = 128) -> list[Answer]:
        """``recall`` for each context, ``users_per_pass`` users per ``generate`` call, users
        of similar history lengths together (each call pads to its longest). The same
        search; log-probs may differ from one-user calls in the last float bits (another
        summation order), so near-tied beams may swap."""
        out: list[Answer] = [empty() for _ in contexts]
        warm = [i for i, ctx in enumerate(contexts) if not ctx.cold]
        beam = max(beam_size or self.beam_size, k)
        temp = self.temperature if temperature is None else temperature
        hists = {i: contexts[i].history[-self.max_history:] for i in warm}
        warm.sort(key=lambda i: len(hists[i]))
        for lo in range(0, len(warm), users_per_pass):
            part = warm[lo:lo + users_per_pass]
            with torch.inference_mode():
                found = generate(self.model, self.sids, [hists[i] for i in part],
                                 [self._bucket(contexts[i]) for i in part], k, beam,
                                 [contexts[i].blocked for i in part], temperature=temp)
            for i, (ids, scores) in zip(part, found, strict=True):
                out[i] = ids.astype(np.int64), scores.astype(np.float32)
        return out


def make(rt: Runtime, settings: EngineSettings, name: str) -> SemanticIdRecall:
    return SemanticIdRecall(rt.nets["tiger"], SemanticIds.from_state(rt.arrays["semantic_ids"]),
                            settings.semantic_id_beam_size, settings.semantic_id_temperature)
