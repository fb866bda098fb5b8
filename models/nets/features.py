"""Feature tensors shared by every model: padded histories, item side tables, user codes.

Conventions (the service relies on them):
- item index ``n_items`` is the padding row of every item table (tables have n_items+1 rows);
- histories are right-aligned (most recent last) and left-padded with ``n_items``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.data.dataset import Dataset


def pad_histories(histories: list[np.ndarray], max_len: int, pad: int) -> torch.Tensor:
    """Right-align each history into a (B, max_len) LongTensor, left-padded with ``pad``.

    Histories longer than ``max_len`` keep their most recent ``max_len`` items (the tail).
    """
    out = np.full((len(histories), max_len), pad, dtype=np.int64)
    if max_len > 0:
        for row, h in enumerate(histories):
            tail = np.asarray(h, dtype=np.int64)[-max_len:]
            if len(tail):
                out[row, max_len - len(tail) :] = tail
    return torch.from_numpy(out)


def pad_times(times: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Timestamps aligned with ``pad_histories``' rows: (B, max_len) float64 seconds, the
    tail of each right-aligned, 0 at padding."""
    out = np.zeros((len(times), max_len), dtype=np.float64)
    for row, t in enumerate(times):
        tail = np.asarray(t, dtype=np.float64)[len(t) - max_len:] if len(t) > max_len \
            else np.asarray(t, dtype=np.float64)
        if max_len and len(tail):
            out[row, max_len - len(tail):] = tail
    return torch.from_numpy(out)


@dataclass
class ItemFeatureTables:
    """Item side features as dense tensors with a trailing padding row (index n_items)."""

    genres: torch.Tensor  # (n_items+1, G) float32 multi-hot; pad row all zeros
    year_bucket: torch.Tensor  # (n_items+1,) int64; 0 = unknown year or padding
    genre_names: list[str]
    n_year_buckets: int  # including bucket 0

    @classmethod
    def from_dataset(cls, ds: Dataset, year_bucket_width: int = 5) -> ItemFeatureTables:
        n = ds.n_items
        side = ds.item_side
        # Genre vocabulary in sorted order: stable whatever order the loader lists items in.
        names: list[str] = sorted({g for gs in side.genres for g in gs}) if side.genres else []
        col = {g: j for j, g in enumerate(names)}
        genres = torch.zeros(n + 1, len(names), dtype=torch.float32)
        if side.genres:
            for i, gs in enumerate(side.genres):
                for g in gs:
                    genres[i, col[g]] = 1.0

        year_bucket = torch.zeros(n + 1, dtype=torch.int64)
        n_buckets = 1  # bucket 0 always exists (unknown / pad)
        if side.years is not None:
            years = np.asarray(side.years, dtype=np.int64)
            known = years > 0
            if known.any():
                # Buckets aligned on multiples of the width (1990-1994, 1995-1999, ...), 1-based.
                base = (int(years[known].min()) // year_bucket_width) * year_bucket_width
                buckets = np.where(known, (years - base) // year_bucket_width + 1, 0)
                year_bucket[:n] = torch.from_numpy(buckets)
                n_buckets = int(buckets.max()) + 1
        return cls(genres=genres, year_bucket=year_bucket, genre_names=names,
                   n_year_buckets=n_buckets)

    @property
    def n_genres(self) -> int:
        return len(self.genre_names)


def user_codes_from_dataset(ds: Dataset) -> tuple[torch.Tensor, list[int]]:
    """(codes (n_users, F) int64, cardinality per feature). Code 0 means unknown.

    Datasets without a user side give an empty (n_users, 0) tensor and no cardinalities, so the
    models can treat "no user features" as F = 0 without special cases.
    """
    if ds.user_side is None or not ds.user_side.names:
        return torch.zeros(ds.n_users, 0, dtype=torch.int64), []
    codes = torch.as_tensor(np.asarray(ds.user_side.codes, dtype=np.int64)).reshape(ds.n_users, -1)
    return codes.contiguous(), ds.user_side.cardinalities()


class ItemSideEmbedding(torch.nn.Module):
    """Embeds item ids into three field vectors: [id, genres, year], each of size ``dim``.

    The item side tables are registered as persistent buffers so they travel with the model's
    state_dict (safetensors file): at serving the models take item ids only. When the tables are
    not given (rebuilding from a checkpoint) zeros of the right shape are allocated from the
    sizes and filled later by ``load_state_dict``.
    """

    def __init__(self, n_items: int, n_genres: int, n_year_buckets: int, dim: int,
                 item_genres: torch.Tensor | None = None,
                 item_year_bucket: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n_items = n_items
        if item_genres is None:
            item_genres = torch.zeros(n_items + 1, n_genres)
        if item_year_bucket is None:
            item_year_bucket = torch.zeros(n_items + 1, dtype=torch.int64)
        if tuple(item_genres.shape) != (n_items + 1, n_genres):
            raise ValueError(f"item_genres must be {(n_items + 1, n_genres)}, "
                             f"got {tuple(item_genres.shape)}")
        if tuple(item_year_bucket.shape) != (n_items + 1,):
            raise ValueError(f"item_year_bucket must be ({n_items + 1},), "
                             f"got {tuple(item_year_bucket.shape)}")
        genres = item_genres.float().clone()
        # Rows normalised to sum 1: multi-hot @ genre_table is then the MEAN of genre embeddings.
        self.register_buffer("genres", genres / genres.sum(-1, keepdim=True).clamp_min(1.0))
        self.register_buffer("year_bucket", item_year_bucket.long().clone())
        self.id_emb = torch.nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        # A plain (G, dim) parameter rather than nn.Linear: it also works for G = 0.
        self.genre_emb = torch.nn.Parameter(torch.randn(n_genres, dim) * 0.05)
        # Bucket 0 = unknown year / padding -> zero vector.
        self.year_emb = torch.nn.Embedding(max(n_year_buckets, 1), dim, padding_idx=0)
        torch.nn.init.normal_(self.id_emb.weight, std=0.05)
        torch.nn.init.normal_(self.year_emb.weight, std=0.05)
        with torch.no_grad():
            self.id_emb.weight[n_items].zero_()
            self.year_emb.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) int64 -> (..., 3, dim): the id, genre-mean and year field vectors."""
        id_vec = self.id_emb(ids)  # (..., dim)
        genre_vec = self.genres[ids] @ self.genre_emb  # (..., G) @ (G, dim) -> (..., dim)
        year_vec = self.year_emb(self.year_bucket[ids])  # (..., dim)
        return torch.stack([id_vec, genre_vec, year_vec], dim=-2)


def history_mask(history: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, L) item ids -> (B, L) bool, True where the position holds a real item."""
    return history != n_items


def recency_positions(length: int, max_history: int, device: torch.device) -> torch.Tensor:
    """(L,) distance from the most recent slot (0 = last), capped at max_history-1.

    Indexing positions from the right keeps right-aligned histories invariant to extra left
    padding: a real item gets the same position whatever the tensor's length.
    """
    r = torch.arange(length - 1, -1, -1, device=device)
    return r.clamp_max(max_history - 1)
