"""A Redis outage under open-loop load: 5xx, degraded answers, /events 503s, lost events, recovery.

Starts its own redis-server (AOF, ``appendfsync everysec``, a temp dir, a free loopback port)
and ``genrec serve`` on it (GENREC_* variables pass through, e.g. GENREC_REDIS_TIMEOUT_MS,
GENREC_BREAKER_RESET_S), waits for /readyz and the seed marker, then offers Poisson load (the
loadtest mix: /recommend of every kind plus /events clicks and views) for before + outage +
after seconds. At ``--before-s`` Redis goes: ``kill`` = SIGKILL, restarted from its AOF on the
same port ``--outage-s`` later; ``stop`` = SIGSTOP (hung: connections open, no answers), then
SIGCONT. Afterwards every /events batch answered 2xx is looked up in the user's stored history
(``{prefix}u:{user}:hist``, entries stamped since the load began): missing = lost (goal 0);
stored although answered 503 = ``written_despite_503`` (goal 0). Recovery is counted from the
moment Redis answers PING again. Prints markdown, writes ``redis_outage.json`` and the logs to
``--out``, exits 1 when a goal failed (any 5xx but /events' 503, a lost event, a 503'd write).

    python benchmarks/redis_outage.py --artifacts artifacts/ml-100k --mode kill|stop \\
        [--rps 30] [--before-s 20] [--outage-s 20] [--after-s 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # loadtest/ is not part of the installed package
    sys.path.insert(0, str(REPO_ROOT))

from loadtest.main import traffic_for  # noqa: E402
from loadtest.runner import Record, Runner  # noqa: E402
from loadtest.schedule import Step  # noqa: E402
from loadtest.traffic import Mix, Request  # noqa: E402

READY_TIMEOUT_S = 300.0
STORE_KINDS = ("known", "cold", "forced")  # /recommend kinds that read the user store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """A redis-server of our own: killed then restarted from its AOF, or hung then resumed."""

    def __init__(self, workdir: Path, log: Path) -> None:
        self.workdir, self.log, self.port, self.stopped = workdir, log, free_port(), False
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.workdir),
               "--logfile", str(self.log)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C is ours to handle
        deadline = time.monotonic() + 30.0
        with redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1) as c:
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if c.ping():  # BusyLoadingError (replaying the AOF) is a ConnectionError
                        return proc
                time.sleep(0.01)
        stop_process(proc)
        raise RuntimeError(f"redis-server on port {self.port} did not come up; see {self.log}")

    def down(self, mode: str) -> None:
        self.proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
        self.stopped = mode == "stop"
        if mode == "kill":
            self.proc.wait()

    def up(self, mode: str) -> None:
        """Back and answering PING: restarted from its AOF (same port and dir), or resumed."""
        if mode == "kill":
            self.proc = self._spawn()
            return
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False
        with redis.Redis(port=self.port, socket_timeout=5) as c:
            c.ping()

    def close(self) -> None:
        if self.stopped:
            self.proc.send_signal(signal.SIGCONT)
        stop_process(self.proc)


def start_service(args: argparse.Namespace, redis_url: str, port: int, log: Path
                  ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GENREC_REDIS_URL": redis_url,
           "GENREC_LOG_LEVEL": os.environ.get("GENREC_LOG_LEVEL", "warning")}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(args.artifacts),
           "--dataset", args.dataset, "--no-build", "--port", str(port)]
    with log.open("wb") as f:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(base: str, service: subprocess.Popen[bytes], client: redis.Redis,
               prefix: str) -> dict[str, Any]:
    """Until /readyz says "ready" and the store holds a seed marker; -> the /readyz body."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and service.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # URLError/HTTPError are OSErrors
            with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
                body = json.loads(resp.read())
            if body.get("status") == "ready" and any(client.scan_iter(f"{prefix}seeded:*")):
                return body
        time.sleep(0.5)
    raise RuntimeError(f"service not ready with a seeded store (exit code {service.poll()})")


@dataclass
class Sent:
    record: Record
    body: dict[str, Any]
    retry_after: str | None


class _HeaderTap:
    """Stands in for the runner's session for one request to keep the answer's Retry-After
    (``Runner._send`` keeps only the status and the JSON)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session, self.retry_after = session, None

    @contextlib.asynccontextmanager
    async def post(self, url: str, **kw: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        async with self._session.post(url, **kw) as resp:
            self.retry_after = resp.headers.get("Retry-After")
            yield resp


class TappedRunner(Runner):
    """A Runner that keeps each sent request's body and Retry-After beside its Record."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent: list[Sent] = []

    async def _send(self, session: aiohttp.ClientSession, i: int, t: float,
                    req: Request) -> None:
        tap = _HeaderTap(session)
        await super()._send(cast(aiohttp.ClientSession, tap), i, t, req)
        # _send appends its Record last, with no await after it: records[-1] is this one.
        self.sent.append(Sent(self.records[-1], req.body, tap.retry_after))


async def outage(runner: TappedRunner, srv: RedisServer, args: argparse.Namespace
                 ) -> dict[str, float]:
    """Redis away at before_s, back outage_s later; -> the times, s from the load's start."""
    loop = asyncio.get_running_loop()
    while not hasattr(runner, "_t0"):  # set when the load starts
        await asyncio.sleep(0.005)

    def now() -> float:
        return loop.time() - runner._t0

    await asyncio.sleep(args.before_s - now())
    down = now()
    await asyncio.to_thread(srv.down, args.mode)
    await asyncio.sleep(args.before_s + args.outage_s - now())
    back = now()
    await asyncio.to_thread(srv.up, args.mode)  # a thread: the load keeps its schedule
    return {"down_s": down, "restart_s": back, "up_s": now()}


def check_events(sent: list[Sent], client: redis.Redis, prefix: str, since: float
                 ) -> dict[str, int]:
    """The /events batches' outcomes against the stored histories."""
    accepted, unknown, users = Counter[tuple](), Counter[tuple](), set()
    for s in (s for s in sent if s.record.route == "events"):
        for ev in s.body["events"]:
            key = (ev["user_id"], ev["item_id"], ev["type"])
            users.add(ev["user_id"])
            if 200 <= s.record.status < 300:
                accepted[key] += 1
            elif s.record.status == 0 or (s.record.status >= 500 and s.record.status != 503):
                # no answer, or one that doesn't say: may or may not be written
                unknown[key] += 1
    stored = Counter((user, d["i"], d["t"]) for user in users
                     for d in map(json.loads, client.lrange(f"{prefix}u:{user}:hist", 0, -1))
                     if d["ts"] >= since)
    return {"accepted_events": sum(accepted.values()), "stored_since_start": sum(stored.values()),
            "lost_events": sum((accepted - stored).values()),
            "written_despite_503": sum((stored - accepted - unknown).values()),
            "outcome_unknown": sum(unknown.values())}


def summarize(records: list[Record], sent: list[Sent], times: dict[str, float]
              ) -> dict[str, Any]:
    down, up = times["down_s"], times["up_s"]
    recs = [s.record for s in sent]
    rec, ev = [r for r in recs if r.route != "events"], [r for r in recs if r.route == "events"]
    store = [r for r in rec if r.kind in STORE_KINDS and r.status == 200]
    e503 = [s for s in sent if s.record.route == "events" and s.record.status == 503]

    def since(rs: list[Record], t0: float, ok: bool, last: bool = False) -> float | None:
        """s from t0 to the first (last) answer after it that is ok (not degraded / 2xx)."""
        xs = [r.t + r.latency_s - t0 for r in rs if r.t + r.latency_s >= t0 and ok == (
            not r.degraded if r.route != "events" else 200 <= r.status < 300)]
        return (max(xs) if last else min(xs)) if xs else None

    phases: dict[str, dict[str, Any]] = {}
    for name, lo, hi in (("before", 0.0, down), ("during", down, up), ("after", up, math.inf)):
        rs = [r for r in rec if lo <= r.t < hi]
        lat = [r.latency_s * 1e3 for r in rs if math.isfinite(r.latency_s)]
        phases[name] = {"recommend": len(rs), "degraded": sum(r.degraded for r in rs)} | {
            f"p{q}_ms": round(float(np.percentile(lat, q)), 1) if lat else None
            for q in (50, 99)}
    return {
        "requests": len(records),
        "http_5xx_unexpected": sum(r.status >= 500 and (r.route, r.status) != ("events", 503)
                                   for r in recs),
        "recommend_5xx": sum(r.status >= 500 for r in rec),
        "recommend_degraded": sum(r.degraded for r in rec),
        "events_2xx": sum(200 <= r.status < 300 for r in ev),
        "events_503": len(e503),
        "events_503_without_retry_after": sum(not s.retry_after for s in e503),
        **{f"client_{k}": v for k, v in Counter(r.error for r in records if r.error and
                                                not r.error.startswith("http_")).items()},
        "degraded_after_down_s": since(store, down, ok=False),
        "recommend_recovered_s": since(store, up, ok=True),
        "recommend_last_degraded_s": since(store, up, ok=False, last=True),
        "events_recovered_s": since(ev, up, ok=True),
        "events_last_503_s": since([s.record for s in e503], up, ok=False, last=True),
        "phases": phases,
    }


def markdown(summary: dict[str, Any], events: dict[str, int], goals: dict[str, bool]) -> str:
    goal_of = {"http_5xx_unexpected": "no_5xx", "lost_events": "no_lost_events",
               "written_despite_503": "no_write_after_503"}
    rows = ["| figure | value | goal |", "| --- | --- | --- |"]
    for key, v in [*summary.items(), *events.items()]:
        goal = goal_of.get(key)
        mark = "" if goal is None else "0: " + ("met" if goals[goal] else "FAILED")
        shown = "-" if v is None else f"{v:.2f}" if isinstance(v, float) else v
        rows += [] if key == "phases" else [f"| {key} | {shown} | {mark} |"]
    rows += ["", "| phase | /recommend | degraded | p50 ms | p99 ms |", "| --- |" + " --- |" * 4]
    rows += [f"| {name} | {p['recommend']} | {p['degraded']} | {p['p50_ms']} | {p['p99_ms']} |"
             for name, p in summary["phases"].items()]
    return "\n".join(rows)


def run(args: argparse.Namespace, out: Path, tmp: Path) -> int:
    prefix = os.environ.get("GENREC_REDIS_PREFIX", "genrec:")
    srv = RedisServer(tmp, out / "redis.log")
    client, service = redis.Redis.from_url(srv.url), None
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        service = start_service(args, srv.url, port, out / "service.log")
        ready = wait_ready(base, service, client, prefix)
        traffic = traffic_for(args.dataset, Mix.parse(args.mix), None, 10, args.seed)
        runner = TappedRunner(base, traffic, timeout_s=args.timeout_s, seed=args.seed)
        total = args.before_s + args.outage_s + args.after_s
        print(f"{args.rps:g} rps for {total:g} s; Redis {args.mode} at {args.before_s:g} s for "
              f"{args.outage_s:g} s", file=sys.stderr)
        since = time.time()

        async def both() -> dict[str, float]:
            return (await asyncio.gather(outage(runner, srv, args),
                                         runner.run([Step(args.rps, total)])))[0]

        times = asyncio.run(both())
        events = check_events(runner.sent, client, prefix, since)
    finally:
        if service is not None:
            stop_process(service)
        client.close()
        srv.close()
    summary = summarize(runner.records, runner.sent, times)
    goals = {"no_5xx": summary["http_5xx_unexpected"] == 0,
             "no_lost_events": events["lost_events"] == 0,
             "no_write_after_503": events["written_despite_503"] == 0}
    env = {k: v for k, v in os.environ.items() if k.startswith("GENREC_")}
    result = {"config": vars(args) | {"out": out, "version": ready.get("version"), "env": env},
              "times": times, "summary": summary, "events": events, "goals": goals,
              "records": [asdict(s.record) | {"retry_after": s.retry_after} for s in runner.sent]}
    (out / "redis_outage.json").write_text(json.dumps(result, indent=1, default=str))
    print(markdown(summary, events, goals))
    print(f"times (s from the load's start): {({k: round(v, 2) for k, v in times.items()})}\n"
          f"wrote {out / 'redis_outage.json'}")
    return 0 if all(goals.values()) else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="artifacts root (current)")
    ap.add_argument("--dataset", default="ml-100k", help="the dataset the artifacts serve")
    ap.add_argument("--mode", choices=("kill", "stop"), default="kill")
    for name, default in (("rps", 30.0), ("before-s", 20.0), ("outage-s", 20.0),
                          ("after-s", 30.0), ("timeout-s", 10.0)):
        ap.add_argument(f"--{name}", type=float, default=default, help=f"default {default:g}")
    ap.add_argument("--mix", default="", help="KIND=WEIGHT,... (default: the loadtest mix)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: a new temp dir")
    args = ap.parse_args()
    args.artifacts = args.artifacts.resolve()
    out = (args.out or Path(tempfile.mkdtemp(prefix="redis-outage-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop it all
    try:
        with tempfile.TemporaryDirectory(prefix="redis-outage-aof-") as tmp:
            sys.exit(run(args, out, Path(tmp)))
    except KeyboardInterrupt:  # Ctrl-C: run's finally has stopped Redis and the service
        sys.exit(130)


if __name__ == "__main__":
    main()
