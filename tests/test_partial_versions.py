"""A progressive build's early versions hold only some components. The engine serves every
path from what is live, flags the answer ``partial``, and keeps the pipeline contract (k
distinct, unblocked, in-range items); a version that does not say it is partial must still be
whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.artifacts.manifest import MANIFEST
from models.artifacts.versions import file_table
from models.engine.core.context import make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.registry import COMPONENTS, PATHS

pytestmark = pytest.mark.usefixtures("one_thread")


def keep_only(src: Path, dst: Path, keep: set[str], partial: bool = True) -> Path:
    """A copy of version ``src`` without the files of every component not in ``keep``."""
    shutil.copytree(src, dst)
    for comp in COMPONENTS:
        if comp.name not in keep:
            for f in comp.files:
                (dst / f).unlink(missing_ok=True)
    man = orjson.loads((dst / MANIFEST).read_bytes())
    man["partial"] = partial
    man["training"] = [c.name for c in COMPONENTS if c.name not in keep] if partial else []
    man["files"] = file_table(dst)  # as a progressive build lists its partial versions
    (dst / MANIFEST).write_bytes(orjson.dumps(man))
    return dst


def check_answers(rt: Runtime, k: int = 10) -> dict[str, set[str]]:
    """Runs every path for a few known users; -> path -> the recall sources its stages named."""
    comp = build_components(rt, EngineSettings())
    assert set(comp.pipelines) == set(PATHS)
    used: dict[str, set[str]] = {p: set() for p in comp.pipelines}
    for u in range(3):
        hist = list(range(u * 7, u * 7 + 5))
        ctx = make_context(rt, rt.users.ids[u], hist, blocked=hist)
        for name, pipe in comp.pipelines.items():
            res = pipe.run(ctx, k)
            items = res.items.tolist()
            assert len(items) == k == len(set(items))
            assert all(0 <= i < rt.n_items and i not in hist for i in items)
            for st in res.stages:
                if st.name == "recall":
                    used[name].update(st.source.split("+"))
            assert res.partial == pipe.partial
    return used


def test_popularity_and_itemcf_only(tiny_artifacts: Path, tmp_path: Path) -> None:
    rt = Runtime.load(keep_only(tiny_artifacts, tmp_path / "v", {"popularity", "itemcf"}))
    assert rt.components == {"popularity", "itemcf"}
    comp = build_components(rt, EngineSettings())
    assert all(p.partial for p in comp.pipelines.values())
    assert comp.rerankers == {}  # they need the two-tower's item vectors
    used = check_answers(rt)
    assert all(sources <= {"itemcf", "popular"} for sources in used.values())


def test_path_without_its_ranker_is_partial_the_other_whole(tiny_artifacts: Path,
                                                             tmp_path: Path) -> None:
    everything = {c.name for c in COMPONENTS}
    rt = Runtime.load(keep_only(tiny_artifacts, tmp_path / "v", everything - {"din"}))
    comp = build_components(rt, EngineSettings())
    assert comp.pipelines["cascade"].partial and comp.pipelines["cascade"].reranker is None
    assert not comp.pipelines["generative"].partial
    check_answers(rt)


def test_whole_version_is_not_partial(tiny_artifacts: Path) -> None:
    comp = build_components(Runtime.load(tiny_artifacts), EngineSettings())
    assert not any(p.partial for p in comp.pipelines.values())


@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.9])
def test_scores_agree_with_the_order(tiny_artifacts: Path, diversity: float) -> None:
    """After the diversity rerank the list's scores still never increase down the list (a
    client sorting by score keeps the rerank); each item's relevance comes with it."""
    rt = Runtime.load(tiny_artifacts)
    comp = build_components(rt, EngineSettings())
    for u in range(5):
        hist = list(range(u * 11, u * 11 + 6))
        ctx = make_context(rt, rt.users.ids[u], hist, blocked=hist)
        for pipe in comp.pipelines.values():
            res = pipe.run(ctx, 10, {"diversity": diversity})
            assert np.all(np.diff(res.scores) <= 0)
            assert res.relevance is not None and len(res.relevance) == 10
            if diversity == 0.0:
                np.testing.assert_array_equal(res.relevance, res.scores)


def test_missing_component_of_a_whole_version_still_fails(tiny_artifacts: Path,
                                                          tmp_path: Path) -> None:
    everything = {c.name for c in COMPONENTS}
    v = keep_only(tiny_artifacts, tmp_path / "v", everything - {"din"}, partial=False)
    with pytest.raises(FileNotFoundError, match="din"):
        Runtime.load(v)



async def test_api_answers_both_paths_from_a_partial_version(tiny_artifacts: Path,
                                                             tmp_path: Path) -> None:
    """The default experiment serves both paths; on a version holding only popularity and
    ItemCF each answers 200, flagged partial, from the live sources."""
    from service.config import Settings
    from tests.helpers import running

    v = keep_only(tiny_artifacts, tmp_path / "v", {"popularity", "itemcf"})
    async with running(Settings(artifacts_dir=v, reload_poll_s=0)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["models"]["itemcf"] == "live"
        assert "two_tower" in ready.json()["training"]  # what the build is still training
        for path in PATHS:
            r = await client.post("/recommend", json={"user_id": "1", "k": 7, "path": path})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["path"] == path and body["partial"] is True
            assert len({x["item_id"] for x in body["items"]}) == 7
            assert body["stages"][0]["source"] in ("itemcf", "itemcf+popular")
        whole = keep_only(tiny_artifacts, tmp_path / "w", {c.name for c in COMPONENTS})
    async with running(Settings(artifacts_dir=whole, reload_poll_s=0)) as client:
        r = await client.post("/recommend", json={"user_id": "1", "path": "generative"})
        assert r.status_code == 200 and r.json()["partial"] is False


def test_progressive_build_publishes_servable_steps(tiny_artifacts: Path) -> None:
    """The session's tiny build runs with ``progressive=True`` (tests/conftest.py): every
    step it published serves both paths, holds more recall sources than the one before, and
    only the last is complete."""
    from models.artifacts.manifest import artifacts_complete
    from models.artifacts.versions import VERSIONS

    root = tiny_artifacts.parent.parent
    found = {v: orjson.loads((v / MANIFEST).read_bytes()) for v in (root / VERSIONS).iterdir()}
    steps = sorted(found, key=lambda v: found[v]["created_at"])
    manifests = [found[v] for v in steps]
    assert [m["partial"] for m in manifests] == [True] * (len(steps) - 1) + [False]
    assert len(steps) >= 4 and steps[-1] == tiny_artifacts and artifacts_complete(root)
    assert manifests[-1]["training"] == []
    sources = 0
    for v, m in zip(steps[:-1], manifests, strict=False):
        rt = Runtime.load(v)
        assert set(m["training"]).isdisjoint(rt.components) and m["training"]
        live = len(build_components(rt, EngineSettings()).recall)
        assert live > sources
        sources = live
        check_answers(rt)
