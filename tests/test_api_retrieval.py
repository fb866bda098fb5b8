"""Recall sources through the ASGI app (tiny ml-100k artifacts): every method honours consumed
and excluded items without starving k, the sequential retrievers equal brute-force MIPS over
their item vectors, and an A/B arm can name its own recall sources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from models.data import load_dataset
from models.engine.paths.cascade import Cascade
from models.nets.features import pad_histories
from service.config import Settings
from service.experiments import ExperimentConfigError
from tests.helpers import running

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Every recall method the tiny artifacts serve; "tdm" joins once its artifacts are built.
METHODS = ["popular", "itemcf", "ann", "gru4rec", "sasrec", "hstu", "tdm", "semantic_id"]
SEQUENTIAL = ["gru4rec", "sasrec", "hstu"]
EXPERIMENT = {
    "name": "recall-source",
    "salt": "rs-1",
    "arms": [
        {"name": "sasrec-only", "path": "cascade", "share": 0.5,
         "params": {"recall": {"sasrec": 60}}},
        {"name": "gru-then-itemcf", "path": "cascade", "share": 0.5,
         "params": {"recall": {"gru4rec": 40, "itemcf": 40}}},
    ],
}


@pytest.fixture(scope="module")
async def client(tiny_artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(artifacts_dir=tiny_artifacts, experiment_json=json.dumps(EXPERIMENT))
    async with running(settings) as c:
        assert (await c.get("/readyz")).status_code == 200
        yield c


def served(client: httpx.AsyncClient) -> set[str]:
    return set(client._transport.app.state.genrec.components.recall)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def consumed() -> dict[str, set[str]]:
    ds = load_dataset("ml-100k")
    return {ds.users.ids[u]: {ds.items.ids[i] for i in seq.tolist()}
            for u, seq in enumerate(ds.sequences)}


async def recall(client: httpx.AsyncClient, **body: object) -> list[str]:
    r = await client.post("/recall", json=body)
    assert r.status_code == 200, r.text
    return [x["item_id"] for x in r.json()["items"]]


@pytest.mark.parametrize("method", METHODS)
async def test_exclusions_honoured_without_starving_k(
    client: httpx.AsyncClient, method: str, consumed: dict[str, set[str]]
) -> None:
    if method not in served(client):
        pytest.skip(f"{method} is not built by the tiny profile")
    first = await recall(client, user_id="12", method=method, k=30)
    assert first and not set(first) & consumed["12"]
    banned = first[:10]
    second = await recall(client, user_id="12", method=method, k=30, exclude_item_ids=banned)
    assert not set(second) & (consumed["12"] | set(banned))
    assert len(second) == len(set(second))
    if method != "itemcf":  # ItemCF proposes only neighbours of the recent history
        assert len(first) == len(second) == 30
        # The unbanned part of the first list keeps its order at the head of the second.
        assert second[:20] == first[10:]


@pytest.mark.parametrize("method", SEQUENTIAL)
async def test_sequential_recall_is_exact_mips(client: httpx.AsyncClient, method: str) -> None:
    state = client._transport.app.state.genrec  # type: ignore[attr-defined]
    rt = state.runtime
    model = state.components.recall[method].model
    history = ["50", "181", "100", "258"]
    got = await recall(client, history=history, method=method, k=25)
    dense = [rt.items.index[i] for i in history]
    L = state.components.recall[method].max_len
    with torch.inference_mode():
        u = model.user_vector(pad_histories([np.array(dense)], L, rt.n_items))[0]
        scores = (model.item_vectors() @ u).numpy()  # (n_items,)
    scores[dense] = -np.inf  # the given history is consumed
    want = [rt.items.ids[i] for i in np.argsort(-scores, kind="stable")[:25]]
    # Same set; order may differ only between (near-)equal float32 scores.
    assert set(got) == set(want)
    assert got[:5] == want[:5]


async def test_arm_picks_its_recall_sources(client: httpx.AsyncClient) -> None:
    seen: dict[str, set[str]] = {}
    for user in map(str, range(1, 60)):
        r = await client.post("/recommend", json={"user_id": user, "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        recall_stage = next(s for s in body["stages"] if s["name"] == "recall")
        seen.setdefault(body["arm"], set()).add(recall_stage["source"])
    assert seen["sasrec-only"] == {"sasrec"}
    assert seen["gru-then-itemcf"] <= {"gru4rec+itemcf", "gru4rec+itemcf+popular"}


async def test_arm_recall_param_is_validated(tiny_artifacts: Path) -> None:
    from models.engine.core.runtime import Runtime
    from models.engine.recall.popular import PopularRecall
    from models.nets.popularity import Popularity

    rt = Runtime.load(tiny_artifacts)
    popular = PopularRecall(Popularity.from_state(rt.arrays["popularity"]))
    cascade = Cascade([(popular, 10)], None, None, popular, available={"popular": popular})
    assert cascade.check_params({"recall": {"popular": 5}}) == {"recall": [("popular", 5)]}
    for bad, field in [({"recall": {"nope": 5}}, "params.recall.nope"),
                       ({"recall": {"popular": 0}}, "params.recall.popular"),
                       ({"recall": {"popular": 2.5}}, "params.recall.popular"),
                       ({"recall": {"popular": True}}, "params.recall.popular"),
                       ({"recall": []}, "params.recall"),
                       ({"recall": {}}, "params.recall")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            cascade.check_params(bad)


async def test_unknown_recall_source_in_experiment_fails_start(tiny_artifacts: Path) -> None:
    bad = {**EXPERIMENT, "arms": [{"name": "x", "path": "cascade", "share": 1.0,
                                   "params": {"recall": {"word2vec": 10}}}]}
    settings = Settings(artifacts_dir=tiny_artifacts, experiment_json=json.dumps(bad))
    async with running(settings) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        error = c._transport.app.state.genrec.load_error  # type: ignore[attr-defined]
        assert error.startswith(ExperimentConfigError.__name__)
        assert "params.recall.word2vec" in error
