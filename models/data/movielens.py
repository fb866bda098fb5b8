"""MovieLens loaders: ml-100k (``u.*``), ml-1m / ml-10m (``*.dat``, ``::``-separated) and
ml-20m / ml-25m / ml-latest (``*.csv``). Every rating counts as an interaction."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from models.data.dataset import (
    CategoricalFeatures,
    DataFormatError,
    Dataset,
    ItemSide,
    decode_text,
    fingerprint_files,
    read_bytes,
)
from models.data.movielens_ratings import ratings_dataset

AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)  # ML-1M's codes: 1 = under 18, 56 = 56+
NO_GENRE = frozenset({"(no genres listed)", "unknown", ""})
USER_FEATURES = ["gender", "age", "occupation"]
_TEXT = ("utf-8", "latin-1")  # ml-1m is Latin-1, later releases UTF-8; Latin-1 never fails
_INT = re.compile(r"\s*[+-]?\d+\s*\Z")  # what numpy's int parser accepts, for the rescan
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")
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
    ds = ratings_dataset(name or d.name, data, "\t")
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
    ds = ratings_dataset(name or d.name, paths[0], "::")
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
    ds = ratings_dataset(name or d.name, paths[0], ",")
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
