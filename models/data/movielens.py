"""MovieLens loaders: ml-100k (``u.*``), ml-1m / ml-10m (``*.dat``, ``::``-separated) and
ml-20m / ml-25m / ml-latest (``*.csv``). Every rating counts as an interaction."""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np

from models.data.dataset import (
    CategoricalFeatures,
    DataFormatError,
    Dataset,
    ItemSide,
    decode_text,
    fingerprint_files,
    from_interactions,
    read_bytes,
)

AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)  # ML-1M's codes: 1 = under 18, 56 = 56+
NO_GENRE = frozenset({"(no genres listed)", "unknown", ""})
USER_FEATURES = ["gender", "age", "occupation"]
_TEXT = ("utf-8", "latin-1")  # ml-1m is Latin-1, later releases UTF-8; Latin-1 never fails
_INT = re.compile(r"\s*[+-]?\d+\s*\Z")  # what numpy's int parser accepts, for the rescan
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")
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


def age_bucket(age: int) -> int:
    """ML-1M age bucket for an age in years (identity on ML-1M's own codes); 0 if unknown."""
    if age < 1:
        return 0
    return max(b for b in AGE_BUCKETS if b <= age)


def title_year(title: str) -> int:
    """Year from a trailing "(1995)" in the title; 0 when absent."""
    m = _TITLE_YEAR.search(title)
    return int(m.group(1)) if m else 0


# --- Ratings -------------------------------------------------------------------------------


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


def _ratings_dataset(name: str, path: Path, sep: str) -> Dataset:
    u, i, r, t = read_ratings(path, sep)
    return from_interactions(name, u, i, timestamps=t, ratings=r)


# --- Side files ----------------------------------------------------------------------------


def _lines(path: Path, encodings: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    text = decode_text(path, read_bytes(path), encodings)
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            yield n, line


def _fields(path: Path, n: int, line: str, sep: str, count: int, what: str) -> list[str]:
    f = line.split(sep)
    if len(f) != count:
        raise DataFormatError(
            str(path), n, f"expected {count} {sep!r}-separated fields ({what}), got {len(f)}"
        )
    return f


def _int(path: Path, n: int, s: str, what: str) -> int:
    if not _INT.match(s):
        raise DataFormatError(str(path), n, f"{what} {s!r} is not an integer")
    return int(s)


def _genres(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(g for g in (s.strip() for s in names) if g.lower() not in NO_GENRE)


ItemRow = tuple[int, str, tuple[str, ...], int]  # external id, title, genres, year
UserRow = tuple[int, str, int, str]  # external id, gender, age (years or ML-1M code), occupation


def _attach_items(ds: Dataset, rows: Iterable[ItemRow]) -> None:
    titles = [""] * ds.n_items
    genres: list[tuple[str, ...]] = [()] * ds.n_items
    years = np.zeros(ds.n_items, dtype=np.int64)
    for ext, title, g, year in rows:  # every row is parsed (and checked) before the skip
        d = ds.items.index.get(str(ext))
        if d is not None:  # items never rated are not part of the dataset
            titles[d], genres[d], years[d] = title, g, year
    ds.item_side = ItemSide(titles=titles, genres=genres, years=years)


def _attach_users(ds: Dataset, rows: Iterable[UserRow]) -> None:
    found: dict[int, tuple[str, str, str]] = {}
    for ext, gender, age, occupation in rows:
        d = ds.users.index.get(str(ext))
        if d is not None:
            b = age_bucket(age)
            found[d] = (gender.strip().upper(), str(b) if b else "", occupation.strip())
    occupations = sorted(
        {o for _, _, o in found.values() if o},
        key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s),
    )
    vocab = {  # code 0 = "<unk>": missing user line, unknown gender, age < 1, empty occupation
        "gender": ["<unk>", "F", "M"],
        "age": ["<unk>"] + [str(b) for b in AGE_BUCKETS],
        "occupation": ["<unk>", *occupations],
    }
    index = {k: {s: c for c, s in enumerate(v)} for k, v in vocab.items()}
    codes = np.zeros((ds.n_users, len(USER_FEATURES)), dtype=np.int64)
    for d, values in found.items():
        for f, (feat, value) in enumerate(zip(USER_FEATURES, values, strict=True)):
            codes[d, f] = index[feat].get(value, 0)
    ds.user_side = CategoricalFeatures(names=list(USER_FEATURES), codes=codes, vocab=vocab)


# --- ml-100k -------------------------------------------------------------------------------


def _ml100k_genres(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for n, line in _lines(path, ("latin-1",)):
        name, idx = _fields(path, n, line, "|", 2, "name|index")
        out[_int(path, n, idx, "genre index")] = name.strip()
    if not out:
        raise DataFormatError(str(path), None, "no genres")
    return out


def _ml100k_items(path: Path, genre_names: dict[int, str]) -> Iterator[ItemRow]:
    n_flags = max(genre_names) + 1
    what = f"id|title|release date|video release|url|{n_flags} genre flags"
    for n, line in _lines(path, ("latin-1",)):
        f = _fields(path, n, line, "|", 5 + n_flags, what)
        flags = [s.strip() for s in f[5:]]
        if any(s not in ("0", "1") for s in flags):
            raise DataFormatError(str(path), n, "genre flags must be 0 or 1")
        names = [genre_names.get(k, "") for k, s in enumerate(flags) if s == "1"]
        title = f[1].strip()
        m = _DATE_YEAR.search(f[2])
        year = title_year(title) or (int(m.group(1)) if m else 0)
        yield _int(path, n, f[0], "item id"), title, _genres(names), year


def _ml100k_users(path: Path) -> Iterator[UserRow]:
    for n, line in _lines(path, ("latin-1",)):
        f = _fields(path, n, line, "|", 5, "id|age|gender|occupation|zip")
        yield _int(path, n, f[0], "user id"), f[2], _int(path, n, f[1], "age"), f[3]


def _require(paths: list[Path]) -> None:
    # Check up front so a missing side file fails before a long ratings parse.
    for p in paths:
        if not p.is_file():
            raise DataFormatError(str(p), None, "file not found")


def load_ml100k(directory: str | Path, name: str | None = None) -> Dataset:
    """ml-100k: u.data (tab-separated), u.item / u.user / u.genre (``|``-separated, Latin-1)."""
    d = Path(directory)
    data, item, genre, user = paths = [d / "u.data", d / "u.item", d / "u.genre", d / "u.user"]
    _require(paths)
    ds = _ratings_dataset(name or d.name, data, "\t")
    _attach_items(ds, _ml100k_items(item, _ml100k_genres(genre)))
    _attach_users(ds, _ml100k_users(user))
    ds.fingerprint = fingerprint_files(paths)
    return ds


# --- ml-1m / ml-10m ------------------------------------------------------------------------


def _dat_items(path: Path) -> Iterator[ItemRow]:
    for n, line in _lines(path, _TEXT):
        f = _fields(path, n, line, "::", 3, "MovieID::Title::Genres")
        title = f[1].strip()
        yield _int(path, n, f[0], "movie id"), title, _genres(f[2].split("|")), title_year(title)


def _dat_users(path: Path) -> Iterator[UserRow]:
    for n, line in _lines(path, _TEXT):
        f = _fields(path, n, line, "::", 5, "UserID::Gender::Age::Occupation::Zip-code")
        yield _int(path, n, f[0], "user id"), f[1], _int(path, n, f[2], "age"), f[3]


def load_ml1m(directory: str | Path, name: str | None = None) -> Dataset:
    """ml-1m / ml-10m: ratings.dat, movies.dat and (ml-1m only) users.dat, ``::``-separated."""
    d = Path(directory)
    paths = [d / "ratings.dat", d / "movies.dat"]
    _require(paths)
    ds = _ratings_dataset(name or d.name, paths[0], "::")
    _attach_items(ds, _dat_items(paths[1]))
    if (d / "users.dat").is_file():  # ml-10m ships no user file
        paths.append(d / "users.dat")
        _attach_users(ds, _dat_users(paths[2]))
    ds.fingerprint = fingerprint_files(paths)
    return ds


# --- ml-20m / ml-25m / ml-latest -----------------------------------------------------------


def _csv_items(path: Path) -> Iterator[ItemRow]:
    reader = csv.reader(io.StringIO(decode_text(path, read_bytes(path), _TEXT), newline=""))
    try:
        for row in reader:
            n = reader.line_num
            if not row or (n == 1 and not _INT.match(row[0])):  # blank line or header
                continue
            if len(row) != 3:
                raise DataFormatError(
                    str(path), n, f"expected 3 fields (movieId,title,genres), got {len(row)}"
                )
            title = row[1].strip()
            yield (
                _int(path, n, row[0], "movie id"),
                title,
                _genres(row[2].split("|")),
                title_year(title),
            )
    except csv.Error as e:
        raise DataFormatError(str(path), reader.line_num, f"bad CSV: {e}") from None


def load_ml20m(directory: str | Path, name: str | None = None) -> Dataset:
    """ml-20m / ml-25m / ml-latest(-small): ratings.csv and movies.csv (with headers)."""
    d = Path(directory)
    paths = [d / "ratings.csv", d / "movies.csv"]
    _require(paths)
    ds = _ratings_dataset(name or d.name, paths[0], ",")
    _attach_items(ds, _csv_items(paths[1]))
    ds.fingerprint = fingerprint_files(paths)
    return ds


def load_movielens(directory: str | Path, name: str | None = None) -> Dataset:
    """Any MovieLens release, recognised by its ratings file."""
    d = Path(directory)
    for marker, loader in (
        ("u.data", load_ml100k),
        ("ratings.dat", load_ml1m),
        ("ratings.csv", load_ml20m),
    ):
        if (d / marker).is_file():
            return loader(d, name)
    raise DataFormatError(
        str(d), None, "not a MovieLens directory: expected u.data, ratings.dat or ratings.csv"
    )
