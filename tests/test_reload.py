"""Versioned artifacts served with validated hot reload (``service.lifecycle``), through the
ASGI app: the watch on ``current`` and POST /admin/models/reload pick up a new version; a
corrupt or mismatched one is rejected naming the file while the old one keeps serving;
rollback serves the previous version and moves ``current``; requests during a swap all
answer; a corrupt ``current`` at start falls back to an older version.

Versions here are copies of the session's tiny build. A copy that should be told apart from
the original gets its least popular item made the most popular, so a cold user's first
recommendation says which version answered."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY
from safetensors.numpy import load_file, save_file

from models.artifacts.versions import (
    MANIFEST,
    VERSIONS,
    current_version,
    file_table,
    set_current,
)
from models.engine.core.context import make_context
from service.config import Settings
from service.state import AppState
from tests.helpers import running

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.usefixtures("one_thread")]

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COLD = "cold-user-never-seen"  # served by popularity: tells versions apart
POLL_S = 0.05


# --- versions on disk ------------------------------------------------------------------------


@pytest.fixture
def root(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A private artifacts root holding one version, a copy of the session's build (shared:
    never changed in place; its root also holds a progressive build's partial versions)."""
    out = tmp_path / "ml-100k"
    shutil.copytree(tiny_artifacts, out / VERSIONS / tiny_artifacts.name)
    set_current(out, tiny_artifacts.name)
    return out


def write_manifest(directory: Path, **changes: Any) -> None:
    manifest = orjson.loads((directory / MANIFEST).read_bytes())
    manifest.update(changes)
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest))


def copy_version(root: Path, name: str, edit: Callable[[Path], None] | None = None,
                 retable: bool = True) -> Path:
    """Publish a copy of the current version as ``name`` (newest by ``created_at``), after
    ``edit``; ``retable`` re-lists the checksums, so an edit passes ``verify``. ``current``
    is not moved."""
    dest = root / VERSIONS / name
    shutil.copytree(current_version(root), dest)
    if edit is not None:
        edit(dest)
    write_manifest(dest, version=name, created_at=datetime.now(UTC).isoformat())
    if retable:
        write_manifest(dest, files=file_table(dest))
    return dest


def boost_least_popular(version: Path) -> str:
    """Make the least popular item the most popular one; -> its external id."""
    path = version / "popularity.safetensors"
    pop = load_file(str(path))
    i = int(np.argmin(pop["window_counts"]))
    pop["window_counts"][i] = pop["counts"][i] = pop["counts"].max() + 1_000
    save_file(pop, str(path))
    return orjson.loads((version / "id_maps.json").read_bytes())["items"][i]


def boosted_version(root: Path, name: str) -> tuple[Path, str]:
    """A valid new version whose cold-start answer starts with another item; -> (it, item)."""
    items: list[str] = []
    version = copy_version(root, name, lambda v: items.append(boost_least_popular(v)))
    return version, items[0]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other content: only the checksum tells
    path.write_bytes(bytes(data))


def edit_json(path: Path, **config: Any) -> None:
    doc = orjson.loads(path.read_bytes())
    doc["config"].update(config)
    path.write_bytes(orjson.dumps(doc))


# --- the app ---------------------------------------------------------------------------------


def settings(root: Path, **over: Any) -> Settings:
    return Settings(**{"artifacts_dir": root, "admin_token": TOKEN, "reload_poll_s": 0,
                       "smoke_users": 2, **over})


@pytest.fixture
async def client(root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings(root)) as c:
        assert (await c.get("/readyz")).status_code == 200
        yield c


def state_of(client: httpx.AsyncClient) -> AppState:
    return client._transport.app.state.genrec  # type: ignore[attr-defined]


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("genrec_model_reloads_total", {"result": result}) or 0.0


async def models(client: httpx.AsyncClient) -> dict:
    r = await client.get("/admin/models", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


async def first_cold_item(client: httpx.AsyncClient) -> str:
    r = await client.post("/recommend", json={"user_id": COLD, "k": 3})
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["item_id"]


async def until(predicate: Callable[[], Any], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(POLL_S)


# --- tests -----------------------------------------------------------------------------------


async def test_watch_picks_up_a_new_version(root: Path) -> None:
    old = current_version(root)
    async with running(settings(root, reload_poll_s=POLL_S)) as c:
        before = await models(c)
        assert before["version"] == old.name and before["reloading"] is False
        assert [v["version"] for v in before["versions"]] == [old.name]
        swapped = reloads("swapped")
        new, item = boosted_version(root, "v2")
        assert await first_cold_item(c) != item
        set_current(root, "v2")

        async def on_v2() -> bool:
            return (await models(c))["version"] == "v2"

        await until(on_v2)
        body = await models(c)
        assert body["directory"] == str(new.resolve()) and body["last_rejection"] is None
        assert body["models"]["din"] == body["models"]["popularity"] == "live"
        assert set(body["models"].values()) <= {"live", "absent"} and body["partial"] is False
        assert {v["version"]: (v["current"], v["serving"]) for v in body["versions"]} == {
            "v2": (True, True), old.name: (False, False)}
        assert await first_cold_item(c) == item
        assert reloads("swapped") == swapped + 1
        ready = (await c.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["version"] == "v2"


async def test_post_reload_swaps_and_brings_new_hstu_caches(root: Path,
                                                            client: httpx.AsyncClient) -> None:
    state = state_of(client)
    r = await client.post("/admin/models/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["result"] == "unchanged"
    # Fill the serving HSTU ranker's per-user K/V cache.
    old = state.serving
    hstu = old.components.rankers["hstu_ranker"]
    ctx = make_context(old.runtime, "1", [0, 1, 2], version=7)
    hstu.score(ctx, np.arange(5))
    assert len(hstu.cache) == 1

    new, item = boosted_version(root, "v2")
    r = await client.post("/admin/models/reload", headers=AUTH, json={"version": "v2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "swapped" and body["version"] == "v2"
    assert current_version(root) == new.resolve()  # a named version becomes current
    assert await first_cold_item(client) == item
    fresh = state.serving.components.rankers["hstu_ranker"]
    assert fresh is not hstu and fresh.cache is not hstu.cache and len(fresh.cache) == 0
    # The old snapshot is untouched: a request that held it would finish on it.
    assert old.components.rankers["hstu_ranker"].cache is hstu.cache

    r = await client.post("/admin/models/reload", headers=AUTH, json={"version": "nope"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "version"]
    assert (await client.post("/admin/models/reload")).status_code == 401


async def test_corrupt_version_is_rejected_and_not_retried(root: Path) -> None:
    old = current_version(root)
    async with running(settings(root, reload_poll_s=POLL_S)) as c:
        served = await first_cold_item(c)
        rejected = reloads("rejected")
        copy_version(root, "broken", lambda v: flip_a_byte(v / "din.safetensors"),
                     retable=False)
        set_current(root, "broken")

        async def rejection() -> dict | None:
            return (await models(c))["last_rejection"]

        await until(rejection)
        await asyncio.sleep(10 * POLL_S)  # the watch keeps polling: it must not retry
        body = await models(c)
        assert body["version"] == old.name
        assert body["last_rejection"]["version"] == "broken"
        assert "din.safetensors" in body["last_rejection"]["reason"]
        assert {v["version"]: v["rejected"] for v in body["versions"]} == {
            "broken": True, old.name: False}
        assert reloads("rejected") == rejected + 1
        assert await first_cold_item(c) == served  # the old version keeps answering
        r = await c.post("/admin/models/reload", headers=AUTH)  # explicit: tried again
        assert r.status_code == 409 and "din.safetensors" in r.json()["detail"][0]["msg"]
        assert (await c.get("/readyz")).json()["version"] == old.name


def _wider_din(version: Path) -> None:
    edit_json(version / "din.json", hidden_dims=[17])


def _fewer_item_vectors(version: Path) -> None:
    path = version / "item_embeddings.safetensors"
    arrays = load_file(str(path))
    save_file({k: v[:-1] for k, v in arrays.items()}, str(path))


def _item_dropped_from_the_id_map(version: Path) -> None:
    maps = orjson.loads((version / "id_maps.json").read_bytes())
    maps["items"] = maps["items"][:-1]
    (version / "id_maps.json").write_bytes(orjson.dumps(maps))


def _nan_weight(version: Path) -> None:
    """One NaN in SASRec's weights, as a diverged run leaves them: shapes and checksums pass,
    and the fused lists stay valid-looking, so only the value check rejects it."""
    path = version / "sasrec.safetensors"
    arrays = load_file(str(path))
    key = next(k for k, v in sorted(arrays.items()) if v.dtype.kind == "f" and v.size)
    arrays[key].reshape(-1)[0] = np.nan
    save_file(arrays, str(path))


@pytest.mark.parametrize(("edit", "named"), [
    (_nan_weight, "sasrec.safetensors"),
    (_wider_din, "din.json"),
    (_fewer_item_vectors, "item_embeddings.safetensors"),
    (_item_dropped_from_the_id_map, "id_maps.json"),
])
async def test_mismatched_version_is_rejected_naming_the_file(
    root: Path, client: httpx.AsyncClient, edit: Callable[[Path], None], named: str
) -> None:
    old = state_of(client).serving
    copy_version(root, "mismatched", edit)  # checksums re-listed: they pass
    r = await client.post("/admin/models/reload", headers=AUTH, json={"version": "mismatched"})
    assert r.status_code == 409, r.text
    assert named in r.json()["detail"][0]["msg"]
    assert state_of(client).serving is old
    assert current_version(root) == old.directory  # a rejected version never becomes current
    assert (await client.post("/recommend", json={"user_id": "1", "k": 5})).status_code == 200


async def test_rollback_serves_the_previous_version_and_moves_current(root: Path) -> None:
    old = current_version(root)
    async with running(settings(root, reload_poll_s=POLL_S)) as c:
        served = await first_cold_item(c)
        new, item = boosted_version(root, "v2")
        set_current(root, "v2")

        async def on_v2() -> bool:
            return (await models(c))["version"] == "v2"

        await until(on_v2)
        rollbacks = reloads("rollback")
        r = await c.post("/admin/models/rollback", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "rollback" and r.json()["version"] == old.name
        assert current_version(root) == old
        assert reloads("rollback") == rollbacks + 1
        await asyncio.sleep(10 * POLL_S)  # the watch sees current == serving: stays
        assert (await models(c))["version"] == old.name
        assert await first_cold_item(c) == served
        # Nothing older than the first version: a second rollback has nowhere to go.
        r = await c.post("/admin/models/rollback", headers=AUTH)
        assert r.status_code == 409 and (await models(c))["version"] == old.name


async def test_requests_during_a_swap_all_answer(root: Path, client: httpx.AsyncClient) -> None:
    boosted_version(root, "v2")
    statuses: list[int] = []
    done = asyncio.Event()

    async def hammer(user: str) -> None:
        while not done.is_set():
            r = await client.post("/recommend", json={"user_id": user, "k": 10})
            statuses.append(r.status_code)
            await asyncio.sleep(0)

    reloading: list[bool] = []

    async def look() -> None:
        while not done.is_set():
            reloading.append((await models(client))["reloading"])
            await asyncio.sleep(0.01)

    workers = [asyncio.create_task(hammer(u)) for u in ("1", "2", COLD, "17")]
    workers.append(asyncio.create_task(look()))
    await asyncio.sleep(0.2)
    r = await client.post("/admin/models/reload", headers=AUTH, json={"version": "v2"})
    await asyncio.sleep(0.2)
    done.set()
    await asyncio.gather(*workers)
    assert r.status_code == 200 and r.json()["version"] == "v2"
    assert len(statuses) > 8 and set(statuses) == {200}
    assert True in reloading and reloading[-1] is False  # shown while the candidate loads


async def test_corrupt_current_at_start_falls_back_to_an_older_version(root: Path) -> None:
    old = current_version(root)
    copy_version(root, "broken", lambda v: flip_a_byte(v / "popularity.safetensors"),
                 retable=False)
    set_current(root, "broken")
    rejected = reloads("rejected")
    async with running(settings(root)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["version"] == old.name
        body = await models(c)
        assert body["last_rejection"]["version"] == "broken"
        assert "popularity.safetensors" in body["last_rejection"]["reason"]
        assert reloads("rejected") == rejected + 1
        assert (await c.post("/recommend", json={"user_id": "1", "k": 5})).status_code == 200


async def test_nothing_valid_at_start_is_503_naming_the_file(root: Path) -> None:
    flip_a_byte(current_version(root) / "tiger.safetensors")
    async with running(settings(root)) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and "tiger.safetensors" in r.json()["error"]
        assert (await c.post("/recommend", json={"user_id": "1"})).status_code == 503
