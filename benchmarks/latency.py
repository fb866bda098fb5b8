"""In-process `/recommend` latency of the generative path against the cascade, in one run.

Runs the real FastAPI app through httpx's ASGI transport (no socket), with the embedded store
seeded from the dataset and an experiment with one arm per measured path (cascade 0.5 /
generative 0.5); every request forces its path with the request's ``path`` field. For each
sampled user there is one request per path, the order flipped every user so neither path
always goes first and machine drift hits both alike. Per path it measures:
  * end-to-end latency p50/p99/mean of POST /recommend as the in-process client sees it (e2e),
    and as the service spends it from ASGI entry to the last response byte (server), plus each
    stage's p50/p99 keyed ``name:source`` (e.g. ``recall:semantic_id``, ``rank:hstu``) from
    the response's ``stages`` (``n``: how many requests ran that stage; fallbacks are rare);
  * the pure pipeline compute for the same user, right after its request: ``run`` of
    ``comp.pipelines[path]`` on a prepared context, with no HTTP, JSON, store or validation;
  * the ratios e2e / compute and server / compute (goal: <= 1.3), and generative / cascade.

HSTU cache: e2e and server include the M-FALCON history cache keyed by (user, history
version), so a user seen again within ``--hstu-cache-ttl`` seconds (and still among the last
``hstu_cache_size`` users) skips encoding the history; ``hstu_cache`` reports the hit rate of
the timed requests. The generative compute runs on a context with ``version=None``, which
never reads or fills that cache: compute always encodes the history afresh (an upper bound),
and is not flattered by the request just before it. ``--hstu-cache-ttl 0.000001`` makes the
requests (nearly) all misses, for e2e without the cache.
Resident memory (VmRSS of this process, which hosts the service) is read after start and after
all requests.

Usage: python benchmarks/latency.py [--artifacts artifacts/ml-100k] [--requests 10000] [--k 10]
       [--paths cascade,generative] [--hstu-cache-ttl SECONDS] [--json out.json]
(``--requests`` is per path: each sampled user gets one request on every path.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from models.registry import PATHS
from service.app import create_app
from service.config import REPO_ROOT, Settings
from service.user_context import load_context


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": pct(xs, 50), "p99": pct(xs, 99),
            "mean": float(np.mean(xs)) if xs else float("nan")}


def experiment_json(paths: list[str]) -> str:
    share = 1.0 / len(paths)
    arms = [{"name": p, "path": p, "share": share} for p in paths]
    return json.dumps({"name": "latency-bench", "salt": "latency-bench", "arms": arms})


async def main(args: argparse.Namespace) -> dict:
    overrides = {} if args.hstu_cache_ttl is None else {"hstu_cache_ttl_s": args.hstu_cache_ttl}
    # The result cache off: users repeat in the draw, and a cached answer has no compute to
    # compare the server's time with.
    settings = Settings(artifacts_dir=args.artifacts, torch_threads=args.threads,
                        experiment_json=experiment_json(args.paths), result_cache_size=0,
                        **overrides)
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
            cache = comp.rankers["hstu_ranker"].cache if "generative" in args.paths else None
            rss_start = rss_mb()
            rng = random.Random(0)
            users = [rng.choice(rt.users.ids) for _ in range(args.requests)]
            # Warm up on users of their own draw: reusing the first timed users would hand
            # those their HSTU cache entries and inflate the hit rate.
            warm = [rng.choice(rt.users.ids) for _ in range(args.warmup)]

            async def request(u: str, path: str) -> tuple[float, dict]:
                t0 = time.perf_counter()
                r = await client.post("/recommend", json={"user_id": u, "k": args.k,
                                                          "path": path})
                ms = (time.perf_counter() - t0) * 1e3
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["path"] == path, body["path"]
                return ms, body

            for n, u in enumerate(warm):
                for path in args.paths[:: 1 if n % 2 == 0 else -1]:
                    await request(u, path)

            server_ms.clear()  # drop the warm-up requests
            hits0, misses0 = (cache.hits, cache.misses) if cache else (0, 0)
            res = {p: {"e2e": [], "server": [], "compute": [], "stages": {}} for p in args.paths}
            for n, u in enumerate(users):
                for path in args.paths[:: 1 if n % 2 == 0 else -1]:
                    m = res[path]
                    ms, body = await request(u, path)
                    m["e2e"].append(ms)
                    m["server"].append(server_ms.pop())
                    for st in body["stages"]:
                        m["stages"].setdefault(f"{st['name']}:{st['source']}", []).append(st["ms"])
                    if n % args.compute_every == 0:
                        ctx, _ = await load_context(rt, state.store, u, limit=rt.max_history)
                        # version=None: the HSTU stage neither reads nor fills its cache.
                        ctx = dataclasses.replace(ctx, version=None)
                        pipeline, params = comp.pipelines[path], state.arm_params[path]
                        t0 = time.perf_counter()
                        pipeline.run(ctx, args.k, params)
                        m["compute"].append((time.perf_counter() - t0) * 1e3)
            rss_end = rss_mb()

    cache_stats = None
    if cache is not None:
        cache_stats = (cache, cache.hits - hits0, cache.misses - misses0)
    return report(args, res, cache_stats, rss_start, rss_end)


def per_path_summary(res: dict) -> dict:
    """Latency percentiles per path and stage, and e2e / server time over the models' own."""
    per_path = {}
    for path, m in res.items():
        out = {"requests": len(m["e2e"]), "computes": len(m["compute"]),
               **{f"{name}_ms": summary(m[name]) for name in ("e2e", "server", "compute")},
               "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)}
                             for k, v in m["stages"].items()}}
        for name in ("e2e", "server"):
            out[f"ratio_{name}_over_compute"] = {
                q: out[f"{name}_ms"][q] / out["compute_ms"][q] for q in ("p50", "p99")}
        per_path[path] = out
    return per_path


def report(args: argparse.Namespace, res: dict, cache_stats: tuple | None, rss_start: float,
           rss_end: float) -> dict:
    """The JSON result: machine, arguments, per-path figures, generative / cascade ratios,
    HSTU cache hit rate and memory."""
    per_path = per_path_summary(res)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores",
        "cpu_count": _cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "artifacts": str(args.artifacts),
        "k": args.k,
        "torch_threads": args.threads,
        "paths": per_path,
    }
    if "cascade" in per_path and "generative" in per_path:
        gen, cas = per_path["generative"], per_path["cascade"]
        result["generative_over_cascade"] = {
            f"{name}_ms": {q: gen[f"{name}_ms"][q] / cas[f"{name}_ms"][q] for q in ("p50", "p99")}
            for name in ("e2e", "server", "compute")}
    if cache_stats is not None:
        cache, hits, misses = cache_stats
        result["hstu_cache"] = {
            "ttl_s": cache.ttl_s, "max_size": cache.max_size, "hits": hits, "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else float("nan"),
            "scope": "timed /recommend requests only; compute bypasses the cache"}
    result["rss_mb"] = {"after_start": rss_start,
                        f"after_{sum(len(m['e2e']) for m in res.values())}_requests": rss_end}
    return result


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _paths(text: str) -> list[str]:
    paths = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in paths if p not in PATHS]
    if not paths or bad or len(set(paths)) != len(paths):
        raise argparse.ArgumentTypeError(
            f"expected distinct paths from {', '.join(PATHS)}; got {text!r}")
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", type=Path, default=REPO_ROOT / "artifacts" / "ml-100k")
    ap.add_argument("--requests", type=int, default=10_000,
                    help="sampled users (= requests per path)")
    ap.add_argument("--paths", type=_paths, default=list(PATHS),
                    help="comma-separated paths to measure (default: cascade,generative)")
    ap.add_argument("--compute-every", type=int, default=1,
                    help="time the pure compute after every n-th user's requests")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up users (one request per path)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hstu-cache-ttl", type=float, default=None,
                    help="HSTU history-cache TTL in seconds (> 0; default: the settings' "
                         f"{Settings.model_fields['hstu_cache_ttl_s'].default}); "
                         "0.000001 approximates no cache")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    text = json.dumps(asyncio.run(main(args)), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
