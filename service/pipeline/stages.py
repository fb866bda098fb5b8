"""The cascade's stages as small injected objects: recall sources, a ranker, a reranker.
Each is a thin adapter from the models' numpy/torch APIs to one calling convention, so new
sources or rankers plug in without touching the cascade."""

from __future__ import annotations

import inspect
from typing import Protocol

import numpy as np
import torch

from index.base import VectorIndex, search_excluding
from index.tdm_tree import TDMTree, beam_search
from models.features import pad_histories
from models.itemcf import ItemCF
from models.popularity import Popularity
from models.rerank import dpp, mmr
from models.tdm import node_score_fn
from service.pipeline.context import UserContext


class RecallSource(Protocol):
    name: str

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (ids (<=k,) int64, scores (<=k,) float32), best first, nothing in ctx.blocked."""
        ...


def _pairs(pairs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    scores = np.fromiter((p[1] for p in pairs), dtype=np.float32, count=len(pairs))
    return ids, scores


class PopularRecall:
    name = "popular"

    def __init__(self, popularity: Popularity) -> None:
        self.popularity = popularity

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _pairs(self.popularity.top(k, exclude=ctx.blocked))


class ItemCFRecall:
    name = "itemcf"

    def __init__(self, itemcf: ItemCF) -> None:
        self.itemcf = itemcf

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return _pairs(self.itemcf.recall(ctx.history, k, exclude=ctx.blocked))


def _model_inputs(ctx: UserContext, max_history: int, pad: int) -> tuple[torch.Tensor, ...]:
    codes = torch.from_numpy(ctx.user_codes).long()  # (F,)
    hist = pad_histories([ctx.history], max_history, pad)[0]  # (L,)
    return codes, hist


class ANNRecall:
    """Two-tower user vector -> MIPS over the item vectors in the FAISS index."""

    name = "ann"

    def __init__(self, two_tower: torch.nn.Module, index: VectorIndex) -> None:
        self.model = two_tower
        self.index = index

    def user_vector(self, ctx: UserContext) -> np.ndarray:
        cfg = self.model.cfg
        codes, hist = _model_inputs(ctx, cfg.max_history, cfg.n_items)
        with torch.inference_mode():
            vec = self.model.user_embed(codes[None], hist[None])  # (1, D)
        return vec[0].numpy().astype(np.float32)

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = search_excluding(self.index, self.user_vector(ctx), k, ctx.blocked)
        return ids.astype(np.int64), scores.astype(np.float32)


class Ranker:
    """Scores candidates for one user with a DeepFM or DIN model (logits, higher is better)."""

    def __init__(self, name: str, model: torch.nn.Module) -> None:
        self.name = name
        self.model = model

    def score(self, ctx: UserContext, items: np.ndarray) -> np.ndarray:
        if len(items) == 0:
            return np.empty(0, np.float32)
        cfg = self.model.cfg
        codes, hist = _model_inputs(ctx, cfg.max_history, cfg.n_items)
        with torch.inference_mode():
            out = self.model.score_candidates(codes, hist, torch.from_numpy(items).long())
        return out.numpy().astype(np.float32)


class Reranker:
    """MMR or DPP over item-embedding similarity; returns positions into the given arrays."""

    def __init__(self, method: str, item_emb: np.ndarray) -> None:
        if method not in ("mmr", "dpp"):
            raise ValueError(f"unknown rerank method {method!r}")
        self.name = method
        self.item_emb = item_emb  # (n_items, D)

    def select(self, items: np.ndarray, scores: np.ndarray, k: int, diversity: float) -> list[int]:
        fn = dpp if self.name == "dpp" else mmr
        return list(fn(scores.astype(np.float64), self.item_emb[items], k, diversity))


class SequentialRecall:
    """A next-item model's user vector (GRU4Rec, SASRec, HSTU) -> MIPS over its item vectors.

    ``model.user_vector(history (1, L)[, timestamps (1, L)]) -> (1, d)``; the history is the
    context's last ``max_len`` items. Timestamps go to models that take them (HSTU's time
    buckets) whenever the context has them."""

    def __init__(self, name: str, model: torch.nn.Module, index: VectorIndex) -> None:
        self.name = name
        self.model = model
        self.index = index
        cfg = model.cfg
        self.max_len = int(getattr(cfg, "max_len", getattr(cfg, "max_history", 50)))
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
            return np.empty(0, np.int64), np.empty(0, np.float32)
        ids, scores = search_excluding(self.index, self.user_vector(ctx), k, ctx.blocked)
        return ids.astype(np.int64), scores.astype(np.float32)


class TDMRecall:
    """TDM: layer-wise beam search down the tree with the node scorer (``index/tdm_tree.py``);
    blocked items are pruned inside the search, so k come back whenever k are unblocked."""

    name = "tdm"

    def __init__(self, model: torch.nn.Module, tree: TDMTree, beam: int) -> None:
        self.model = model
        self.tree = tree
        self.beam = beam

    def recall(self, ctx: UserContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        if ctx.cold:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        items, scores = beam_search(self.tree, node_score_fn(self.model, ctx.history), k,
                                    self.beam, blocked=ctx.blocked)
        return items.astype(np.int64), scores.astype(np.float32)
