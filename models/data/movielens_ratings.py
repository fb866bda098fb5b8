"""MovieLens rating files: ``u.data`` (tab), ``ratings.dat`` (``::``) and ``ratings.csv``
(with or without a header), parsed by numpy's C parser; on a parse error the file is rescanned
in Python to name the first bad line."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np

from models.data.dataset import (
    DataFormatError,
    Dataset,
    decode_text,
    from_interactions,
    read_bytes,
)

_INT = re.compile(r"\s*[+-]?\d+\s*\Z")  # what numpy's int parser accepts, for the rescan
_COLS = ("user id", "item id", "rating", "timestamp")
_DTYPE = [("u", "i8"), ("i", "i8"), ("r", "f8"), ("t", "i8")]
# ``::`` files are parsed with ':' as the delimiter; the empty fields between the two colons
# land in 1-byte string columns that must stay empty. Keeps numpy's C parser (fast, strict).
_DAT_DTYPE = [
    ("u", "i8"),
    ("c1", "S1"),
    ("i", "i8"),
    ("c2", "S1"),
    ("r", "f8"),
    ("c3", "S1"),
    ("t", "i8"),
]


def _has_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8", "replace")
    except OSError:
        read_bytes(path)  # raises the DataFormatError for a missing/unreadable file
        raise
    return bool(first.strip()) and not _INT.match(first.split(",")[0])


def read_ratings(path: Path, sep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Columns (user, item, rating, timestamp) of a ratings file whose lines are
    ``user<sep>item<sep>rating<sep>timestamp`` (``sep`` one of "\\t", "::", ","; a CSV header
    line is skipped). Fast path is numpy's C parser; if it rejects anything, a line-by-line
    rescan finds the bad line for the error."""
    path = Path(path)
    skip = int(_has_header(path)) if sep == "," else 0
    dat = sep == "::"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            a = np.loadtxt(
                path,
                delimiter=sep[0],
                dtype=_DAT_DTYPE if dat else _DTYPE,
                comments=None,
                skiprows=skip,
                encoding="utf-8",
                ndmin=1,
            )
    except (ValueError, UnicodeDecodeError, OSError):
        _rescan(path, sep, skip)
    if not np.isfinite(a["r"]).all() or (
        dat and any((a[c] != b"").any() for c in ("c1", "c2", "c3"))
    ):
        _rescan(path, sep, skip)
    if len(a) == 0:
        raise DataFormatError(str(path), None, "no interactions")
    return a["u"], a["i"], a["r"], a["t"]


def _rescan(path: Path, sep: str, skip: int) -> NoReturn:
    text = decode_text(path, read_bytes(path))
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if n <= skip or not line:
            continue
        f = line.split(sep)
        if len(f) != 4:
            raise DataFormatError(
                str(path),
                n,
                f"expected 4 {sep!r}-separated fields "
                f"(user, item, rating, timestamp), got {len(f)}",
            )
        for k in (0, 1, 3):
            if not _INT.match(f[k]):
                raise DataFormatError(str(path), n, f"{_COLS[k]} {f[k]!r} is not an integer")
        try:
            ok = math.isfinite(float(f[2]))
        except ValueError:
            ok = False
        if not ok:
            raise DataFormatError(str(path), n, f"rating {f[2]!r} is not a finite number")
    raise DataFormatError(str(path), None, "numpy could not parse the file, but no bad line found")


def ratings_dataset(name: str, path: Path, sep: str) -> Dataset:
    u, i, r, t = read_ratings(path, sep)
    return from_interactions(name, u, i, timestamps=t, ratings=r)
