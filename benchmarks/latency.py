"""In-process `/recommend` latency for the cascade, against the models' own compute.

Runs the real FastAPI app through httpx's ASGI transport (no socket), with the embedded store
seeded from the dataset, and measures:
  * end-to-end latency p50/p99 of POST /recommend as the in-process client sees it (e2e), and
    as the service spends it from ASGI entry to the last response byte (server), plus each
    stage's p50/p99 (from `stages`);
  * the pure pipeline compute for the same users, interleaved request by request:
    `Cascade.run` on a prepared context, with no HTTP, JSON, store or validation around it;
  * the ratios e2e / compute and server / compute (goal: <= 1.3);
  * resident memory after start and after all requests (VmRSS of this process, which hosts
    the service).

Usage: python benchmarks/latency.py [--artifacts artifacts/ml-100k] [--requests 10000] [--k 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from service.app import create_app
from service.config import REPO_ROOT, Settings
from service.pipeline.context import build_context


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


async def main(args: argparse.Namespace) -> dict:
    settings = Settings(artifacts_dir=args.artifacts, torch_threads=args.threads)
    app = create_app(settings)
    server_ms: list[float] = []

    async def timed(scope, receive, send):  # the service's own time: ASGI entry to last byte
        t0 = time.perf_counter()
        await app(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/recommend":
            server_ms.append((time.perf_counter() - t0) * 1e3)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=timed)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            while (await client.get("/readyz")).status_code != 200:
                if app.state.genrec.load_error:
                    raise SystemExit(app.state.genrec.load_error)
                await asyncio.sleep(0.1)
            state = app.state.genrec
            rt, comp = state.require()
            rss_start = rss_mb()
            rng = random.Random(0)
            users = [rng.choice(rt.users.ids) for _ in range(args.requests)]
            for u in users[: args.warmup]:
                await client.post("/recommend", json={"user_id": u, "k": args.k})

            # Interleaved A/B: each request's end-to-end time, then the pure compute of the
            # same user's cascade on a prepared context, so machine drift hits both alike.
            server_ms.clear()  # drop the warm-up requests
            e2e: list[float] = []
            compute: list[float] = []
            stages: dict[str, list[float]] = {}
            for n, u in enumerate(users):
                t0 = time.perf_counter()
                r = await client.post("/recommend", json={"user_id": u, "k": args.k})
                e2e.append((time.perf_counter() - t0) * 1e3)
                assert r.status_code == 200, r.text
                for st in r.json()["stages"]:
                    stages.setdefault(st["name"], []).append(st["ms"])
                if n % args.compute_every == 0:
                    ctx = await build_context(rt, state.store, u, limit=rt.max_history)
                    t0 = time.perf_counter()
                    comp.cascade.run(ctx, args.k)
                    compute.append((time.perf_counter() - t0) * 1e3)
            rss_end = rss_mb()

    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores",
        "artifacts": str(args.artifacts),
        "requests": len(e2e),
        "k": args.k,
        "torch_threads": args.threads,
        "e2e_ms": {"p50": pct(e2e, 50), "p99": pct(e2e, 99), "mean": float(np.mean(e2e))},
        "server_ms": {"p50": pct(server_ms, 50), "p99": pct(server_ms, 99),
                      "mean": float(np.mean(server_ms))},
        "compute_ms": {"p50": pct(compute, 50), "p99": pct(compute, 99),
                       "mean": float(np.mean(compute))},
        "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        "rss_mb": {"after_start": rss_start, f"after_{len(e2e)}_requests": rss_end},
    }
    for name in ("e2e", "server"):
        out[f"ratio_{name}_over_compute"] = {
            q: out[f"{name}_ms"][q] / out["compute_ms"][q] for q in ("p50", "p99")}
    return out


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, default=REPO_ROOT / "artifacts" / "ml-100k")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--compute-every", type=int, default=1,
                    help="time the pure compute after every n-th request")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    text = json.dumps(asyncio.run(main(args)), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
