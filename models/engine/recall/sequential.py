"""Sequential retrievers (GRU4Rec, SASRec, HSTU retrieval, and any next-item model with
``user_vector`` / ``item_vectors``): the user vector from the stored history -> exact MIPS over
the model's item vectors, consumed and excluded items filtered inside faiss.

A component registered with this source's ``make`` needs two files: ``{name}.json`` (+
safetensors) for the model and ``{name}_items.faiss`` for the index (``models/build/retrieval``
writes both), so a new retriever needs no code here."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from index.base import VectorIndex, search_excluding
from models.engine.core.context import UserContext
from models.engine.core.runtime import DEFAULT_HISTORY, Runtime, history_length
from models.engine.core.settings import EngineSettings
from models.engine.recall import empty
from models.nets.features import pad_histories
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

    def user_vector(self, ctx: UserContext) -> np.ndarray:
        hist = pad_histories([ctx.history], self.max_len, self.model.cfg.n_items)  # (1, L)
        kwargs = {}
        if self.timed and ctx.timestamps is not None and len(ctx.timestamps) == len(ctx.history):
            ts = np.zeros((1, self.max_len), dtype=np.float64)
            tail = ctx.timestamps[-self.max_len:]
            if len(tail):
                ts[0, self.max_len - len(tail):] = tail
            kwargs["timestamps"] = torch.from_numpy(ts)  # (1, L) seconds, 0 at padding
        with torch.inference_mode():
            vec = self.model.user_vector(hist, **kwargs)  # (1, d)
        return vec[0].float().numpy()

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return empty()
        ids, scores = search_excluding(self.index, self.user_vector(ctx), k, ctx.blocked)
        return ids.astype(np.int64), scores.astype(np.float32)


def make(rt: Runtime, settings: EngineSettings, name: str) -> SequentialRecall:
    """The retriever of the component the method ``name`` serves from."""
    (stem,) = next(m.needs for m in RECALL if m.name == name)
    return SequentialRecall(name, rt.nets[stem], rt.indexes[f"{stem}_items"])
