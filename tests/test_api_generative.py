"""`path: generative` through the ASGI app: an experiment with a cascade arm and a generative
arm, forced paths, the generative stage list, exclusions, per-arm metrics and exposures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from models.engine.rank.fusion import FusionPlan
from service.config import Settings
from service.experiments import Experiment, assign
from tests.helpers import running

EXPERIMENT = {
    "name": "paths",
    "salt": "paths-1",
    "arms": [
        {"name": "classic", "path": "cascade", "share": 0.5},
        {"name": "gen", "path": "generative", "share": 0.5,
         "params": {"n_candidates": 60, "beam_size": 60, "last_stage": "rank"}},
    ],
}


@pytest.fixture(scope="module")
async def client(tiny_artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(artifacts_dir=tiny_artifacts, experiment_json=json.dumps(EXPERIMENT))
    async with running(settings) as c:
        assert (await c.get("/readyz")).status_code == 200
        yield c


async def test_forced_generative_path(client: httpx.AsyncClient, tiny_artifacts: Path) -> None:
    hist = (await client.get("/users/13/history", params={"limit": 1000})).json()["items"]
    consumed = {x["item_id"] for x in hist}
    r = await client.post("/recommend", json={"user_id": "13", "k": 12, "path": "generative",
                                              "exclude_item_ids": ["50", "100", "181"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"] == "generative" and body["arm"] == "gen" and body["request_id"]
    ids = [x["item_id"] for x in body["items"]]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert not set(ids) & (consumed | {"50", "100", "181"})
    stages = [(s["name"], s["source"]) for s in body["stages"]]
    # The generator runs first, then whatever sources the fitted plan added.
    assert stages[0][0] == "recall" and stages[0][1].split("+")[0] == "semantic_id"
    plan = FusionPlan.from_dict(
        json.loads((tiny_artifacts / "fusion.json").read_text())["generative"])
    assert (("rank", "hstu") in stages) == plan.uses_ranker
    # The arm's params reach the pipeline: its last_stage stops it before the reranker, and
    # its 60 generated candidates are all in the union.
    assert stages[-1] == ("fusion", "rrf")
    assert body["stages"][0]["candidates"] >= 60
    scores = [x["score"] for x in body["items"]]
    assert all(isinstance(s, float) for s in scores)


async def test_same_shape_as_cascade(client: httpx.AsyncClient) -> None:
    a = (await client.post("/recommend", json={"user_id": "7", "path": "cascade"})).json()
    b = (await client.post("/recommend", json={"user_id": "7", "path": "generative"})).json()
    assert set(a) == set(b) and a["path"] == "cascade" and b["path"] == "generative"
    assert a["arm"] == "classic" and len(a["items"]) == len(b["items"]) == 10


async def test_hashed_users_reach_both_paths(client: httpx.AsyncClient) -> None:
    exp = Experiment.model_validate(EXPERIMENT)
    seen = {}
    for u in [str(i) for i in range(1, 41)]:
        r = (await client.post("/recommend", json={"user_id": u, "k": 5})).json()
        assert r["arm"] == assign(exp, u).name
        assert r["path"] == exp.arm(r["arm"]).path
        seen[r["path"]] = seen.get(r["path"], 0) + 1
    assert set(seen) == {"cascade", "generative"}


async def test_generative_cold_start_and_history_override(client: httpx.AsyncClient) -> None:
    r = await client.post("/recommend", json={"user_id": "nobody-xyz", "k": 4,
                                              "path": "generative"})
    assert r.status_code == 200 and r.json()["cold_start"] and len(r.json()["items"]) == 4
    r = await client.post("/recommend", json={"user_id": "nobody-xyz", "k": 4,
                                              "path": "generative", "history": ["1", "2"]})
    body = r.json()
    assert r.status_code == 200 and not body["cold_start"]
    assert not {"1", "2"} & {x["item_id"] for x in body["items"]}


async def test_metrics_per_arm_for_both_paths(client: httpx.AsyncClient,
                                            tiny_artifacts: Path) -> None:
    body = (await client.post("/recommend", json={"user_id": "21", "path": "generative"})).json()
    text = (await client.get("/metrics")).text
    assert 'genrec_ab_requests_total{arm="gen",path="generative"}' in text
    # Every stage the answer reports is timed under its path; the ranker runs only where the
    # fitted fusion plan gave it a weight, so the stage list, not a fixed name, is the reference.
    names = {s["name"] for s in body["stages"]}
    assert "recall" in names
    for name in names:
        assert f'genrec_stage_latency_seconds_count{{path="generative",stage="{name}"}}' in text
    plan = FusionPlan.from_dict(
        json.loads((tiny_artifacts / "fusion.json").read_text())["generative"])
    assert ("rank" in names) == plan.uses_ranker
