"""`genrec eval`'s batched evaluation gives the per-user loop's results: the memo answers each
request once (and exactly as the source would), TDM's batched beam search is the per-user one
given the same scores, the sources' batched answers equal their served ones up to float ties,
and the chunked (and forked) evaluation ranks every user as the per-user loop does wherever
the sources' answers agree."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from index.tdm_tree import beam_search, beam_search_batch
from index.tdm_tree_build import build_tree
from models.data import leave_one_out, load_dataset
from models.engine.core.context import UserContext
from models.engine.core.memo import RecallMemo
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.evaluate import batched
from models.evaluate.offline import eval_context, evaluate, list_functions, rank_in_list
from tests.topk import score_tol

pytestmark = pytest.mark.usefixtures("one_thread", "one_faiss_thread")

DEPTH = 50
USERS = 100  # validation users compared one by one (the rest only add run time)


@pytest.fixture(scope="module")
def one_faiss_thread() -> Iterator[None]:
    """One faiss OpenMP thread, as `genrec eval` runs: per-query searches on a busy 2-core
    box are several times slower with a thread team."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


class Counting:
    """A deterministic fake source: the first k of a per-user order; counts its calls."""

    name = "fake"
    prefix_depth = 8

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple]] = []

    def recall(self, ctx: UserContext, k: int, *args: object) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((k, args))
        ids = np.arange(20, dtype=np.int64)[::-1][:k] + len(ctx.history)
        return ids, -np.arange(len(ids), dtype=np.float32)

    def recall_batch(self, contexts: list[UserContext], k: int,
                     *args: object) -> list[tuple[np.ndarray, np.ndarray]]:
        self.calls.append((-len(contexts), args))  # one call for the batch
        return [self.recall(ctx, k, *args) for ctx in contexts]


def _ctx(n: int) -> UserContext:
    return UserContext(None, None, np.arange(n, dtype=np.int64), np.zeros(0, np.int64))


def test_memo_asks_each_request_once() -> None:
    src = Counting()
    memo = RecallMemo(src)
    a, b = _ctx(1), _ctx(2)
    first = memo.recall(a, 5)
    # Within the prefix depth every k is one search at that depth, sliced.
    assert src.calls == [(8, ())]
    assert np.array_equal(first[0], src.recall(a, 5)[0])
    src.calls.clear()
    assert np.array_equal(memo.recall(a, 8)[0], src.recall(a, 8)[0])
    assert np.array_equal(memo.recall(a, 3, None, None)[0], first[0][:3])  # None = default
    assert src.calls == [(8, ())]  # only the reference call above
    # Another context, a copy with other blocked items (as the top-up makes), a depth beyond
    # the prefix and explicit args are separate requests.
    memo.recall(b, 5)
    memo.recall(dataclasses.replace(a, blocked={3}), 5)
    memo.recall(a, 12)
    memo.recall(a, 5, 7)
    assert src.calls[1:] == [(8, ()), (8, ()), (12, ()), (5, (7,))]


def test_memo_fill_computes_a_batch_once_and_serves_it() -> None:
    src = Counting()
    memo = RecallMemo(src)
    contexts = [_ctx(n) for n in range(4)]
    assert memo.fill(contexts, 5)
    assert memo.fill(contexts[:2], 3)  # already there: no second batch
    assert src.calls.count((-4, ())) == 1 and len(src.calls) == 5
    for ctx in contexts:
        assert np.array_equal(memo.recall(ctx, 5)[0], Counting().recall(ctx, 5)[0])
    assert len(src.calls) == 5  # served from the batch
    memo.clear()
    memo.recall(contexts[0], 5)
    assert len(src.calls) == 6
    plain = RecallMemo(type("NoBatch", (), {"name": "x", "recall": src.recall})())
    assert not plain.fill(contexts, 5)


@pytest.mark.parametrize(("n", "b", "beam", "k"), [(300, 2, 10, 7), (257, 4, 3, 12),
                                                   (64, 3, 100, 5)])
def test_tdm_batch_search_is_the_per_user_search(n: int, b: int, beam: int, k: int) -> None:
    """Given the scores the per-user search gets, the batched search returns its answers
    exactly, whatever each user blocks (nothing, some, whole subtrees, everything)."""
    rng = np.random.default_rng(n)
    tree = build_tree(rng.normal(size=(n, 4)).astype(np.float32), b)
    table = rng.normal(size=(5, tree.n_nodes)).astype(np.float32)  # per-user node scores
    table[1] = np.round(table[1])  # many exact ties: the order rule must match too
    blocked = [None, rng.choice(n, n // 3, replace=False), np.arange(n // 2),
               np.arange(n), set(rng.choice(n, 5).tolist())]
    got = beam_search_batch(tree, lambda rows, nodes: table[rows, nodes], k, beam, blocked)
    for u, blk in enumerate(blocked):
        ref = beam_search(tree, lambda nodes, u=u: table[u, nodes], k, beam, blocked=blk)
        assert np.array_equal(got[u][0], ref[0]) and np.array_equal(got[u][1], ref[1])
    assert len(got[3][0]) == 0 and len(got[0][0]) == min(k, n)


@pytest.fixture(scope="module")
def setup(tiny_artifacts: Path):
    ds = load_dataset("ml-100k")
    split = leave_one_out(ds)
    rt = Runtime.load(tiny_artifacts)
    users = split.eval_users("valid")[:USERS]
    contexts = [eval_context(rt, split, int(u), "valid", ds.timestamps) for u in users]
    return ds, split, rt, users, contexts


def test_prefix_depth_answers_are_prefixes(setup) -> None:
    """A source that declares ``prefix_depth`` (TDM: its beam; TIGER: its beam width) answers
    k <= it with exactly the first k of its answer at that depth, one request at a time."""
    _, _, rt, _, contexts = setup
    comp = build_components(rt, EngineSettings(tdm_beam=30, semantic_id_beam_size=30))
    for name in ("tdm", "semantic_id"):
        src = comp.recall[name]
        assert src.prefix_depth == 30
        for ctx in contexts[:8]:
            ids, scores = src.recall(ctx, 30)
            assert len(ids) == 30
            for k in (1, 7, 29):
                got = src.recall(ctx, k)
                assert np.array_equal(got[0], ids[:k]) and np.array_equal(got[1], scores[:k])


def _tied(one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> bool:
    """Two answers to one request agree up to float ties: the same length, and position by
    position scores within float tolerance (near-tied items swapped, or a near-tie at the
    last slot resolved the other way), judged on the one-user answer's scale."""
    (ids_a, s_a), (ids_b, s_b) = one, other
    if len(ids_a) != len(ids_b):
        return False
    return bool(np.all(np.abs(s_a.astype(np.float64) - s_b) <= score_tol(s_a)))


class Served:
    """A source's own one-request answers, each computed once (the reference loop and the
    comparison with the batched answers read the same ones); a None arg is the default."""

    def __init__(self, source) -> None:
        self.source, self.name = source, source.name
        self.answers: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def recall(self, ctx: UserContext, k: int, *args) -> tuple[np.ndarray, np.ndarray]:
        while args and args[-1] is None:
            args = args[:-1]
        key = (id(ctx), k, args)
        if key not in self.answers:
            self.answers[key] = self.source.recall(ctx, k, *args)
        return self.answers[key]


def _answers_differ(served: dict[str, Served], comp, contexts, requests,
                    chunk: int) -> set[int]:
    """Rows of ``contexts`` for which some batched answer (``comp``'s sources, ``chunk``
    contexts at a time, as the evaluation computes them) lists other items than the served
    one; asserts that every batched answer is the served one up to float ties."""
    memos = batched.memos(comp)
    differ = set()
    for name, k in requests:
        if name not in memos:
            continue
        for lo in range(0, len(contexts), chunk):
            part = contexts[lo:lo + chunk]
            memos[name].fill(part, k)
            for row, ctx in enumerate(part, start=lo):
                one, got = served[name].recall(ctx, k), memos[name].recall(ctx, k)
                assert _tied(one, got), (name, k, row, one, got)  # scores: last bits at most
                if not np.array_equal(one[0], got[0]):
                    differ.add(row)
            memos[name].clear()
    return differ


def test_batched_evaluation_ranks_as_the_per_user_loop(setup) -> None:
    """Every source with a batched form (TIGER, TDM, the two-tower and sequential towers)
    answers each request of the evaluation (the rows' depth, the paths' quotas) as served,
    up to float ties, user by user. Every per-user method (sources and both paths), with one
    worker and two, ranks each user as the per-user loop does, except users for whom a
    batched answer listed other (tied) items; the workers change nothing."""
    ds, split, rt, users, contexts = setup
    ref_comp = build_components(rt, EngineSettings())
    served = {name: Served(src) for name, src in ref_comp.recall.items()}
    methods = ["popular", "itemcf", "ann", "tdm", "semantic_id", "cascade", "generative"]
    ref_fns = list_functions(ref_comp, served)
    target = split.valid_target
    ref = {m: np.array([rank_in_list(ref_fns[m](ctx, DEPTH), int(target[u]))
                        for u, ctx in zip(users, contexts, strict=True)]) for m in methods}

    comp = build_components(rt, EngineSettings())
    memos = batched.memos(comp)
    towers = [n for n in ("semantic_id", "tdm", "ann", "sasrec", "hstu_retrieval")
              if n in memos and memos[n].batch is not None]
    assert len(towers) == 5
    requests = batched.requests(comp, methods, DEPTH)
    assert ("semantic_id", DEPTH) in requests and ("cascade", DEPTH) not in requests
    chunk = 40  # three chunks: both workers get some
    differ = _answers_differ(served, comp, contexts,
                             [*requests, *((n, DEPTH) for n in towers)], chunk)
    assert len(differ) <= len(contexts) // 20  # ties are rare, not the rule
    fns = list_functions(comp, memos)
    job = batched.Job(users, target,
                      lambda u: eval_context(rt, split, u, "valid", ds.timestamps),
                      {m: fns[m] for m in methods}, memos, requests, DEPTH)
    one = batched.run(job, workers=1, chunk=chunk, progress=False)
    two = batched.run(job, workers=2, chunk=chunk, progress=False)
    for m in methods:
        assert np.array_equal(one[m], two[m]), m
        rows = set(np.flatnonzero(one[m] != ref[m]).tolist())
        assert rows <= differ, (m, rows - differ)
    assert any((one[m] < DEPTH).any() for m in methods)  # some hits: ranks are compared


def test_evaluate_reports_the_per_user_figures(setup) -> None:
    """evaluate() with workers reports the per-user loop's figures (cheap methods: the
    checks above cover the rest user by user)."""
    ds, split, rt, _, _ = setup
    kw = dict(stage="valid", progress=False, timestamps=ds.timestamps)
    methods = ["popular", "itemcf", "sasrec"]
    assert evaluate(rt, split, methods, workers=2, **kw) == evaluate(rt, split, methods,
                                                                     per_user=True, **kw)
