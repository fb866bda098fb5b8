"""ExactIndex / HNSWIndex / load_index / search_excluding."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index import ExactIndex, HNSWIndex, load_index, search_excluding
from tests.topk import assert_top_k, score_tol


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(min(2, before))
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 32)).astype(np.float32)
    ids = rng.permutation(5000).astype(np.int64) + 7  # ids are not row numbers
    q = rng.normal(size=(200, 32)).astype(np.float32)
    return x, ids, q


@pytest.fixture(scope="module")
def hnsw(data):
    x, ids, _ = data
    return HNSWIndex(x, ids)


def brute(x, ids, q, k):
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), ids[order]


def rows_of(ids: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Item ids -> their rows in the vector matrix."""
    row = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    row[ids] = np.arange(len(ids))
    return row[got]


def test_exact_matches_numpy(data):
    x, ids, q = data
    index = ExactIndex(x, ids)
    assert len(index) == 5000 and index.dim == 32
    scores, got = index.search(q, 10)
    ref_s, _ = brute(x, ids, q, 10)
    assert scores.dtype == np.float32 and got.dtype == np.int64
    # faiss and numpy sum the float32 products in different orders: the ids must be the
    # reference top 10 in reference order, except where two scores are within rounding.
    ref = q.astype(np.float64) @ x.T.astype(np.float64)  # (200, 5000)
    for row in range(len(q)):
        assert_top_k(rows_of(ids, got[row]), ref[row], 10, score_tol(ref[row]))
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_hnsw_recall(data, hnsw):
    x, ids, q = data
    _, exact = ExactIndex(x, ids).search(q, 10)
    scores, got = hnsw.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
    print(f"HNSW recall@10 = {recall:.4f}")
    assert recall >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_load_round_trip(tmp_path, data, hnsw, kind):
    x, ids, q = data
    index = ExactIndex(x, ids) if kind == "exact" else hnsw
    path = tmp_path / "sub" / f"{kind}.faiss"
    index.save(path)
    loaded = load_index(path)
    assert type(loaded) is type(index)
    assert len(loaded) == len(index) and loaded.dim == index.dim
    s1, i1 = index.search(q, 20)
    s2, i2 = loaded.search(q, 20)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)


def test_load_sets_ef_search(tmp_path, hnsw):
    path = tmp_path / "h.faiss"
    hnsw.save(path)
    assert load_index(path).ef_search == 128
    assert load_index(path, ef_search=300).ef_search == 300
    assert hnsw.ef_search == 128  # the original is untouched


@pytest.mark.parametrize("cls", [ExactIndex, HNSWIndex])
def test_padding_when_k_exceeds_n(cls):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    index = cls(x, np.arange(100, 105))
    scores, ids = index.search(x[:2], 8)
    assert scores.shape == ids.shape == (2, 8)
    assert np.all(ids[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))
    assert all(set(row[:5]) == set(range(100, 105)) for row in ids)
    assert np.all(np.isfinite(scores[:, :5]))


def test_search_excluding_exact(data):
    x, ids, q = data
    index = ExactIndex(x, ids)
    _, top = index.search(q[:1], 30)
    exclude = {int(i) for i in top[0, ::2]} | {-5, 10**9}  # half the top plus unknown ids
    got_ids, got_scores = search_excluding(index, q[0], 10, exclude)
    assert len(got_ids) == 10 and not set(got_ids.tolist()) & exclude
    ref_s, ref_i = brute(x, ids, q[:1], 5000)
    keep = ~np.isin(ref_i[0], list(exclude))
    # The top 10 of what is not excluded, in order up to scores within float32 rounding.
    ref = x.astype(np.float64) @ q[0].astype(np.float64)  # (5000,) by row
    known = np.array(sorted(exclude & set(ids.tolist())), dtype=np.int64)
    assert_top_k(rows_of(ids, got_ids), ref, 10, score_tol(ref), rows_of(ids, known))
    np.testing.assert_allclose(got_scores, ref_s[0][keep][:10], rtol=1e-5, atol=1e-5)


def test_search_excluding_runs_out():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    index = ExactIndex(x, np.arange(20))
    exclude = frozenset({0, 3, 7, 50, 51})  # 3 of them are in the index
    got_ids, got_scores = search_excluding(index, x[0], 100, exclude)
    assert len(got_ids) == 17 and set(got_ids.tolist()) == set(range(20)) - exclude
    assert np.all(np.diff(got_scores) <= 0)
    assert len(search_excluding(index, x[0], 0, exclude)[0]) == 0


class _Lossy:
    """An index that finds only half of what is asked, like a weak ANN: forces the doubling."""

    def __init__(self, inner: ExactIndex) -> None:
        self.inner, self.dim, self.calls = inner, inner.dim, []

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, q, k, exclude=None):  # ignores exclude: the caller must filter
        self.calls.append(k)
        s, i = self.inner.search(q, k)
        s[:, (k + 1) // 2 :] = -np.inf
        i[:, (k + 1) // 2 :] = -1
        return s, i


def test_search_excluding_doubles_fetch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    exact = ExactIndex(x, np.arange(100))
    lossy = _Lossy(exact)
    _, top = exact.search(x[:1], 5)
    exclude = set(top[0].tolist())
    got, _ = search_excluding(lossy, x[0], 10, exclude)
    ref, _ = search_excluding(exact, x[0], 10, exclude)
    np.testing.assert_array_equal(got, ref)
    assert lossy.calls == [10, 20, 40]  # k, then doubled while the filter leaves too few


def test_hnsw_filters_exclusions_inside_the_graph():
    # Excluding most of the catalog must still fill k slots: faiss walks past excluded nodes.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    hnsw = HNSWIndex(x, np.arange(3000), m=16, ef_construction=64, ef_search=16)
    q = x[0]
    exclude = set(range(0, 2700))
    ids, scores = search_excluding(hnsw, q, 50, exclude)
    assert len(ids) == 50 and not set(ids.tolist()) & exclude
    assert np.all(np.diff(scores) <= 1e-6)
    # At a realistic exclusion rate (a long history, 20% of the catalog) recall stays high.
    hnsw.ef_search = 128
    exclude = set(rng.choice(3000, size=600, replace=False).tolist())
    ids, _ = search_excluding(hnsw, q, 50, exclude)
    ref, _ = search_excluding(ExactIndex(x, np.arange(3000)), q, 50, exclude)
    assert len(ids) == 50 and len(set(ids.tolist()) & set(ref.tolist())) >= 45
