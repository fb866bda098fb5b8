"""The one dataset shape every loader returns, and the leave-one-out split.

Dense ids: users are 0..n_users-1 and items 0..n_items-1, in order of first appearance in the
source file (stable across runs). Models that need a padding row use index ``n_items`` for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataFormatError(ValueError):
    """A data file is missing or malformed; the message names the path and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass
class IdMap:
    """External string id <-> dense int."""

    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_ids(cls, ids: list[str]) -> IdMap:
        return cls(list(ids), {s: i for i, s in enumerate(ids)})

    def add(self, ext: str) -> int:
        """Dense id of ``ext``, assigning the next one on first sight."""
        dense = self.index.get(ext)
        if dense is None:
            dense = len(self.ids)
            self.index[ext] = dense
            self.ids.append(ext)
        return dense

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, ext: object) -> bool:
        return ext in self.index


@dataclass
class CategoricalFeatures:
    """Per-entity categorical columns. ``codes[i, f]`` is an index into ``vocab[names[f]]``;
    code 0 is always "<unk>" so unseen or missing values share one row."""

    names: list[str]
    codes: np.ndarray  # (N, F) int64
    vocab: dict[str, list[str]]

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[n]) for n in self.names]


@dataclass
class ItemSide:
    """Item side features where the source has them (None otherwise)."""

    titles: list[str] | None = None
    genres: list[tuple[str, ...]] | None = None  # per item, possibly empty
    years: np.ndarray | None = None  # (N,) int64, 0 = unknown


@dataclass
class Dataset:
    name: str
    users: IdMap
    items: IdMap
    # Per dense user id: dense item ids in time order (ties broken by file order), int64.
    sequences: list[np.ndarray]
    # Per user, unix seconds aligned with ``sequences``; None when the format has no time.
    timestamps: list[np.ndarray] | None = None
    # Per user, explicit ratings aligned with ``sequences``; None when the format has none.
    ratings: list[np.ndarray] | None = None
    item_side: ItemSide = field(default_factory=ItemSide)
    user_side: CategoricalFeatures | None = None
    fingerprint: str = ""  # sha256 over the source files' bytes

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


@dataclass
class Split:
    """Leave-one-out: the last interaction is the test target, the second-to-last the validation
    target, the rest is training. Users with fewer than 3 interactions keep everything in
    training and have no targets (-1), as in SASRec's split."""

    train: list[np.ndarray]
    valid_target: np.ndarray  # (n_users,) int64, -1 when absent
    test_target: np.ndarray  # (n_users,) int64, -1 when absent
    sequences: list[np.ndarray]  # the full sequences, for histories

    def history(self, user: int, stage: str) -> np.ndarray:
        """Items seen before the target of ``stage`` ("valid" or "test")."""
        seq = self.sequences[user]
        if stage == "valid":
            return seq[:-2]
        if stage == "test":
            return seq[:-1]
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")

    def eval_users(self, stage: str) -> np.ndarray:
        target = self.valid_target if stage == "valid" else self.test_target
        return np.flatnonzero(target >= 0)


def leave_one_out(ds: Dataset) -> Split:
    n = ds.n_users
    valid = np.full(n, -1, dtype=np.int64)
    test = np.full(n, -1, dtype=np.int64)
    train: list[np.ndarray] = []
    for u, seq in enumerate(ds.sequences):
        if len(seq) < 3:
            train.append(seq)
            continue
        train.append(seq[:-2])
        valid[u] = seq[-2]
        test[u] = seq[-1]
    return Split(train=train, valid_target=valid, test_target=test, sequences=ds.sequences)


# --- Helpers shared by the loaders (movielens.py, sasrec.py) ---------------------------------


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing or unreadable file is a DataFormatError, not an OSError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(str(path), None, "file not found") from None
    except OSError as e:
        raise DataFormatError(str(path), None, f"cannot read: {e.strerror or e}") from None


def decode_text(path: Path, data: bytes, encodings: tuple[str, ...] = ("utf-8",)) -> str:
    """Decode with the first encoding that works; the error names the line of the bad byte."""
    first: UnicodeDecodeError | None = None
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError as e:
            first = first or e
    assert first is not None
    line = data.count(b"\n", 0, first.start) + 1
    raise DataFormatError(str(path), line, f"undecodable text ({first.encoding}: {first.reason})")


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the files' bytes in the given order; each is length-prefixed so that moving
    bytes from one file to the next changes the digest."""
    h = hashlib.sha256()
    for p in paths:
        try:
            size = Path(p).stat().st_size
            h.update(size.to_bytes(8, "little"))
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            raise DataFormatError(str(p), None, "file not found or unreadable") from None
    return h.hexdigest()


def dense_ids(ext: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map external int ids to 0..K-1 in order of first appearance: (dense per row, ext per
    dense id)."""
    ext = np.asarray(ext, dtype=np.int64)
    lo, hi = int(ext.min()), int(ext.max())
    if hi - lo > 4 * len(ext) + (1 << 20):  # sparse id space: sort-based (slower, no big table)
        uniq, first, inv = np.unique(ext, return_index=True, return_inverse=True)
        order = np.argsort(first)  # first-appearance positions are distinct: any sort is exact
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order), dtype=np.int64)
        return rank[inv.reshape(-1)], uniq[order]
    # Dense id space (MovieLens, SASRec): a table over the id range avoids sorting all rows.
    off = ext - lo
    first = np.full(hi - lo + 1, len(ext), dtype=np.int64)
    np.minimum.at(first, off, np.arange(len(ext), dtype=np.int64))
    seen = np.flatnonzero(first < len(ext))
    seen = seen[np.argsort(first[seen])]
    rank = np.zeros(hi - lo + 1, dtype=np.int64)
    rank[seen] = np.arange(len(seen), dtype=np.int64)
    return rank[off], seen + lo


def from_interactions(
    name: str,
    user_ext: np.ndarray,
    item_ext: np.ndarray,
    timestamps: np.ndarray | None = None,
    ratings: np.ndarray | None = None,
    fingerprint: str = "",
) -> Dataset:
    """Group interaction rows (in file order) into a Dataset: dense ids by first appearance,
    per-user sequences sorted by time with ties kept in file order."""
    if len(user_ext) == 0:
        raise ValueError("no interactions")
    u, users = dense_ids(np.asarray(user_ext))
    i, items = dense_ids(np.asarray(item_ext))
    order = _user_time_order(u, None if timestamps is None else np.asarray(timestamps, np.int64))
    ends = np.cumsum(np.bincount(u, minlength=len(users))).tolist()
    starts = [0, *ends[:-1]]

    def split(col: np.ndarray, dtype: type) -> list[np.ndarray]:
        # Slices of one array (np.split is ~5x slower for 100k+ users).
        flat = np.ascontiguousarray(np.asarray(col)[order], dtype=dtype)
        return [flat[a:b] for a, b in zip(starts, ends, strict=True)]

    return Dataset(
        name=name,
        users=IdMap.from_ids([str(x) for x in users.tolist()]),
        items=IdMap.from_ids([str(x) for x in items.tolist()]),
        sequences=split(i, np.int64),
        timestamps=None if timestamps is None else split(timestamps, np.int64),
        ratings=None if ratings is None else split(ratings, np.float64),
        fingerprint=fingerprint,
    )


def _user_time_order(u: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    """Row order by (user, time, file row). Stable sorts keep file order on ties."""
    if t is None:
        return np.argsort(u, kind="stable")
    t_lo = int(t.min())
    span = int(t.max()) - t_lo + 1
    if int(u.max()) < (1 << 62) // span:
        # One composite key; timsort is near-linear on files already grouped by user.
        return np.argsort(u * span + (t - t_lo), kind="stable")
    order = np.argsort(t, kind="stable")
    return order[np.argsort(u[order], kind="stable")]
