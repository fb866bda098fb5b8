"""loadtest/: the schedule is open-loop (sends never wait for answers), latency counts from the
scheduled time, the traffic's clicks name served lists, and the reports add up."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from loadtest.main import check_host  # noqa: E402
from loadtest.report import latency_summary, summarize, write  # noqa: E402
from loadtest.runner import Record, Runner  # noqa: E402
from loadtest.schedule import Step, arrivals, parse_steps  # noqa: E402
from loadtest.server import parse_metrics, proc_tree_sample  # noqa: E402
from loadtest.traffic import Mix, Traffic  # noqa: E402
from tests.helpers import uvicorn_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --- schedule -------------------------------------------------------------------------------

def test_constant_arrivals_are_evenly_spaced() -> None:
    t = arrivals(Step(50, 3.0), "constant", np.random.default_rng(0))
    assert len(t) == 150
    np.testing.assert_allclose(np.diff(t), 1 / 50)
    assert t[0] == 0 and t[-1] < 3.0


def test_poisson_arrivals_have_the_offered_rate() -> None:
    rng = np.random.default_rng(1)
    t = arrivals(Step(200, 50.0), "poisson", rng)  # expected 10,000 sends, sd 100
    assert abs(len(t) - 10_000) < 500
    assert np.all(np.diff(t) > 0) and t[-1] < 50.0
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1 / 200) < 0.1 / 200
    # exponential gaps: the standard deviation equals the mean
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05


def test_max_requests_caps_a_step() -> None:
    assert len(arrivals(Step(100, 10.0, max_requests=7), "constant",
                        np.random.default_rng(0))) == 7


def test_parse_steps() -> None:
    assert parse_steps("50x30,100:500, 7.5x2") == [
        Step(50, 30.0), Step(100, 30.0, 500), Step(7.5, 2.0)]
    for bad in ("", "x30", "50y30", "0x10", "50x0", "-5x3"):
        with pytest.raises(ValueError):
            parse_steps(bad)


# --- traffic --------------------------------------------------------------------------------

def _traffic(**kw: object) -> Traffic:
    return Traffic(users=["u1", "u2", "u3"], items=[f"i{i}" for i in range(20)],
                   histories=[["i1", "i2", "i3"], ["i4"]], **kw)  # type: ignore[arg-type]


def test_mix_parse() -> None:
    assert Mix.parse("known=1,events=0.5") == Mix(known=1.0, cold=0.0, history=0.0, forced=0.0,
                                                  events=0.5)
    assert Mix.parse("") == Mix()
    for bad in ("nobody=1", "known=-1", "known=0", "known"):
        with pytest.raises(ValueError):
            Mix.parse(bad)


def test_each_kind_builds_its_request() -> None:
    tr = _traffic(mix=Mix(), seed=3)
    seen = {}
    for _ in range(500):
        r = tr.next()
        seen.setdefault(r.kind, r)
    assert set(seen) == {"known", "cold", "history", "forced", "events"}
    assert seen["known"].body["user_id"] in tr.users and "path" not in seen["known"].body
    assert seen["cold"].body["user_id"] not in tr.users
    assert seen["history"].body["history"] and "path" not in seen["history"].body
    assert seen["forced"].body["path"] in ("cascade", "generative")
    assert seen["forced"].forced_path == seen["forced"].body["path"]
    assert seen["events"].path == "/events"


def test_clicks_name_served_lists_only() -> None:
    tr = _traffic(mix=Mix.parse("events=1"), click_share=1.0)
    assert all(tr.next().body["events"][0]["type"] == "view" for _ in range(20))  # none served
    req = _traffic(mix=Mix.parse("known=1")).next()
    tr.observe(req, 200, {"request_id": "r1", "user_id": "u2",
                          "items": [{"item_id": "i7"}, {"item_id": "i9"}]})
    forced = _traffic(mix=Mix.parse("forced=1")).next()
    tr.observe(forced, 200, {"request_id": "r2", "user_id": "u1", "items": [{"item_id": "i1"}]})
    for _ in range(20):  # forced (QA) lists are no exposures: never clicked
        ev = tr.next().body["events"][0]
        assert (ev["type"], ev["request_id"], ev["user_id"]) == ("click", "r1", "u2")
        assert ev["item_id"] in ("i7", "i9")


def test_force_sends_every_recommend_to_one_path() -> None:
    tr = _traffic(mix=Mix.parse("known=1,cold=1,history=1"), force="generative")
    assert all(tr.next().body["path"] == "generative" for _ in range(50))


# --- the engine against a server that stalls -------------------------------------------------

@pytest.fixture
async def stalling_server() -> Iterator[tuple[str, list[float], asyncio.Event]]:
    """An aiohttp server whose answers wait on ``release`` (set by the test), and which notes
    when each request arrived."""
    arrived: list[float] = []
    release = asyncio.Event()
    release.set()

    async def handle(request: web.Request) -> web.Response:
        arrived.append(asyncio.get_running_loop().time())
        await request.read()
        await release.wait()
        return web.json_response({"request_id": "r", "user_id": "u", "path": "cascade",
                                  "items": []})

    app = web.Application()
    app.router.add_post("/recommend", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", arrived, release
    await runner.cleanup()


async def test_open_loop_keeps_sending_while_the_server_stalls(stalling_server) -> None:
    """100 rps for 2 s; the server holds every answer from 0.5 s to 1.5 s. A closed loop
    would stop sending during the stall; the open loop sends all 200 on schedule, and each
    held request's latency runs from its scheduled time to the release."""
    url, arrived, release = stalling_server
    run = Runner(url, _traffic(mix=Mix.parse("known=1")), process="constant", timeout_s=5.0)

    async def stall() -> None:
        await asyncio.sleep(0.5)
        release.clear()
        await asyncio.sleep(1.0)
        release.set()

    staller = asyncio.create_task(stall())
    records = await run.run([Step(100, 2.0)])
    await staller
    t0 = run._t0
    assert len(records) == 200 and all(r.status == 200 for r in records)
    during = [a - t0 for a in arrived if 0.6 <= a - t0 <= 1.4]
    assert len(during) >= 70  # ~80 sent in that window while nothing was answered
    for r in records:
        if 0.55 <= r.t <= 1.45:  # due inside the stall: answered at the release (~1.5 s)
            assert r.latency_s >= 1.5 - r.t - 0.05, (r.t, r.latency_s)
    assert max(r.send_lag_s for r in records) < 0.25


async def test_timeouts_count_at_the_client_timeout(stalling_server) -> None:
    url, _, release = stalling_server
    release.clear()  # never answers
    run = Runner(url, _traffic(mix=Mix.parse("known=1")), process="constant", timeout_s=0.3)
    records = await run.run([Step(20, 0.5)])
    release.set()
    assert len(records) == 10
    assert all(r.error == "timeout" and r.status == 0 for r in records)
    assert all(0.29 <= r.latency_s <= 0.3 + 1e-9 for r in records)


async def test_unreachable_server_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    run = Runner(f"http://127.0.0.1:{port}", _traffic(mix=Mix.parse("known=1")),
                 process="constant", timeout_s=1.0)
    records = await run.run([Step(10, 0.3)])
    assert records and all(r.error == "connect" for r in records)


# --- reports ---------------------------------------------------------------------------------

def _rec(step: int, lat: float, route: str = "recommend:cascade", error: str = "") -> Record:
    return Record(step, 0.0, "known", route, 0 if error else 200, error, lat, 0.0)


def test_latency_summary_known_answer() -> None:
    recs = [_rec(0, (i + 1) / 1000) for i in range(100)] + [_rec(0, 10.0, error="timeout")]
    s = latency_summary(recs, duration_s=2.0)
    assert s["sent"] == 101 and s["ok"] == 100 and s["achieved_rps"] == 50.0
    assert s["errors"] == {"timeout": 1}
    assert s["p50_ms"] == 51.0 and s["max_ms"] == 10_000.0
    assert s["p99_ms"] == pytest.approx(1000 * np.percentile(
        [(i + 1) / 1000 for i in range(100)] + [10.0], 99), abs=0.1)


def test_summary_and_files(tmp_path: Path) -> None:
    recs = [_rec(0, 0.01), _rec(0, 0.02, "events"), _rec(1, 0.03),
            _rec(1, math.nan, error="overflow")]
    summary = summarize(recs, [Step(10, 1.0), Step(20, 1.0)], [], {"url": "x"})
    assert [s["all"]["sent"] for s in summary["steps"]] == [2, 2]
    assert set(summary["steps"][0]["routes"]) == {"recommend:cascade", "events"}
    assert summary["steps"][1]["all"]["errors"] == {"overflow": 1}
    files = write(recs, summary, tmp_path / "out")
    names = {f.name for f in files}
    assert {"summary.json", "summary.md", "records.csv.gz"} <= names
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| 1 | 20 | all | 2 |" in md
    pytest.importorskip("matplotlib")
    assert {"latency_time.png", "latency_load.png"} <= names


def test_server_probes() -> None:
    import os

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.process_collector import ProcessCollector

    cpu, rss = proc_tree_sample(os.getpid())
    assert cpu > 0 and rss > 10 * 2**20
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    got = parse_metrics(generate_latest(reg).decode())
    assert got is not None and got[1] > 10 * 2**20
    assert parse_metrics("# nothing here\n") is None


def test_check_host() -> None:
    check_host("http://127.0.0.1:8000", [])
    check_host("http://localhost:8000", [])
    check_host("http://10.1.2.3:80", ["10.1.2.3"])
    with pytest.raises(ValueError, match="loopback"):
        check_host("http://10.1.2.3:80", [])


# --- against genrec over a real socket -------------------------------------------------------

def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def genrec_server(tiny_artifacts: Path) -> Iterator[str]:
    with uvicorn_app(f"artifacts_dir={str(tiny_artifacts)!r}, admin_token='tok'",
                     ready=_ready) as port:
        yield f"http://127.0.0.1:{port}"


def test_cli_run_against_genrec_moves_ctr(genrec_server: str, tmp_path: Path) -> None:
    """`python -m loadtest`: every request answered 2xx, and each distinct clicked
    (request_id, item) of a served list is credited to an arm."""
    before = httpx.get(genrec_server + "/admin/experiment",
                       headers={"authorization": "Bearer tok"}).json()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "--url", genrec_server, "--steps", "20x3",
         "--process", "constant", "--mix", "known=1,cold=0.2,history=0.2,events=1",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import gzip

    import orjson
    summary = orjson.loads((out / "summary.json").read_bytes())
    step = summary["steps"][0]
    assert step["all"]["sent"] == 60 and step["all"]["errors"] == {}
    assert set(step["routes"]) <= {"recommend:cascade", "recommend:generative", "events"}
    assert step["server"]["rss_mb_max"] > 50
    with gzip.open(out / "records.csv.gz", "rt") as f:
        n_events = sum(1 for line in f if ",events,events," in line)
    after = httpx.get(genrec_server + "/admin/experiment",
                      headers={"authorization": "Bearer tok"}).json()
    clicks = sum(a["clicks"] for a in after["arms"]) - sum(a["clicks"] for a in before["arms"])
    assert 0 < clicks <= n_events
