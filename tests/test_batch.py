"""Cross-request batching (``models/engine/core/batch.py``, the service's compute lane):
several requests computed together get what each would get alone, up to float summation
order, which may swap items whose scores tie within float tolerance and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.data import leave_one_out, load_dataset
from models.engine.core.batch import Call, run_batch
from models.engine.core.context import UserContext, make_context
from models.engine.core.pipeline import PipelineResult
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.evaluate.offline import eval_context
from tests.topk import score_tol

pytestmark = pytest.mark.usefixtures("one_thread")

USERS = 30


@pytest.fixture(scope="module")
def setup(tiny_artifacts: Path) -> tuple[Runtime, list[UserContext]]:
    """Contexts of every kind a batch mixes: known users (some with a store version, so the
    HSTU cache stores and hits them), a caller-given history (no user, no times), extra
    exclusions, and a cold user."""
    ds = load_dataset("ml-100k")
    split = leave_one_out(ds)
    rt = Runtime.load(tiny_artifacts)
    users = split.eval_users("valid")[:USERS]
    contexts = [eval_context(rt, split, int(u), "valid", ds.timestamps) for u in users]
    contexts = [dataclasses.replace(c, version=7) if i % 2 else c
                for i, c in enumerate(contexts)]
    given = contexts[3].history[-5:]
    contexts.append(make_context(rt, None, given, blocked=given.tolist()))
    contexts[5] = dataclasses.replace(contexts[5], blocked=contexts[5].blocked | set(range(40)))
    contexts.append(make_context(rt, "nobody", []))
    return rt, contexts


def _near_ties(scores: np.ndarray) -> bool:
    """Whether two of ``scores`` are within float tolerance of each other."""
    s = np.sort(np.asarray(scores, np.float64))
    return bool(len(s) > 1 and np.min(np.diff(s)) <= score_tol(s))


def test_rankers_score_a_batch_as_one_user_at_a_time(setup) -> None:
    """DIN/DeepFM and the HSTU ranker (stacked M-FALCON caches, histories of every length,
    candidate lists of 0 to 150 items padded to one width), first from fresh caches, then
    from the cache entries the first pass stored."""
    rt, contexts = setup
    ref = build_components(rt, EngineSettings()).rankers
    got = build_components(rt, EngineSettings()).rankers
    assert {"din", "deepfm", "hstu_ranker"} <= set(got)
    rng = np.random.default_rng(0)
    sizes = [0, 1, 7, 60, 150]
    items = [rng.choice(rt.n_items, sizes[i % len(sizes)], replace=False)
             for i in range(len(contexts))]
    for name, ranker in got.items():
        want = [ref[name].score(c, ids) for c, ids in zip(contexts, items, strict=True)]
        for _ in range(2):  # the second pass reads the HSTU caches the first one stored
            scores = ranker.score_batch(contexts, items)
            for w, s in zip(want, scores, strict=True):
                assert s.dtype == np.float32 and s.shape == w.shape, name
                np.testing.assert_allclose(s, w, rtol=0, atol=score_tol(w))
    assert got["hstu_ranker"].cache.hits > 0


def test_sequential_recall_batch_is_the_one_user_search(setup) -> None:
    rt, contexts = setup
    comp = build_components(rt, EngineSettings())
    for name in ("sasrec", "gru4rec", "hstu_retrieval"):
        src = comp.recall[name]
        for ctx, (ids, scores) in zip(contexts, src.recall_batch(contexts, 20), strict=True):
            one_ids, one_scores = src.recall(ctx, 20)
            assert len(ids) == len(one_ids) and not (set(ids.tolist()) & ctx.blocked)
            np.testing.assert_allclose(scores, one_scores, rtol=0, atol=score_tol(one_scores))
            if not _near_ties(one_scores):
                assert np.array_equal(ids, one_ids), name


@pytest.mark.parametrize("users_per_pass", [1, 3, None, 64])
def test_tdm_recall_batch_is_the_one_user_search(setup, users_per_pass: int | None) -> None:
    """However the users are split into scorer passes (one each, passes that cut across
    length groups, the element-bounded default, all at once), each user gets the one-user
    beam search's answer."""
    rt, contexts = setup
    src = build_components(rt, EngineSettings()).recall["tdm"]
    got = src.recall_batch(contexts, 20, users_per_pass=users_per_pass)
    for ctx, (ids, scores) in zip(contexts, got, strict=True):
        one_ids, one_scores = src.recall(ctx, 20)
        assert len(ids) == len(one_ids) and not (set(ids.tolist()) & ctx.blocked)
        np.testing.assert_allclose(scores, one_scores, rtol=0, atol=score_tol(one_scores))
        if not _near_ties(one_scores):
            assert np.array_equal(ids, one_ids)


def _explained_by_ties(comp, call: Call) -> bool:
    """Whether a batched pass could legitimately order ``call``'s candidates otherwise: a
    batched source's answer or the ranker's scores hold a near-tie."""
    path, p = call.pipeline, call.params or {}
    for name, quota in path.quotas(p):
        src = comp.recall[name]
        if hasattr(src, "recall_batch") and _near_ties(
                src.recall(call.ctx, quota, *path.recall_args(name, p))[1]):
            return True
    ids = path.recall(call.ctx, call.k, p)[0]
    return path.ranker is not None and _near_ties(path.ranker.score(call.ctx, ids))


@pytest.mark.parametrize("path", ["cascade", "generative"])
def test_a_batch_of_requests_gets_the_unbatched_answers(setup, path: str) -> None:
    rt, contexts = setup
    ref_comp = build_components(rt, EngineSettings())
    comp = build_components(rt, EngineSettings())
    ks = [10, 3, 25]
    params = [None, {"last_stage": "rank"}, {"diversity": 0.0}]
    calls = [Call(comp.pipelines[path], c, ks[i % 3], params[i % 3])
             for i, c in enumerate(contexts)]
    got = run_batch(calls)
    assert len(got) == len(calls)
    differ = 0
    for call, res in zip(calls, got, strict=True):
        ref = ref_comp.pipelines[path].run(call.ctx, call.k, call.params)
        assert isinstance(res, PipelineResult)
        assert len(res.items) == call.k and not (set(res.items.tolist()) & call.ctx.blocked)
        assert [s.name for s in res.stages] == [s.name for s in ref.stages]
        assert res.cold_start == ref.cold_start
        if np.array_equal(res.items, ref.items):
            np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=score_tol(ref.scores))
        else:
            assert _explained_by_ties(ref_comp, dataclasses.replace(
                call, pipeline=ref_comp.pipelines[path])), call.ctx.user_id
            differ += 1
    assert differ <= len(calls) // 10  # ties are rare, not the rule


def test_a_call_that_breaks_the_batch_fails_alone(setup) -> None:
    """An item id past the catalog breaks the batched forward pass: the path's calls run
    again one by one, the bad one gets its own exception, the others their answers."""
    rt, contexts = setup
    comp = build_components(rt, EngineSettings())
    bad = dataclasses.replace(contexts[0], history=np.array([rt.n_items + 5], np.int64))
    # Sources that embed the history (the fitted plan may serve only count-based ones,
    # which a bad id does not break).
    params = {"recall": [("ann", 50), ("sasrec", 50)]}
    calls = [Call(comp.pipelines["cascade"], c, 10, params)
             for c in (contexts[1], bad, contexts[2])]
    got = run_batch(calls)
    assert isinstance(got[1], Exception)
    assert isinstance(got[0], PipelineResult) and isinstance(got[2], PipelineResult)
    assert len(got[0].items) == 10 and len(got[2].items) == 10


async def test_the_lane_batches_queued_pipeline_runs(setup) -> None:
    """Runs queued while the lane is busy are computed as one batch, each answered with its
    own result; one past its deadline is dropped unrun."""
    from service import metrics
    from service.compute import ComputeLane, DeadlinePassed

    rt, contexts = setup
    comp = build_components(rt, EngineSettings())
    lane = ComputeLane(deadline_s=5.0, batch_max=8)
    path = comp.pipelines["cascade"]
    before = metrics.COMPUTE_BATCH.collect()[0].samples
    count = next(s.value for s in before if s.name.endswith("_count"))
    total = next(s.value for s in before if s.name.endswith("_sum"))
    running, release = threading.Event(), threading.Event()

    def hold() -> None:  # holds the lane until every run below is queued
        running.set()
        release.wait(10)

    now = time.perf_counter()
    busy = asyncio.ensure_future(lane.run(now, hold))
    assert await asyncio.to_thread(running.wait, 10)
    runs = [asyncio.ensure_future(lane.run_pipeline(now, Call(path, c, 10)))
            for c in contexts[:6]]
    late = asyncio.ensure_future(lane.run_pipeline(now - 10.0, Call(path, contexts[6], 10)))
    await asyncio.sleep(0.05)  # each task has put its job on the queue
    release.set()
    done = await asyncio.gather(busy, *runs, late, return_exceptions=True)
    lane.close()
    assert isinstance(done[-1], DeadlinePassed)
    for ctx, res in zip(contexts[:6], done[1:-1], strict=True):
        assert isinstance(res, PipelineResult), res
        assert np.array_equal(res.items, path.run(ctx, 10).items) or _explained_by_ties(
            comp, Call(path, ctx, 10))
    after = metrics.COMPUTE_BATCH.collect()[0].samples
    assert next(s.value for s in after if s.name.endswith("_count")) == count + 1
    assert next(s.value for s in after if s.name.endswith("_sum")) == total + 6
