"""The service's Prometheus metrics (service/metrics.py): the M-FALCON cache's hits and misses
through the ASGI app, series that exist before their first event, and prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR): a scrape sums every uvicorn worker, process CPU
and RSS included, and a replaced gauge labelset reads 0.

(tests/test_metrics.py holds the offline ranking metrics, HR and NDCG.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.helpers import running

ROOT = Path(__file__).resolve().parents[1]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of an exposition text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def test_mfalcon_cache_hits_and_misses_are_counted(tiny_artifacts: Path) -> None:
    rank = {"user_id": "7", "model": "hstu_ranker", "item_ids": ["1", "2", "3"]}
    async with running(Settings(artifacts_dir=tiny_artifacts)) as client:
        # An event bumps user 7's history version: the next lookup can only miss.
        r = await client.post("/events", json={"events": [
            {"user_id": "7", "item_id": "50", "type": "view"}]})
        assert r.status_code == 200, r.text
        await client.post("/rank", json={**rank, "user_id": "8"})  # counts the smoke queries
        before = (await client.get("/metrics")).text
        for _ in range(2):
            assert (await client.post("/rank", json=rank)).status_code == 200
        after = (await client.get("/metrics")).text
    name = "genrec_hstu_cache_lookups_total"
    for result in ("hit", "miss"):
        got = value(after, name, result=result) - value(before, name, result=result)
        assert got == 1, f"{result}: {got}"


async def test_series_exist_before_their_first_event(tiny_artifacts: Path) -> None:
    async with running(Settings(artifacts_dir=tiny_artifacts)) as client:
        text = (await client.get("/metrics")).text
    for reason in ("store", "models"):
        assert value(text, "genrec_degraded_responses_total", reason=reason) is not None
    for result in ("hit", "miss"):
        assert value(text, "genrec_hstu_cache_lookups_total", result=result) is not None
    assert value(text, "process_resident_memory_bytes") > 0


def test_cleared_gauge_reads_zero_in_multiprocess_mode(tmp_path: Path) -> None:
    code = ("from service import metrics\n"
            "metrics.SERVING_VERSION.labels('v1').set(1)\n"
            "metrics.SERVING_VERSION.clear()\n"
            "metrics.SERVING_VERSION.labels('v2').set(1)\n"
            "print(metrics.render().decode())\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "not been implemented" not in p.stderr
    name = "genrec_serving_version_info"
    assert value(p.stdout, name, version="v1") == 0
    assert value(p.stdout, name, version="v2") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def two_workers(tiny_artifacts: Path, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """uvicorn with 2 workers on the tiny artifacts, multiprocess metrics on; -> (url, pid,
    multiprocess dir)."""
    port = _free_port()
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp),
           "GENREC_ARTIFACTS_DIR": str(tiny_artifacts), "GENREC_SEED_STORE": "false",
           "GENREC_RELOAD_POLL_S": "0"}
    env.pop("GENREC_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--workers",
         "2", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield f"http://127.0.0.1:{port}", proc.pid, mp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_scrape_sums_every_worker(two_workers: tuple[str, int, Path]) -> None:
    url, pid, mp = two_workers
    deadline = time.monotonic() + 120
    text = ""
    with httpx.Client(base_url=url, timeout=10) as client:
        # genrec_ready is the minimum over the live workers: 1 once both have loaded.
        while time.monotonic() < deadline:
            try:
                text = client.get("/metrics").text
                if value(text, "genrec_ready") == 1:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert value(text, "genrec_ready") == 1, "the workers never became ready"
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
        # Counted once the answer is sent: wait for the last ones.
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if value(text, "genrec_requests_total", endpoint="/healthz", status="200") == 20:
                break
            time.sleep(0.1)
    assert value(text, "genrec_requests_total", endpoint="/healthz", status="200") == 20
    versions = [labels for (name, labels), v in samples(text).items()
                if name == "genrec_serving_version_info" and v == 1]
    assert len(versions) == 1 and "pid" not in dict(versions[0])  # one version, not per pid
    # The workers are the supervisor's children that wrote metrics (it has other helpers).
    children = {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    workers = {int(f.stem.rsplit("_", 1)[1]) for f in mp.glob("*.db")}
    assert len(workers) == 2 and workers <= children
    rss = [_rss(w) for w in workers]
    total = value(text, "process_resident_memory_bytes")
    assert max(rss) < total <= 1.2 * sum(rss)
    assert value(text, "process_cpu_seconds_total") > 0
