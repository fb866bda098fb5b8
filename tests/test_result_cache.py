"""The /recommend result cache (service/result_cache.py): a repeat of the same inputs gets the
list a fresh run computes, and every input that can change the list changes the key."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import orjson
from prometheus_client import REGISTRY

from models.engine.core.context import UserContext
from service.config import Settings
from service.lifecycle import swap
from service.result_cache import ResultCache, context_digest
from service.user_context import load_context
from tests.helpers import running


def app_state(c: httpx.AsyncClient):  # noqa: ANN201 - the app's AppState
    return c._transport.app.state.genrec  # type: ignore[attr-defined]


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("genrec_result_cache_lookups_total",
                                     {"result": result}) or 0.0


async def rec(c: httpx.AsyncClient, **body: object) -> dict:
    r = await c.post("/recommend", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def listed(body: dict) -> list[tuple[str, float]]:
    return [(x["item_id"], x["score"]) for x in body["items"]]


def ctx(history: list[int], blocked: set[int], ts: list[float] | None = None,
        index: int | None = 3) -> UserContext:
    return UserContext(user_id="u", user_index=index, history=np.array(history, np.int64),
                       user_codes=np.array([1, 2], np.int64), blocked=blocked,
                       timestamps=None if ts is None else np.array(ts, np.float64))


def test_digest_changes_with_every_input_the_engine_reads() -> None:
    base = context_digest(ctx([1, 2, 3], {1, 2, 3, 9}, [10.0, 20.0, 30.0]))
    assert base == context_digest(ctx([1, 2, 3], {9, 3, 2, 1}, [10.0, 20.0, 30.0]))
    for other in (ctx([1, 2, 4], {1, 2, 3, 9}, [10.0, 20.0, 30.0]),   # history
                  ctx([2, 1, 3], {1, 2, 3, 9}, [10.0, 20.0, 30.0]),   # its order
                  ctx([1, 2, 3], {1, 2, 3}, [10.0, 20.0, 30.0]),      # blocked
                  ctx([1, 2, 3], {1, 2, 3, 9}, [10.0, 20.0, 31.0]),   # timestamps
                  ctx([1, 2, 3], {1, 2, 3, 9}, None),                 # caller-given
                  ctx([1, 2, 3], {1, 2, 3, 9}, [10.0, 20.0, 30.0], index=None)):
        assert context_digest(other) != base
    # The store's history version too (the HSTU ranker's encodings are cached under it).
    versioned = ctx([1, 2, 3], {1, 2, 3, 9}, [10.0, 20.0, 30.0])
    versioned.version = 7
    assert context_digest(versioned) != base
    # Array bounds are part of the digest: [1] + blocked {2} is not [1, 2] + blocked {}.
    assert context_digest(ctx([1], {2})) != context_digest(ctx([1, 2], set()))


def test_lru_bound_partial_results_and_off() -> None:
    from models.engine.core.pipeline import PipelineResult

    res = PipelineResult(items=np.array([1]), scores=np.array([1.0], np.float32))
    cache = ResultCache(2)
    keys = [ResultCache.key("v", "a", "cascade", 10, ctx([i], set())) for i in range(3)]
    for key in keys:
        cache.put(key, res)
    assert len(cache) == 2 and cache.get(keys[0]) is None and cache.get(keys[2]) is res
    cache.put(keys[0], PipelineResult(items=np.array([1]), scores=np.array([1.0]),
                                      partial=True))
    assert cache.get(keys[0]) is None  # a partial version's answer is not kept
    off = ResultCache(0)
    off.put(keys[0], res)
    assert off.get(keys[0]) is None and len(off) == 0


async def test_repeat_is_answered_from_cache_with_a_fresh_runs_list(
        tiny_artifacts: Path) -> None:
    async with running(Settings(artifacts_dir=tiny_artifacts)) as c:
        state = app_state(c)
        for path in ("cascade", "generative"):
            hits, misses = lookups("hit"), lookups("miss")
            first = await rec(c, user_id="5", k=10, path=path)
            again = await rec(c, user_id="5", k=10, path=path)
            assert (first["cached"], again["cached"]) == (False, True)
            assert lookups("hit") == hits + 1 and lookups("miss") == misses + 1
            assert listed(again) == listed(first) and again["stages"] == first["stages"]
            assert again["request_id"] != first["request_id"]  # each answer is its own list
            # The pipeline run directly on the same context: the list a fresh run gives.
            rt, comp = state.require()
            context, _ = await load_context(rt, state.store, "5", None, [],
                                            limit=rt.max_history)
            fresh = comp.pipelines[path].run(context, 10, state.arm_params[first["arm"]])
            assert [x[0] for x in listed(again)] == [rt.items.ids[i]
                                                      for i in fresh.items.tolist()]


async def test_any_changed_input_is_computed_again(tiny_artifacts: Path) -> None:
    async with running(Settings(artifacts_dir=tiny_artifacts)) as c:
        user = f"new-{uuid.uuid4().hex[:8]}"
        r = await c.post("/events", json={"events": [{"user_id": user, "item_id": "50"},
                                                     {"user_id": user, "item_id": "181"}]})
        assert r.status_code == 200
        base = {"user_id": user, "k": 10, "path": "generative"}
        first = await rec(c, **base)
        assert (await rec(c, **base))["cached"]
        top = first["items"][0]["item_id"]
        for changed in ({"k": 11}, {"path": "cascade"}, {"exclude_item_ids": [top]}):
            body = await rec(c, **{**base, **changed})
            assert not body["cached"], changed
        assert top not in {x["item_id"] for x in body["items"]}
        # An event changes the history: the next request is computed on it.
        r = await c.post("/events", json={"events": [{"user_id": user, "item_id": top}]})
        assert r.status_code == 200
        after = await rec(c, **base)
        assert not after["cached"] and top not in {x["item_id"] for x in after["items"]}
        assert (await rec(c, **base))["cached"]
        # Stateless callers: the same history is a repeat, another history is not.
        hist = {"user_id": "anon", "history": ["1", "2", "3"], "k": 10, "path": "cascade"}
        assert not (await rec(c, **hist))["cached"]
        assert (await rec(c, **hist))["cached"]
        assert not (await rec(c, **{**hist, "history": ["1", "2", "4"]}))["cached"]


async def test_size_zero_turns_it_off(tiny_artifacts: Path) -> None:
    async with running(Settings(artifacts_dir=tiny_artifacts, result_cache_size=0)) as c:
        hits = lookups("hit")
        bodies = [await rec(c, user_id="5", k=10, path="cascade") for _ in range(3)]
        assert not any(b["cached"] for b in bodies) and lookups("hit") == hits
        assert listed(bodies[0]) == listed(bodies[2])


async def test_sampling_arm_is_never_cached_and_a_swap_empties_it(tiny_artifacts: Path) -> None:
    arms = [{"name": "plain", "path": "generative", "share": 0.5, "params": {}},
            {"name": "sampled", "path": "generative", "share": 0.5,
             "params": {"temperature": 1.0}}]
    experiment = orjson.dumps({"name": "t", "salt": "t", "arms": arms}).decode()
    settings = Settings(artifacts_dir=tiny_artifacts, experiment_json=experiment)
    async with running(settings) as c:
        state = app_state(c)
        by_arm: dict[str, list[bool]] = {"plain": [], "sampled": []}
        for n in range(40):  # users split between the arms by the sticky hash
            for _ in range(2):
                body = await rec(c, user_id=str(n + 1), k=10)
                by_arm[body["arm"]].append(body["cached"])
        assert by_arm["plain"] and by_arm["sampled"]
        assert any(by_arm["plain"]) and not any(by_arm["sampled"])
        # A swap (here: the same version again) starts from an empty cache.
        plain = None
        for n in range(40):
            if (await rec(c, user_id=str(n + 1), k=10))["arm"] == "plain":
                plain = str(n + 1)
                break
        assert plain is not None and (await rec(c, user_id=plain, k=10))["cached"]
        swap(state, state.require_serving())
        assert not (await rec(c, user_id=plain, k=10))["cached"]
