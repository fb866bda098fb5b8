"""SASRec sequence format: one ``user item item ...`` line per user (whitespace-separated, in
time order). A user on several lines appends in file order. No timestamps, no ratings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data.dataset import (
    DataFormatError,
    Dataset,
    decode_text,
    fingerprint_files,
    from_interactions,
    read_bytes,
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def load_sasrec(path: str | Path, name: str | None = None) -> Dataset:
    """Load a SASRec ``.txt`` file; ``name`` defaults to the file stem."""
    path = Path(path)
    text = decode_text(path, read_bytes(path))
    users: list[int] = []
    counts: list[int] = []
    items: list[int] = []
    for n, line in enumerate(text.split("\n"), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataFormatError(str(path), n, "expected a user id and at least one item id")
        try:
            ids = [int(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_int(t))
            raise DataFormatError(str(path), n, f"id {bad!r} is not an integer") from None
        if any(not _INT64_MIN <= i <= _INT64_MAX for i in ids):
            raise DataFormatError(str(path), n, "an id does not fit in int64")
        users.append(ids[0])
        counts.append(len(ids) - 1)
        items.extend(ids[1:])
    if not items:
        raise DataFormatError(str(path), None, "no interactions")
    user_col = np.repeat(np.array(users, dtype=np.int64), counts)
    item_col = np.array(items, dtype=np.int64)
    ds = from_interactions(name or path.stem, user_col, item_col)
    ds.fingerprint = fingerprint_files([path])
    return ds


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
