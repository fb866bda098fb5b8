"""Dataset loaders: exact answers on tiny fixtures, errors on malformed files, bundled data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.data import BUNDLED, DataFormatError, Dataset, leave_one_out, load_dataset
from models.data.dataset import dense_ids, from_interactions
from models.data.movielens import age_bucket, load_ml1m, load_ml20m, load_ml100k
from models.data.sasrec import load_sasrec

FIX = Path(__file__).parent / "fixtures" / "data"
DATA = Path(__file__).resolve().parents[1] / "data"


def seqs(ds: Dataset) -> list[list[int]]:
    return [s.tolist() for s in ds.sequences]


def check_shape(ds: Dataset) -> None:
    """Invariants every loader must meet."""
    assert len(ds.sequences) == ds.n_users > 0
    assert len(ds.users.index) == ds.n_users and len(ds.items.index) == ds.n_items
    assert all(s.dtype == np.int64 and len(s) > 0 for s in ds.sequences)
    flat = np.concatenate(ds.sequences)
    assert flat.min() == 0 and flat.max() == ds.n_items - 1
    assert len(np.unique(flat)) == ds.n_items
    if ds.timestamps is not None:
        assert [len(t) for t in ds.timestamps] == [len(s) for s in ds.sequences]
        assert all(t.dtype == np.int64 and np.all(np.diff(t) >= 0) for t in ds.timestamps)
    if ds.ratings is not None:
        assert [len(r) for r in ds.ratings] == [len(s) for s in ds.sequences]
    assert len(ds.fingerprint) == 64


def copy_fixture(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIX / name, dst)
    return dst


def raises_at(path: Path, line: int | None, loader, *args) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        loader(*args)
    err = info.value
    assert str(path) in str(err)
    assert err.line == line, str(err)
    if line is not None:
        assert f":{line}:" in str(err)
    return err


# --- Tiny fixtures: exact answers ------------------------------------------------------------


def test_ml100k_tiny() -> None:
    ds = load_ml100k(FIX / "ml100k-tiny")
    check_shape(ds)
    assert ds.name == "ml100k-tiny"
    assert ds.users.ids == ["7", "3", "5", "9"]  # order of first appearance in u.data
    assert ds.items.ids == ["20", "10", "30"]  # item 40 is only in u.item: not included
    # user 7 sorted by time; user 3's two ratings tie at t=100 and keep file order
    assert seqs(ds) == [[1, 2, 0], [1, 2], [0], [1]]
    assert [t.tolist() for t in ds.timestamps] == [[100, 200, 300], [100, 100], [50], [10]]
    assert [r.tolist() for r in ds.ratings] == [[3.0, 2.0, 4.0], [5.0, 1.0], [4.0], [2.0]]
    side = ds.item_side
    assert side.titles == ["Unknown Movie", "Café Society (1995)", "No Date"]  # Latin-1 é
    assert side.genres == [(), ("Action", "Comedy"), ("Drama",)]  # "unknown" means none
    assert side.years.tolist() == [1997, 1995, 0]  # title, else release date, else 0
    us = ds.user_side
    assert us is not None and us.names == ["gender", "age", "occupation"]
    assert us.vocab["gender"] == ["<unk>", "F", "M"]
    assert us.vocab["age"] == ["<unk>", "1", "18", "25", "35", "45", "50", "56"]
    assert us.vocab["occupation"] == ["<unk>", "student", "technician", "writer"]
    # user 5 has no u.user line; user 9's gender "X" is unknown, age 60 -> bucket 56
    assert us.codes.tolist() == [[2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 7, 3]]
    assert us.codes.dtype == np.int64


def test_ml1m_tiny() -> None:
    ds = load_ml1m(FIX / "ml1m-tiny")
    check_shape(ds)
    assert ds.users.ids == ["1", "2"] and ds.items.ids == ["100", "200", "300"]
    assert seqs(ds) == [[1, 0, 2], [1]]  # 100 and 300 tie at ...760: file order
    assert ds.timestamps[0].tolist() == [978300700, 978300760, 978300760]
    assert ds.ratings[0].tolist() == [4.0, 5.0, 2.0]
    assert ds.item_side.titles[1] == "Misérables, Les (1995)"  # Latin-1 fallback
    assert ds.item_side.genres == [("Animation", "Children's", "Comedy"), ("Drama",), ()]
    assert ds.item_side.years.tolist() == [1995, 1995, 2000]
    assert ds.user_side.vocab["occupation"] == ["<unk>", "10", "16"]
    assert ds.user_side.codes.tolist() == [[1, 1, 1], [2, 7, 2]]


def test_ml10m_utf8_without_users(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml1m-tiny")
    (d / "users.dat").unlink()
    text = (d / "movies.dat").read_bytes().decode("latin-1")
    (d / "movies.dat").write_bytes(text.encode("utf-8"))
    ds = load_ml1m(d)
    assert ds.user_side is None
    assert ds.item_side.titles[1] == "Misérables, Les (1995)"  # UTF-8, not mojibake


def test_ml20m_tiny_csv() -> None:
    ds = load_ml20m(FIX / "ml20m-tiny")
    check_shape(ds)
    assert ds.users.ids == ["5", "6"] and ds.items.ids == ["1", "2", "3"]
    assert seqs(ds) == [[1, 2, 0], [1]]  # items 2 and 3 tie at t=900: file order
    assert ds.ratings[0].tolist() == [3.5, 0.5, 4.0]
    assert ds.item_side.titles == [
        "Toy Story (1995)",
        "American President, The (1995)",
        'Title with "quotes" (2003)',
    ]
    assert ds.item_side.genres == [("Adventure", "Animation"), ("Comedy", "Drama", "Romance"), ()]
    assert ds.item_side.years.tolist() == [1995, 1995, 2003]
    assert ds.user_side is None


def test_sasrec_tiny() -> None:
    ds = load_sasrec(FIX / "sasrec-tiny.txt")
    check_shape(ds)
    assert ds.name == "sasrec-tiny"
    assert ds.users.ids == ["1", "2", "3"] and ds.items.ids == ["5", "6", "7", "8", "9"]
    assert seqs(ds) == [[0, 1, 2, 4], [1, 3], [0]]  # user 1's second line appends
    assert ds.timestamps is None and ds.ratings is None


def test_age_buckets() -> None:
    assert [age_bucket(a) for a in (0, 7, 17, 18, 24, 25, 44, 45, 49, 50, 55, 56, 90)] == [
        0, 1, 1, 18, 18, 25, 35, 45, 45, 50, 50, 56, 56,
    ]  # fmt: skip
    assert [age_bucket(a) for a in (1, 18, 25, 35, 45, 50, 56)] == [1, 18, 25, 35, 45, 50, 56]


def test_dense_ids_and_ordering_paths_agree() -> None:
    rng = np.random.default_rng(0)
    for ext in (rng.integers(0, 50, 500), rng.integers(0, 10**15, 500) // 10**12 * 10**12):
        dense, uniq = dense_ids(ext)  # small range: table path; huge range: np.unique path
        order = list(dict.fromkeys(ext.tolist()))
        assert uniq.tolist() == order
        assert dense.tolist() == [order.index(x) for x in ext.tolist()]
    # Timestamps spanning most of int64 force the two-sort fallback; compare with Python.
    n = 400
    u = rng.integers(0, 7, n)
    for t in (rng.integers(0, 5, n), rng.integers(-(2**62), 2**62, n) // 2**60 * 2**60):
        ds = from_interactions("x", u, np.arange(n), timestamps=t)
        first_user = list(dict.fromkeys(u.tolist()))
        want = [sorted((r for r in range(n) if u[r] == x), key=lambda r: t[r]) for x in first_user]
        assert seqs(ds) == want  # item id == row, so this checks the stable tie-break too


# --- Malformed files ---------------------------------------------------------------------------


def test_ml100k_bad_field_count(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml100k-tiny")
    lines = (d / "u.data").read_text().splitlines()
    lines[2] = "7\t10\t3"
    (d / "u.data").write_text("\n".join(lines) + "\n")
    err = raises_at(d / "u.data", 3, load_ml100k, d)
    assert "expected 4" in str(err)


def test_ml100k_missing_side_file(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml100k-tiny")
    (d / "u.user").unlink()
    err = raises_at(d / "u.user", None, load_ml100k, d)
    assert "not found" in str(err)


def test_unrated_item_line_is_still_checked(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml100k-tiny")
    with open(d / "u.item", "ab") as f:
        f.write(b"50|Broken (1999)|01-Jan-1999||http://x|0|1\n")
    raises_at(d / "u.item", 5, load_ml100k, d)


def test_dat_errors(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml1m-tiny")
    good = (d / "ratings.dat").read_text()
    cases = {
        "2::200::3::97830.5\n": "timestamp",  # non-integer timestamp
        "2::200::3::x\n": "timestamp",
        "2:x:200::3::978300000\n": "expected 4",  # single colons must not slip through
        "2::200::three::978300000\n": "rating",
        "2::200::nan::978300000\n": "rating",
        "2::abc::3::978300000\n": "item id",
    }
    for bad, word in cases.items():
        lines = good.splitlines(keepends=True)
        lines[1] = bad
        (d / "ratings.dat").write_text("".join(lines))
        err = raises_at(d / "ratings.dat", 2, load_ml1m, d)
        assert word in str(err), bad
    (d / "ratings.dat").write_text(good)
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::old::16::70072\n")
    raises_at(d / "users.dat", 2, load_ml1m, d)


def test_csv_errors(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml20m-tiny")
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n5,1,4.0,1000\n5,2,3.5\n")
    raises_at(d / "ratings.csv", 3, load_ml20m, d)  # the header counts as line 1
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    err = raises_at(d / "ratings.csv", None, load_ml20m, d)
    assert "no interactions" in str(err)
    shutil.copy(FIX / "ml20m-tiny" / "ratings.csv", d / "ratings.csv")
    (d / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Drama\n2,A,B,C\n")
    raises_at(d / "movies.csv", 3, load_ml20m, d)


def test_sasrec_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.txt"
    for body, line, word in (
        (b"1 2 3\n2 4 x5\n", 2, "not an integer"),
        (b"1 2 3\n\n2\n", 3, "at least one item"),
        (b"1 2 3\n2 4\n3 \xff\n", 3, "undecodable"),
        (b"\n\n", None, "no interactions"),
    ):
        p.write_bytes(body)
        err = raises_at(p, line, load_sasrec, p)
        assert word in str(err)
    raises_at(tmp_path / "nope.txt", None, load_sasrec, tmp_path / "nope.txt")


# --- Registry, fingerprint ---------------------------------------------------------------------


def test_registry_paths_and_names(tmp_path: Path) -> None:
    assert load_dataset(str(FIX / "ml100k-tiny")).n_interactions == 7
    assert load_dataset(str(FIX / "ml1m-tiny")).n_users == 2
    assert load_dataset(str(FIX / "ml20m-tiny")).item_side.titles[0] == "Toy Story (1995)"
    ds = load_dataset(str(FIX / "sasrec-tiny.txt"))
    assert ds.name == "sasrec-tiny" and ds.n_items == 5
    # A bundled name resolves under data_dir.
    (tmp_path / "amazon-beauty").mkdir()
    shutil.copy(FIX / "sasrec-tiny.txt", tmp_path / "amazon-beauty" / "Beauty.txt")
    ds = load_dataset("beauty", data_dir=tmp_path)
    assert ds.name == "beauty" and seqs(ds) == [[0, 1, 2, 4], [1, 3], [0]]
    err = raises_at(tmp_path / "ml-100k", None, load_dataset, "ml-100k", tmp_path)
    assert "bundled" in str(err)
    err = raises_at(Path("no-such-dataset"), None, load_dataset, "no-such-dataset")
    assert "ml-100k" in str(err) and "beauty" in str(err)
    (tmp_path / "empty").mkdir()
    err = raises_at(tmp_path / "empty", None, load_dataset, str(tmp_path / "empty"))
    assert "u.data" in str(err) and "ratings.csv" in str(err)


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path, "ml100k-tiny")
    a, b = load_dataset(str(d)), load_dataset(str(d))
    assert a.fingerprint == b.fingerprint == load_dataset(str(FIX / "ml100k-tiny")).fingerprint
    raw = bytearray((d / "u.item").read_bytes())
    raw[raw.index(b"Society")] = ord("s")  # one byte of a side file
    (d / "u.item").write_bytes(bytes(raw))
    assert load_dataset(str(d)).fingerprint != a.fingerprint


# --- Bundled data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def beauty() -> Dataset:
    return load_dataset("beauty")


def test_bundled_names() -> None:
    assert set(BUNDLED) == {"ml-100k", "beauty"}


def test_bundled_ml100k(ml100k: Dataset) -> None:
    check_shape(ml100k)
    assert (ml100k.name, ml100k.n_users, ml100k.n_items) == ("ml-100k", 943, 1682)
    assert ml100k.n_interactions == 100_000
    assert ml100k.users.ids[:3] == ["196", "186", "22"]  # first lines of u.data
    us = ml100k.user_side
    assert us is not None and us.codes.shape == (943, 3) and (us.codes > 0).all()
    assert us.cardinalities() == [3, 8, 22]  # 21 occupations + <unk>
    toy = ml100k.items.index["1"]
    assert ml100k.item_side.titles[toy] == "Toy Story (1995)"
    assert ml100k.item_side.genres[toy] == ("Animation", "Children's", "Comedy")
    assert ml100k.item_side.years[toy] == 1995
    assert ml100k.item_side.genres[ml100k.items.index["267"]] == ()  # the "unknown" movie


def test_bundled_beauty(beauty: Dataset) -> None:
    check_shape(beauty)
    assert (beauty.n_users, beauty.n_items, beauty.n_interactions) == (22_363, 12_101, 198_502)
    assert beauty.timestamps is None and beauty.ratings is None
    assert seqs(beauty)[0] == [0, 1, 2, 3, 4]  # "1 1 2 3 4 5"


@pytest.mark.parametrize("name", ["ml100k", "beauty"])
def test_leave_one_out(name: str, request: pytest.FixtureRequest) -> None:
    ds: Dataset = request.getfixturevalue(name)
    split = leave_one_out(ds)
    for u, seq in enumerate(ds.sequences):
        if len(seq) < 3:
            assert split.valid_target[u] == split.test_target[u] == -1
            assert split.train[u].tolist() == seq.tolist()
        else:
            whole = [*split.train[u].tolist(), split.valid_target[u], split.test_target[u]]
            assert whole == seq.tolist()
            assert split.history(u, "test").tolist() == seq[:-1].tolist()
    assert len(split.eval_users("test")) == int(np.sum([len(s) >= 3 for s in ds.sequences]))


def test_leave_one_out_short_users() -> None:
    split = leave_one_out(load_sasrec(FIX / "sasrec-tiny.txt"))
    assert split.valid_target.tolist() == [2, -1, -1]
    assert split.test_target.tolist() == [4, -1, -1]
    assert split.train[0].tolist() == [0, 1] and split.eval_users("valid").tolist() == [0]


def test_sasrec_id_too_big_names_its_line(tmp_path):
    f = tmp_path / "big.txt"
    f.write_text("1 2 3\n2 99999999999999999999999 3\n")
    with pytest.raises(DataFormatError, match=r"big\.txt:2: an id does not fit in int64"):
        load_dataset(str(f))
