"""Experiment state shared by replicas: two app instances on one Redis; a share change through
one is served by the other within about one sync interval, versioned, and outlives restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.experiments import Experiment, assign
from tests.helpers import delete_keys, running

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "sync-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SYNC_S = 0.2
EXPERIMENT = {
    "name": "sync-test",
    "salt": "sync-1",
    "arms": [
        {"name": "control", "path": "cascade", "share": 0.5, "params": {"diversity": 0.0}},
        {"name": "treatment", "path": "cascade", "share": 0.5, "params": {"diversity": 0.5}},
    ],
}
USERS = [f"sync-user-{i}" for i in range(40)]


def replica(url: str, prefix: str, artifacts: Path) -> Settings:
    return Settings(redis_url=url, redis_prefix=prefix, artifacts_dir=artifacts.parent.parent,
                    experiment_json=json.dumps(EXPERIMENT), admin_token=TOKEN,
                    seed_store=False, experiment_sync_s=SYNC_S)


async def arms_served(c: httpx.AsyncClient) -> list[str]:
    out = []
    for user in USERS:
        r = await c.post("/recommend", json={"user_id": user, "k": 3})
        assert r.status_code == 200, r.text
        out.append(r.json()["arm"])
    return out


async def experiment(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/admin/experiment", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


async def put(c: httpx.AsyncClient, shares: dict[str, float]) -> httpx.Response:
    return await c.put("/admin/experiment/shares", headers=AUTH, json={"shares": shares})


async def test_share_change_reaches_the_other_replica(
    redis_url: str, key_prefix: str, tiny_artifacts: Path
) -> None:
    old = Experiment.model_validate(EXPERIMENT)
    new = old.with_shares({"control": 0.1, "treatment": 0.9})
    try:
        async with running(replica(redis_url, key_prefix, tiny_artifacts)) as a, \
                running(replica(redis_url, key_prefix, tiny_artifacts)) as b:
            assert await arms_served(b) == [assign(old, u).name for u in USERS]
            assert (await experiment(b))["revision"] == 0
            r = await put(a, {"control": 0.1})  # treatment's share is implied... and checked
            assert r.status_code == 422
            t0 = time.perf_counter()
            r = await put(a, {"control": 0.1, "treatment": 0.9})
            assert r.status_code == 200 and r.json()["revision"] == 1
            while (await experiment(b))["revision"] != 1:
                assert time.perf_counter() - t0 < 5 * SYNC_S + 1.0, "B never applied it"
                await asyncio.sleep(0.02)
            print(f"replica B applied revision 1 after {time.perf_counter() - t0:.3f}s")
            served = await arms_served(b)
            assert served == [assign(new, u).name for u in USERS]
            assert served != [assign(old, u).name for u in USERS]
            text = (await b.get("/metrics")).text
            assert "genrec_experiment_revision 1.0" in text

            # Changes from either side stack up in order: B's change is built on A's.
            r = await put(b, {"control": 0.3, "treatment": 0.7})
            assert r.status_code == 200 and r.json()["revision"] == 2
            await asyncio.sleep(3 * SYNC_S)
            shares = {x["name"]: x["share"] for x in (await experiment(a))["arms"]}
            assert shares == {"control": 0.3, "treatment": 0.7}

        # A replica started later (or restarted) picks the stored split up.
        async with running(replica(redis_url, key_prefix, tiny_artifacts)) as c:
            await asyncio.sleep(2 * SYNC_S)
            body = await experiment(c)
            assert body["revision"] == 2
            assert {x["name"]: x["share"] for x in body["arms"]} == {"control": 0.3,
                                                                      "treatment": 0.7}
    finally:
        await delete_keys(redis_url, key_prefix)


async def test_concurrent_changes_are_serialised(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    # The admin endpoints need no artifacts.
    settings = replica(redis_url, key_prefix, tmp_path / "none" / "x")
    try:
        async with running(settings) as a, running(settings) as b:
            got = await asyncio.gather(put(a, {"control": 0.2, "treatment": 0.8}),
                                       put(b, {"control": 0.6, "treatment": 0.4}))
            assert [r.status_code for r in got] == [200, 200]
            assert sorted(r.json()["revision"] for r in got) == [1, 2]
            last = max(got, key=lambda r: r.json()["revision"]).json()
            await asyncio.sleep(3 * SYNC_S)
            for c in (a, b):
                body = await experiment(c)
                assert body["revision"] == 2
                assert [x["share"] for x in body["arms"]] == [x["share"] for x in last["arms"]]
    finally:
        await delete_keys(redis_url, key_prefix)


async def test_embedded_store_keeps_the_local_behaviour(tmp_path: Path) -> None:
    settings = Settings(artifacts_dir=tmp_path / "none", admin_token=TOKEN,
                        experiment_json=json.dumps(EXPERIMENT))
    async with running(settings) as c:
        r = await put(c, {"control": 0.25, "treatment": 0.75})
        assert r.status_code == 200 and r.json()["revision"] == 1
        assert [x["share"] for x in (await experiment(c))["arms"]] == [0.25, 0.75]
