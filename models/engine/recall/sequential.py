"""Sequential retrievers (GRU4Rec, SASRec, HSTU retrieval, and any next-item model with
``user_vector`` / ``item_vectors``): the user vector from the stored history -> exact MIPS over
the model's item vectors, consumed and excluded items filtered inside faiss.

A component registered with this source's ``make`` needs two files: ``{name}.json`` (+
safetensors) for the model and ``{name}_items.faiss`` for the index (``models/build/retrieval``
writes both), so a new retriever needs no code here."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from index.base import VectorIndex, search_excluding
from models.engine.core.context import UserContext
from models.engine.core.runtime import DEFAULT_HISTORY, Runtime, history_length
from models.engine.core.settings import EngineSettings
from models.engine.recall import Answer, empty
from models.nets.features import pad_histories, pad_times
from models.registry import RECALL


class SequentialRecall:
    """``model.user_vector(history (1, L)[, timestamps (1, L)]) -> (1, d)``; the history is the
    context's last ``max_len`` items. Timestamps go to models that take them (HSTU's time
    buckets) whenever the context has them."""

    def __init__(self, name: str, model: torch.nn.Module, index: VectorIndex) -> None:
        self.name = name
        self.model = model
        self.index = index
        self.max_len = int(history_length(model) or DEFAULT_HISTORY)
        self.timed = "timestamps" in inspect.signature(model.user_vector).parameters

    def user_vectors(self, contexts: Sequence[UserContext]) -> np.ndarray:
        """(U, d) float32 user vectors in one forward pass, from each context's last
        ``max_len`` items. Timestamps go in when every context has one per item; a batch that
        mixes timed and untimed contexts cannot give only some rows times, so it is split."""
        timed = [self.timed and c.timestamps is not None and len(c.timestamps) == len(c.history)
                 for c in contexts]
        if any(timed) and not all(timed):
            return np.concatenate([self.user_vectors(contexts[i:i + 1])
                                   for i in range(len(contexts))])
        hist = pad_histories([c.history for c in contexts], self.max_len,
                             self.model.cfg.n_items)  # (U, L)
        kwargs = {}
        if timed and timed[0]:
            # (U, L) seconds, 0 at padding
            kwargs["timestamps"] = pad_times([c.timestamps for c in contexts], self.max_len)
        with torch.inference_mode():
            vecs = self.model.user_vector(hist, **kwargs)  # (U, d)
        return vecs.float().numpy()

    def user_vector(self, ctx: UserContext) -> np.ndarray:
        return self.user_vectors([ctx])[0]

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.recall_batch([ctx], k)[0]

    def recall_batch(self, contexts: Sequence[UserContext], k: int,
                     users_per_pass: int = 512) -> list[Answer]:
        """``recall`` for each context: user vectors ``users_per_pass`` at a time (they may
        differ from one-user passes in the last float bits, so near-tied items may swap),
        each searched as served."""
        out: list[Answer] = [empty() for _ in contexts]
        warm = [i for i, c in enumerate(contexts) if not c.cold]
        for lo in range(0, len(warm), users_per_pass):
            part = warm[lo:lo + users_per_pass]
            vecs = self.user_vectors([contexts[i] for i in part])
            for i, vec in zip(part, vecs, strict=True):
                ids, scores = search_excluding(self.index, vec, k, contexts[i].blocked)
                out[i] = ids.astype(np.int64), scores.astype(np.float32)
        return out


def make(rt: Runtime, settings: EngineSettings, name: str) -> SequentialRecall:
    """The retriever of the component the method ``name`` serves from."""
    (stem,) = next(m.needs for m in RECALL if m.name == name)
    return SequentialRecall(name, rt.nets[stem], rt.indexes[f"{stem}_items"])
