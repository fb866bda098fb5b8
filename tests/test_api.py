"""API tests through the ASGI app, on artifacts built from the bundled ml-100k (tiny profile),
with the embedded store; one class repeats the stateful checks against a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from service.config import Settings
from tests.helpers import running

pytestmark = pytest.mark.asyncio(loop_scope="session")



@pytest.fixture(scope="session")
async def client(tiny_artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running(Settings(artifacts_dir=tiny_artifacts)) as c:
        yield c


@pytest.fixture(scope="session")
def rated() -> dict[str, set[str]]:
    """Every item each ml-100k user rated: what the seeded store must treat as consumed."""
    from models.data import load_dataset

    ds = load_dataset("ml-100k")
    return {ds.users.ids[u]: {ds.items.ids[i] for i in seq.tolist()}
            for u, seq in enumerate(ds.sequences)}


async def history_of(client: httpx.AsyncClient, user: str) -> list[str]:
    r = await client.get(f"/users/{user}/history", params={"limit": 1000})
    assert r.status_code == 200
    return [x["item_id"] for x in r.json()["items"]]


def loc_of(r: httpx.Response) -> list:
    return r.json()["detail"][0]["loc"]


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_not_ready_is_503_not_500(tmp_path: Path) -> None:
    async with running(Settings(artifacts_dir=tmp_path / "missing")) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        r = await c.post("/recommend", json={"user_id": "1"})
        assert r.status_code == 503


async def test_recommend_known_user_contract(
    client: httpx.AsyncClient, rated: dict[str, set[str]], tiny_artifacts: Path
) -> None:
    # The stored history is capped at max_history (200), but all 272 of user 1's rated items
    # are consumed and must stay blocked.
    assert len(await history_of(client, "1")) == 200
    consumed = rated["1"]
    assert len(consumed) == 272
    r = await client.post("/recommend", json={"user_id": "1", "k": 25, "path": "cascade",
                                              "exclude_item_ids": ["50", "181"]})
    assert r.status_code == 200
    body = r.json()
    ids = [x["item_id"] for x in body["items"]]
    assert len(ids) == 25 and len(set(ids)) == 25
    assert not (set(ids) & consumed) and not {"50", "181"} & set(ids)
    assert body["path"] == "cascade" and body["cold_start"] is False
    # The ranker runs when the fitted plan gives it a weight; fusion and rerank always do.
    plan = orjson.loads((tiny_artifacts / "fusion.json").read_bytes())["cascade"]
    ranked = ["rank"] if plan["weights"]["ranker"] > 0 else []
    assert [s["name"] for s in body["stages"]] == ["recall", *ranked, "fusion", "rerank"]
    assert body["stages"][0]["candidates"] >= 25
    assert all(s["ms"] >= 0 for s in body["stages"])
    assert len(body["request_id"]) == 32


async def test_recommend_returns_exactly_k_up_to_200(client: httpx.AsyncClient) -> None:
    r = await client.post("/recommend", json={"user_id": "13", "k": 200})
    assert r.status_code == 200
    ids = [x["item_id"] for x in r.json()["items"]]
    assert len(ids) == len(set(ids)) == 200


async def test_cold_start_user_gets_popular(client: httpx.AsyncClient) -> None:
    user = f"new-{uuid.uuid4().hex}"
    r = await client.post("/recommend", json={"user_id": user, "k": 10})
    body = r.json()
    assert r.status_code == 200 and body["cold_start"] is True
    popular = await client.post("/recall", json={"user_id": user, "method": "popular", "k": 10})
    assert [x["item_id"] for x in body["items"]] == [
        x["item_id"] for x in popular.json()["items"]]


async def test_history_override_replaces_store(client: httpx.AsyncClient) -> None:
    hist = ["1", "2", "3", "4", "5"]
    r = await client.post("/recommend", json={"user_id": "1", "k": 50, "history": hist})
    body = r.json()
    ids = {x["item_id"] for x in body["items"]}
    assert body["cold_start"] is False and not ids & set(hist)
    # The stored history (272 items) no longer blocks anything: some of it may come back.
    assert len(ids) == 50


async def test_events_are_seen_by_next_recommend(client: httpx.AsyncClient) -> None:
    user = f"u-{uuid.uuid4().hex}"
    r = await client.post("/recommend", json={"user_id": user, "k": 5})
    first = [x["item_id"] for x in r.json()["items"]]
    events = [{"user_id": user, "item_id": i, "type": "click"} for i in first[:3]]
    r = await client.post("/events", json={"events": events})
    assert r.status_code == 200 and r.json() == {"accepted": 3}
    assert await history_of(client, user) == first[:3]
    r = await client.post("/recommend", json={"user_id": user, "k": 10})
    body = r.json()
    assert body["cold_start"] is False
    assert not {x["item_id"] for x in body["items"]} & set(first[:3])


async def test_events_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    user = f"u-{uuid.uuid4().hex}"
    events = [{"user_id": user, "item_id": "1"}, {"user_id": user, "item_id": "2"},
              {"user_id": user, "item_id": "no-such-item"}]
    r = await client.post("/events", json={"events": events})
    assert r.status_code == 422
    assert loc_of(r) == ["body", "events", 2, "item_id"]
    assert "no-such-item" in r.json()["detail"][0]["msg"]
    assert await history_of(client, user) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "1", "k": 0}, "k"),
    ({"user_id": "1", "k": 201}, "k"),
    ({"user_id": "1", "k": "many"}, "k"),
    ({"user_id": "x" * 129}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"k": 10}, "user_id"),
    ({"user_id": 5}, "user_id"),
    ({"user_id": "1", "exclude_item_ids": [str(i) for i in range(1001)]}, "exclude_item_ids"),
    ({"user_id": "1", "history": ["1", "nope"]}, "history"),
    ({"user_id": "1", "surprise": True}, "surprise"),
])
async def test_recommend_bad_input_names_field(
    client: httpx.AsyncClient, body: dict, field: str
) -> None:
    r = await client.post("/recommend", json=body)
    assert r.status_code == 422
    assert field in loc_of(r)


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/recommend", content=b'{"user_id": "1", ',
                          headers={"content-type": "application/json"})
    assert r.status_code == 422 and loc_of(r)[0] == "body"


async def test_too_many_events_is_422(client: httpx.AsyncClient) -> None:
    events = [{"user_id": "1", "item_id": "1"}] * 1001
    r = await client.post("/events", json={"events": events})
    assert r.status_code == 422 and "events" in loc_of(r)


async def test_bad_event_type_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/events", json={"events": [{"user_id": "1", "item_id": "1",
                                                      "type": "hover"}]})
    assert r.status_code == 422 and loc_of(r) == ["body", "events", 0, "type"]


@pytest.mark.parametrize("method", ["popular", "itemcf", "ann", "semantic_id"])
async def test_recall_methods(
    client: httpx.AsyncClient, method: str, rated: dict[str, set[str]]
) -> None:
    consumed = rated["7"]
    r = await client.post("/recall", json={"user_id": "7", "method": method, "k": 40})
    assert r.status_code == 200
    body = r.json()
    ids = [x["item_id"] for x in body["items"]]
    scores = [x["score"] for x in body["items"]]
    assert body["method"] == method and len(ids) == len(set(ids))
    # ItemCF only proposes neighbours of the recent history (positive score), so it may
    # return fewer; the others can always fill k from the catalog.
    assert len(ids) == 40 if method != "itemcf" else 0 < len(ids) <= 40
    assert not set(ids) & consumed
    assert scores == sorted(scores, reverse=True)


async def test_recall_needs_user_or_history(client: httpx.AsyncClient) -> None:
    r = await client.post("/recall", json={"method": "ann", "k": 5})
    assert r.status_code == 422
    r = await client.post("/recall", json={"user_id": "1", "method": "magic", "k": 5})
    assert r.status_code == 422 and loc_of(r) == ["body", "method"]


@pytest.mark.parametrize("model", ["deepfm", "din", "hstu_ranker", "hstu"])
async def test_rank_sorts_given_items(client: httpx.AsyncClient, model: str) -> None:
    items = ["1", "50", "100", "181", "258", "7"]
    r = await client.post("/rank", json={"user_id": "3", "item_ids": items, "model": model})
    assert r.status_code == 200
    got = r.json()["items"]
    assert sorted(x["item_id"] for x in got) == sorted(items)
    scores = [x["score"] for x in got]
    assert scores == sorted(scores, reverse=True)
    r = await client.post("/rank", json={"history": ["1"], "item_ids": ["1", "zz"],
                                         "model": model})
    assert r.status_code == 422 and loc_of(r) == ["body", "item_ids", 1]


async def test_rank_old_model_name_is_an_alias(client: httpx.AsyncClient) -> None:
    # "hstu" meant the HSTU ranker in /rank before the rename: the same scores.
    body = {"user_id": "3", "item_ids": ["1", "50", "100", "181"]}
    old = await client.post("/rank", json={**body, "model": "hstu"})
    new = await client.post("/rank", json={**body, "model": "hstu_ranker"})
    assert old.status_code == new.status_code == 200
    assert old.json()["items"] == new.json()["items"]


@pytest.mark.parametrize("method", ["mmr", "dpp"])
async def test_rerank(client: httpx.AsyncClient, method: str) -> None:
    items = [{"item_id": str(i), "score": 1.0 - i / 100} for i in range(1, 31)]
    r = await client.post("/rerank", json={"items": items, "method": method, "k": 10,
                                           "diversity": 0.0})
    assert r.status_code == 200
    got = [x["item_id"] for x in r.json()["items"]]
    # Diversity 0 is pure relevance for both methods (the stage skips the greedy, whose capped
    # quality exponent would let near-duplicates swap near-equal items).
    assert got == [str(i) for i in range(1, 11)]
    r = await client.post("/rerank", json={"items": items, "method": method, "k": 10,
                                           "diversity": 0.9})
    got = [x["item_id"] for x in r.json()["items"]]
    assert len(got) == len(set(got)) == 10 and set(got) <= {x["item_id"] for x in items}
    dup = items[:3] + [items[0]]
    r = await client.post("/rerank", json={"items": dup, "method": method, "k": 2})
    assert r.status_code == 422 and loc_of(r) == ["body", "items", 3, "item_id"]


async def test_history_limit_validation(client: httpx.AsyncClient) -> None:
    assert (await client.get("/users/1/history", params={"limit": 0})).status_code == 422
    assert (await client.get("/users/" + "x" * 129 + "/history")).status_code == 422
    r = await client.get("/users/1/history", params={"limit": 3})
    assert len(r.json()["items"]) == 3


async def test_metrics_exposed(client: httpx.AsyncClient) -> None:
    await client.post("/recommend", json={"user_id": "2", "k": 5})
    text = (await client.get("/metrics")).text
    assert 'genrec_requests_total{endpoint="/recommend",status="200"}' in text
    assert 'genrec_stage_latency_seconds_count{path="cascade",stage="fusion"}' in text
    assert "genrec_model_info{" in text and 'model="din"' in text
    assert 'endpoint="/users/{user_id}/history"' in text


class TestWithRedis:
    async def test_events_flow_through_redis(
        self, tiny_artifacts: Path, redis_url: str, key_prefix: str
    ) -> None:
        import redis.asyncio as aioredis

        settings = Settings(artifacts_dir=tiny_artifacts, redis_url=redis_url,
                            redis_prefix=key_prefix)
        async with running(settings) as c:
            assert (await c.get("/readyz")).status_code == 200
            assert len(await history_of(c, "1")) == 200  # seeded into Redis, capped
            r = await c.post("/recommend", json={"user_id": "1", "k": 3})
            top = r.json()["items"][0]["item_id"]
            await c.post("/events", json={"events": [{"user_id": "1", "item_id": top}]})
            r = await c.post("/recommend", json={"user_id": "1", "k": 10})
            assert top not in {x["item_id"] for x in r.json()["items"]}
        raw = aioredis.from_url(redis_url)
        try:
            assert await raw.sismember(f"{key_prefix}u:1:seen", top)
        finally:
            await raw.aclose()
