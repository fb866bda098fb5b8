"""The one dataset shape every loader returns, and the leave-one-out split.

Dense ids: users are 0..n_users-1 and items 0..n_items-1, in order of first appearance in the
source file (stable across runs). Models that need a padding row use index ``n_items`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
