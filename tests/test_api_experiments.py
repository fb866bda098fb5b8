"""The A/B layer through the ASGI app: sticky arms, forced paths, exposures, click attribution,
per-arm metrics and the admin endpoints. Two arms on the cascade path (different diversity), so
nothing here depends on the generative path being served."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.engine.paths.cascade import Cascade
from models.engine.rank.fusion import FusionPlan
from service.app import create_app
from service.config import Settings
from service.experiments import Arm, Experiment, ExperimentConfigError, assign
from service.loader import check_arms
from service.state import AppState
from tests.helpers import running

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXPERIMENT = {
    "name": "diversity-test",
    "salt": "div-1",
    "arms": [
        {"name": "control", "path": "cascade", "share": 0.5, "params": {"diversity": 0.0}},
        {"name": "treatment", "path": "cascade", "share": 0.5, "params": {"diversity": 0.5}},
    ],
}



def ab_settings(artifacts: Path, **over: Any) -> Settings:
    return Settings(artifacts_dir=artifacts, experiment_json=json.dumps(EXPERIMENT),
                    admin_token=TOKEN, **over)


@pytest.fixture(scope="module")
async def client(tiny_artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running(ab_settings(tiny_artifacts)) as c:
        assert (await c.get("/readyz")).status_code == 200
        yield c


@pytest.fixture
async def split(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Restores the configured 50/50 split after a test that changes it."""
    yield
    r = await client.put("/admin/experiment/shares", headers=AUTH,
                         json={"shares": {"control": 0.5, "treatment": 0.5}})
    assert r.status_code == 200


def app_state(client: httpx.AsyncClient) -> AppState:
    return client._transport.app.state.genrec  # type: ignore[attr-defined]


def loc_of(r: httpx.Response) -> list:
    return r.json()["detail"][0]["loc"]


async def recommend(client: httpx.AsyncClient, user: str, **body: Any) -> dict:
    r = await client.post("/recommend", json={"user_id": user, "k": 5, **body})
    assert r.status_code == 200, r.text
    return r.json()


async def counters(client: httpx.AsyncClient) -> dict[str, tuple[int, int]]:
    r = await client.get("/admin/experiment", headers=AUTH)
    assert r.status_code == 200
    return {a["name"]: (a["exposures"], a["clicks"]) for a in r.json()["arms"]}


async def test_sticky_arm_per_user(client: httpx.AsyncClient) -> None:
    exp = Experiment.model_validate(EXPERIMENT)
    seen = set()
    for i in range(30):
        user = f"sticky-{i}"
        first, second = await recommend(client, user), await recommend(client, user)
        assert first["arm"] == second["arm"] == assign(exp, user).name
        assert first["path"] == "cascade" and len(first["request_id"]) == 32
        assert first["request_id"] != second["request_id"]
        seen.add(first["arm"])
    assert seen == {"control", "treatment"}


async def test_scores_follow_the_served_order(client: httpx.AsyncClient) -> None:
    # Both arms (the treatment reranks for diversity), seeded and cold users: score never
    # rises down the list, and the fused relevance is its own field.
    for user in ("1", "5", "13", "196", "405", "cold-user-x"):
        items = (await recommend(client, user, k=20))["items"]
        scores = [x["score"] for x in items]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(x["relevance"], float) for x in items)


async def test_arm_params_checked_at_load(client: httpx.AsyncClient) -> None:
    assert app_state(client).arm_params == {"control": {"diversity": 0.0},
                                            "treatment": {"diversity": 0.5}}


async def test_forced_path(client: httpx.AsyncClient) -> None:
    before = await counters(client)
    for i in range(10):  # whatever the hashed arm, the first arm serving the path answers
        body = await recommend(client, f"forced-{i}", path="cascade")
        assert body["arm"] == "control" and body["path"] == "cascade"
    assert await counters(client) == before  # QA traffic is not an exposure
    r = await client.post("/recommend", json={"user_id": "1", "path": "generative"})
    assert r.status_code == 422 and loc_of(r) == ["body", "path"]
    assert "not served by any arm" in r.json()["detail"][0]["msg"]
    r = await client.post("/recommend", json={"user_id": "1", "path": "tdm"})
    assert r.status_code == 422 and loc_of(r) == ["body", "path"]


async def test_exposure_and_click_attribution(client: httpx.AsyncClient) -> None:
    user = f"click-{uuid.uuid4().hex}"
    before = await counters(client)
    body = await recommend(client, user)
    arm, rid = body["arm"], body["request_id"]
    items = [x["item_id"] for x in body["items"]]
    exposure = await app_state(client).exposures.get_exposure(rid)  # type: ignore[attr-defined]
    assert exposure.arm == arm and list(exposure.item_ids) == items and exposure.user_id == user
    after = await counters(client)
    assert after[arm] == (before[arm][0] + 1, before[arm][1])

    def ev(item: str, type_: str = "click", request_id: str | None = rid) -> dict:
        return {"user_id": user, "item_id": item, "type": type_, "request_id": request_id}

    r = await client.post("/events", json={"events": [ev(items[0])]})
    assert r.status_code == 200 and r.json() == {"accepted": 1}
    assert (await counters(client))[arm] == (after[arm][0], after[arm][1] + 1)
    # The same click again, a purchase of the same item, a view, an item not in the list, an
    # unknown (or expired) request id, no request id: all accepted, none counted.
    not_shown = next(str(i) for i in range(1, 1700) if str(i) not in items)
    again = [ev(items[0]), ev(items[0], "purchase"), ev(items[1], "view"), ev(not_shown),
             ev(items[1], request_id="f" * 32), ev(items[1], request_id=None)]
    r = await client.post("/events", json={"events": again})
    assert r.status_code == 200 and r.json() == {"accepted": 6}
    assert (await counters(client))[arm] == (after[arm][0], after[arm][1] + 1)
    # A like of another shown item counts.
    await client.post("/events", json={"events": [ev(items[2], "like")]})
    assert (await counters(client))[arm] == (after[arm][0], after[arm][1] + 2)


@pytest.mark.parametrize("request_id", ["", "x" * 65, "a b", "../x", "\ud800", 5, ["r"]])
async def test_bad_request_id_is_422_and_writes_nothing(
    client: httpx.AsyncClient, request_id: Any
) -> None:
    user = f"bad-rid-{uuid.uuid4().hex}"
    events = [{"user_id": user, "item_id": "1", "type": "click"},
              {"user_id": user, "item_id": "2", "type": "click", "request_id": request_id}]
    # json.dumps escapes a lone surrogate as \ud800, as a hostile client would send it.
    r = await client.post("/events", content=json.dumps({"events": events}),
                          headers={"content-type": "application/json"})
    assert r.status_code == 422 and loc_of(r) == ["body", "events", 1, "request_id"]
    r = await client.get(f"/users/{user}/history")
    assert r.json()["items"] == []


async def test_per_arm_metrics(client: httpx.AsyncClient) -> None:
    body = await recommend(client, "5")  # a seeded user: the full cascade runs
    arm = body["arm"]
    await client.post("/events", json={"events": [
        {"user_id": "5", "item_id": body["items"][0]["item_id"], "type": "click",
         "request_id": body["request_id"]}]})
    text = (await client.get("/metrics")).text
    assert f'genrec_ab_requests_total{{arm="{arm}",path="cascade"}}' in text
    assert f'genrec_ab_latency_seconds_count{{arm="{arm}"}}' in text
    assert f'genrec_ab_exposures_total{{arm="{arm}"}}' in text
    assert f'genrec_ab_clicks_total{{arm="{arm}"}}' in text
    assert 'genrec_ab_share{arm="control"}' in text
    assert 'genrec_stage_latency_seconds_count{path="cascade",stage="fusion"}' in text


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ({"Authorization": "Bearer"}, 401),
    ({"Authorization": TOKEN}, 401),
    ({"Authorization": "Bearer wrong"}, 403),
    ({"Authorization": f"Bearer {TOKEN}x"}, 403),
    ({"Authorization": "Bearer é".encode()}, 403),  # non-ASCII bytes on the wire
    (AUTH, 200),
    ({"Authorization": f"bearer {TOKEN}"}, 200),
])
async def test_admin_auth(client: httpx.AsyncClient, headers: dict, status: int) -> None:
    r = await client.get("/admin/experiment", headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    if status != 200:
        assert loc_of(r) == ["header", "authorization"]
        r = await client.put("/admin/experiment/shares", headers=headers,
                             json={"shares": {"control": 0.9, "treatment": 0.1}})
        assert r.status_code == status
        assert [a["share"] for a in (await client.get("/admin/experiment", headers=AUTH)
                                     ).json()["arms"]] == [0.5, 0.5]


async def test_admin_read(client: httpx.AsyncClient) -> None:
    body = (await client.get("/admin/experiment", headers=AUTH)).json()
    assert body["name"] == "diversity-test" and body["salt"] == "div-1"
    arms = {a["name"]: a for a in body["arms"]}
    assert arms["treatment"]["params"] == {"diversity": 0.5}
    assert arms["control"]["path"] == "cascade" and arms["control"]["share"] == 0.5
    for a in arms.values():
        assert a["ctr"] == (a["clicks"] / a["exposures"] if a["exposures"] else None)


async def test_share_change_takes_effect(client: httpx.AsyncClient, split: None) -> None:
    users = [f"shift-{i}" for i in range(40)]
    old = Experiment.model_validate(EXPERIMENT)
    r = await client.put("/admin/experiment/shares", headers=AUTH,
                         json={"shares": {"control": 0.1, "treatment": 0.9}})
    assert r.status_code == 200
    assert {a["name"]: a["share"] for a in r.json()["arms"]} == {"control": 0.1,
                                                                 "treatment": 0.9}
    new = old.with_shares({"control": 0.1, "treatment": 0.9})
    got = [(await recommend(client, u))["arm"] for u in users]
    assert got == [assign(new, u).name for u in users]
    assert got != [assign(old, u).name for u in users]  # some users moved
    assert 'genrec_ab_share{arm="control"} 0.1' in (await client.get("/metrics")).text


@pytest.mark.parametrize(("shares", "loc"), [
    ({"nope": 0.5, "control": 0.5}, ["body", "shares", "nope"]),
    ({"control": 0.0, "treatment": 1.0}, ["body", "shares", "control"]),
    ({"control": -0.5, "treatment": 1.5}, ["body", "shares", "control"]),
    ({"control": "0.5", "treatment": 0.5}, ["body", "shares", "control"]),
    ({"control": True}, ["body", "shares", "control"]),
    ({"control": None}, ["body", "shares", "control"]),
    ({"control": 0.7}, ["body", "shares"]),  # 0.7 + 0.5 != 1
    ({}, ["body", "shares"]),
    ([0.5, 0.5], ["body", "shares"]),
])
async def test_bad_shares_name_field_and_keep_split(
    client: httpx.AsyncClient, shares: Any, loc: list
) -> None:
    r = await client.put("/admin/experiment/shares", headers=AUTH, json={"shares": shares})
    assert r.status_code == 422 and loc_of(r) == loc, r.text
    r = await client.put("/admin/experiment/shares",
                         headers={**AUTH, "content-type": "application/json"},
                         content=b'{"shares": {"control": NaN, "treatment": 0.5}}')
    assert r.status_code == 422 and loc_of(r) == ["body", "shares", "control"]
    r = await client.put("/admin/experiment/shares", headers=AUTH, json={"share": {}})
    assert r.status_code == 422
    body = (await client.get("/admin/experiment", headers=AUTH)).json()
    assert [a["share"] for a in body["arms"]] == [0.5, 0.5]


@pytest.mark.parametrize(("url", "body", "field"), [
    ("/recall", {"user_id": "1", "method": "semantic_id", "k": 5}, "method"),
    ("/rank", {"user_id": "1", "item_ids": ["1", "2"], "model": "hstu"}, "model"),
])
async def test_new_stage_literals_never_500(
    client: httpx.AsyncClient, url: str, body: dict, field: str
) -> None:
    # 200 once the component is registered; until then a 422 naming the field.
    r = await client.post(url, json=body)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert loc_of(r) == ["body", field] and "not available" in r.text


# ---- configuration ---------------------------------------------------------------------------


def test_bad_experiment_fails_at_app_creation(tmp_path: Path) -> None:
    bad = dict(EXPERIMENT, arms=[dict(EXPERIMENT["arms"][0], share=0.0)])
    with pytest.raises(ExperimentConfigError, match="GENREC_EXPERIMENT_JSON: arms.0.share: "):
        create_app(Settings(experiment_json=json.dumps(bad)))
    with pytest.raises(ExperimentConfigError, match="nope.json: cannot read"):
        create_app(Settings(experiment_file=tmp_path / "nope.json"))


def test_check_arms_names_unserved_path_and_bad_params() -> None:
    exp = Experiment(name="e", salt="s", arms=(
        Arm(name="c", path="cascade", share=0.5),
        Arm(name="g", path="generative", share=0.5, params={"beam_width": 4})))
    cascade = Cascade(FusionPlan({}, {}), {}, None, None, popular=None)  # type: ignore[arg-type]
    with pytest.raises(ExperimentConfigError,
                       match=r"arms.1 \('g'\): path: 'generative' is not served.*cascade"):
        check_arms(exp, {"cascade": cascade})
    exp = exp.model_copy(update={"arms": (Arm(name="c", path="cascade", share=1.0,
                                              params={"temperature": 0.7}),)})
    with pytest.raises(ExperimentConfigError, match=r"arms.0 \('c'\): params.temperature"):
        check_arms(exp, {"cascade": cascade})


async def test_arm_rejected_by_pipeline_fails_readiness(tiny_artifacts: Path) -> None:
    bad = dict(EXPERIMENT, arms=[dict(EXPERIMENT["arms"][0], share=1.0,
                                      params={"diversity": 2.0})])
    settings = Settings(artifacts_dir=tiny_artifacts, experiment_json=json.dumps(bad),
                        seed_store=False)
    async with running(settings) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        assert "arms.0 ('control'): params.diversity" in r.json()["error"]
        assert (await c.post("/recommend", json={"user_id": "1"})).status_code == 503


async def test_admin_disabled_without_token(tmp_path: Path) -> None:
    async with running(Settings(artifacts_dir=tmp_path / "missing")) as c:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            r = await c.get("/admin/experiment", headers=headers)
            assert r.status_code == 403 and "disabled" in r.text


# ---- hostile admin traffic: never a 5xx ------------------------------------------------------

junk = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
share_bodies = st.one_of(
    junk,
    st.fixed_dictionaries({"shares": st.dictionaries(
        st.sampled_from(["control", "treatment", "nope", "", "\ud800", "x" * 65]),
        st.floats() | st.integers(-2, 2) | st.sampled_from([0.5, 0.25, 0.75, 1e308]) | junk,
        max_size=3)}),
)
auth_headers = st.sampled_from([None, f"Bearer {TOKEN}", "Bearer nope", "Bearer", "Basic x",
                                TOKEN, f"Bearer {TOKEN} extra", "Bearer \u00ff"])


@pytest.fixture(scope="module")
def sync_admin() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    # The admin endpoints don't need artifacts, so this app never loads any; a private loop
    # because hypothesis runs sync test functions (as in test_api_fuzz.py).
    app = create_app(Settings(artifacts_dir=Path("/nonexistent"), admin_token=TOKEN,
                              experiment_json=json.dumps(EXPERIMENT)))
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        yield loop, http
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=share_bodies, auth=auth_headers, raw=st.booleans())
def test_fuzz_admin_never_5xx(sync_admin: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient],
                              body: Any, auth: str | None, raw: bool) -> None:
    loop, http = sync_admin
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = auth
    content = json.dumps(body).encode()
    if raw:
        content = content[: len(content) // 2]
    try:
        r = loop.run_until_complete(
            http.put("/admin/experiment/shares", content=content, headers=headers))
    except UnicodeEncodeError:
        return  # a header no client can send
    assert r.status_code < 500, r.text
    json.loads(r.content, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    if r.status_code == 200:  # put the split back for the next example
        loop.run_until_complete(http.put(
            "/admin/experiment/shares", headers={"authorization": f"Bearer {TOKEN}"},
            json={"shares": {"control": 0.5, "treatment": 0.5}}))
    g = loop.run_until_complete(http.get("/admin/experiment", headers=headers))
    assert g.status_code < 500


# ---- Redis ---------------------------------------------------------------------------------


class TestWithRedis:
    async def test_attribution_through_redis(
        self, tiny_artifacts: Path, redis_url: str, key_prefix: str
    ) -> None:
        import redis.asyncio as aioredis

        settings = ab_settings(tiny_artifacts, redis_url=redis_url, redis_prefix=key_prefix,
                               seed_store=False)
        async with running(settings) as c:
            assert (await c.get("/readyz")).status_code == 200
            body = await recommend(c, "redis-user")
            arm, rid = body["arm"], body["request_id"]
            click = {"user_id": "redis-user", "item_id": body["items"][0]["item_id"],
                     "type": "click", "request_id": rid}
            for _ in range(2):
                assert (await c.post("/events", json={"events": [click]})).status_code == 200
            assert (await counters(c))[arm] == (1, 1)
        raw = aioredis.from_url(redis_url)
        try:
            assert await raw.xlen(f"{key_prefix}ab:exposures") == 1
            counts = await raw.hgetall(f"{key_prefix}ab:counts:diversity-test")
            assert counts == {f"exposures:{arm}".encode(): b"1", f"clicks:{arm}".encode(): b"1"}
            keys = [k async for k in raw.scan_iter(match=f"{key_prefix}*")]
            await raw.delete(*keys)
        finally:
            await raw.aclose()
