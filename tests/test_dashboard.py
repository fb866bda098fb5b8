"""The Grafana dashboard (docker/grafana/dashboards/genrec.json) against genrec and a real
Prometheus. Every metric a panel names must be one genrec's /metrics exports; every panel's
PromQL must return data from a Prometheus scraping the native stack (scripts/stack.sh: Redis,
two replicas, nginx, Prometheus) after a short open-loop load through nginx, during which
Redis is paused for a moment so the error, degraded and Redis panels have something to show.

nginx and prometheus come from Debian (scripts/test.sh installs them); the stack test is
skipped only when they are missing and cannot be installed here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.helpers import running

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "genrec.json"
STACK = ROOT / "scripts" / "stack.sh"
PACKAGES = {"redis-server": "redis-server", "nginx": "nginx", "prometheus": "prometheus"}
# A range Grafana fills in, should a panel use one: one that suits a 5 s scrape.
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# Issue 13's panels, by the metric each one needs.
REQUIRED = {
    "genrec_requests_total", "genrec_ab_requests_total", "genrec_request_latency_seconds_bucket",
    "genrec_stage_latency_seconds_bucket", "genrec_ab_latency_seconds_bucket",
    "genrec_ab_exposures_total", "genrec_ab_clicks_total", "genrec_serving_version_info",
    "genrec_redis_latency_seconds_bucket", "genrec_redis_errors_total",
    "genrec_hstu_cache_lookups_total", "genrec_degraded_responses_total",
    "process_cpu_seconds_total", "process_resident_memory_bytes",
}


# --- the dashboard's queries ----------------------------------------------------------------

def targets() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) for every target of every panel, rows included."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    todo = list(dash["panels"])
    while todo:
        panel = todo.pop(0)
        todo.extend(panel.get("panels", []))
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_RANGES.items():
                expr = expr.replace(var, value)
            out.append((f"{panel['title']} [{t['refId']}]", expr))
    return out


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, ranges and label lists that are neither functions nor keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # the exponent or unit of a number: 1e-9, 5m
            continue
        if s[m.end():].lstrip().startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def exported_names(text: str) -> set[str]:
    """Every series name an exposition text can hold, also for a labelled metric that has no
    series yet (its HELP and TYPE lines are there)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_names_parse_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, arm) (rate(a_bucket{x="b(c)"}[1m])))'
            ' / ignoring (status) group_left sum(rate(b_total[5m] offset 1m)) * 1e-3'
            ' and on (instance) c')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_dashboard_covers_every_panel_of_the_issue() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36 and dash["uid"] == "genrec"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    used = set().union(*(metric_names(e) for _, e in targets()))
    assert used >= REQUIRED, f"no panel for {sorted(REQUIRED - used)}"


async def test_every_dashboard_metric_is_exported(tiny_artifacts: Path) -> None:
    async with running(Settings(artifacts_dir=tiny_artifacts)) as client:
        text = (await client.get("/metrics")).text
    exported = exported_names(text)
    unknown = {}
    for title, expr in targets():
        names = metric_names(expr)
        assert names, f"panel {title}: no metric found in {expr!r}"
        if names - exported:
            unknown[title] = sorted(names - exported)
    assert not unknown, f"panels query metrics genrec does not export: {unknown}"


# --- the native stack -----------------------------------------------------------------------

def _find(binary: str) -> str | None:
    return shutil.which(binary) or (f"/usr/sbin/{binary}"
                                    if os.access(f"/usr/sbin/{binary}", os.X_OK) else None)


def _install(packages: list[str]) -> str:
    """apt-get install, where this user may (root, or sudo without a password); -> output."""
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not shutil.which("apt-get") or (prefix and not shutil.which("sudo")):
        return "no apt-get, or not root and no sudo"
    # RUNLEVEL=1: the packages' own system services are not started.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    out = []
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        p = subprocess.run(prefix + cmd, env=env, capture_output=True, text=True, timeout=600)
        out.append(p.stdout[-500:] + p.stderr[-500:])
        if p.returncode:
            break
    return "\n".join(out)


def _missing_tools() -> str | None:
    """None when redis-server, nginx and prometheus are here (installed if need be)."""
    missing = [b for b in PACKAGES if _find(b) is None]
    if not missing:
        return None
    detail = _install([PACKAGES[b] for b in missing])
    missing = [b for b in PACKAGES if _find(b) is None]
    if not missing:
        return None
    return (f"{', '.join(missing)} not found and could not be installed ({detail.strip()}); "
            f"run scripts/test.sh, or apt-get install {' '.join(PACKAGES[b] for b in missing)}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Stack:
    url: str  # nginx
    prometheus: str
    run_dir: Path

    def pid(self, name: str) -> int:
        return int((self.run_dir / "pids" / f"{name}.pid").read_text())


def _logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((run_dir / "logs").glob("*.log")))


@pytest.fixture(scope="module")
def stack(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    run_dir = tmp_path_factory.mktemp("stack")
    redis, r1, r2, front, prom = _free_ports(5)
    env = {**os.environ, "STACK_REDIS_PORT": str(redis), "STACK_REPLICA_PORTS": f"{r1} {r2}",
           "STACK_NGINX_PORT": str(front), "STACK_PROMETHEUS_PORT": str(prom),
           "STACK_GENREC_BIN": str(Path(sys.executable).parent / "genrec"),
           "STACK_READY_TIMEOUT_S": "120"}
    env.pop("GENREC_REDIS_URL", None)
    cmd = [str(STACK), "up", "--run-dir", str(run_dir), "--artifacts", str(tiny_artifacts)]
    try:
        up = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
        if up.returncode:
            pytest.fail(f"stack.sh up failed ({up.returncode}):\n{up.stdout}{up.stderr}\n"
                        f"{_logs(run_dir)}", pytrace=False)
        yield Stack(f"http://127.0.0.1:{front}", f"http://127.0.0.1:{prom}", run_dir)
    finally:
        subprocess.run([str(STACK), "down", "--run-dir", str(run_dir)], env=env,
                       capture_output=True, timeout=120)


def _load_with_faults(stack: Stack) -> list[Any]:
    """5 s of open-loop load (20 rps, constant arrivals, the default mix: known, cold and
    stateless users, forced paths, views and attributed clicks) through nginx; meanwhile
    Redis hangs for 0.5 s, some requests are bad (422, 404), and a few users are ranked
    twice by the HSTU ranker (M-FALCON cache lookups)."""
    from loadtest.main import traffic_for
    from loadtest.runner import run_steps
    from loadtest.schedule import Step
    from loadtest.traffic import Mix

    traffic = traffic_for("ml-100k", Mix(), None, 10, seed=0)
    result: list[Any] = []
    load = threading.Thread(target=lambda: result.extend(run_steps(
        stack.url, traffic, [Step(20, 5.0)], process="constant", timeout_s=10.0)[0]))
    load.start()
    redis_pid = stack.pid("redis")
    try:
        time.sleep(1.5)
        os.kill(redis_pid, signal.SIGSTOP)
        time.sleep(0.5)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        assert client.post("/recommend", json={"user_id": "1", "k": 0}).status_code == 422
        assert client.get("/no-such-route").status_code == 404
        for user in ("1", "2", "3"):
            for _ in range(2):
                r = client.post("/rank", json={"user_id": user, "model": "hstu_ranker",
                                               "item_ids": ["1", "2", "3"]})
                assert r.status_code == 200, r.text
    load.join()
    return result


def _series(stack: Stack, expr: str) -> int:
    url = f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = httpx.get(url, timeout=10).json()
    assert body["status"] == "success", f"{expr!r}: {body}"
    return len(body["data"]["result"])


def test_every_panel_returns_data(stack: Stack) -> None:
    records = _load_with_faults(stack)
    assert sum(r.status == 200 for r in records) >= 50, "the load was mostly refused"
    # Rates need two scrapes (5 s apart) of a series after it first appears.
    empty = dict(targets())
    deadline = time.monotonic() + 40
    while empty and time.monotonic() < deadline:
        empty = {title: e for title, e in empty.items() if _series(stack, e) == 0}
        if empty:
            time.sleep(1)
    assert not empty, f"panels without data from Prometheus: {json.dumps(empty, indent=1)}"
