"""Hot reload under load: open-loop mixed traffic while new versions are published and corrupt
ones pushed. Reports failed requests (goal 0), p99 inside the swap windows against the steady
p99 (goal <= 2x), and the server's peak RSS during a swap (two versions may be resident).

  python benchmarks/reload_under_load.py --artifacts artifacts/ml-100k --out /tmp/reload

A private copy of the artifacts' current version is served by `genrec serve --no-build` (a
real uvicorn process, the file watch on `current` as the trigger). After ``--steady-s`` of
load, every ``--gap-s`` one version is published (``current`` flipped): ``--new`` valid copies
(new name, new manifest), and ``--corrupt`` broken ones interleaved, one with a flipped byte
(checksum) and one whose DIN config no longer fits its weights (shape check). A swap window
runs from the flip to the moment /admin/models shows the outcome, plus 0.5 s. RSS is the
server's process tree from /proc, sampled every 0.1 s. The publisher copies and hashes each
version in another process on the same cores before it flips ``current``; the swap window
starts at the flip, and ``copy_and_swap_windows`` (from the start of the copy) shows what the
copy's CPU adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.main import traffic_for  # noqa: E402
from loadtest.report import latency_summary  # noqa: E402
from loadtest.runner import Runner  # noqa: E402
from loadtest.schedule import Step  # noqa: E402
from loadtest.server import proc_tree_sample  # noqa: E402
from loadtest.traffic import Mix  # noqa: E402
from models.artifacts.versions import (  # noqa: E402
    MANIFEST,
    VERSIONS,
    current_version,
    file_table,
    set_current,
)

TOKEN = "bench-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish_copy(root: Path, base: Path, name: str, corrupt: str | None) -> None:
    """Copy ``base`` as version ``name`` (fresh manifest), break it as asked, flip current."""
    dest = root / VERSIONS / name
    shutil.copytree(base, dest)
    man = orjson.loads((dest / MANIFEST).read_bytes())
    man.update(version=name, created_at=datetime.now(UTC).isoformat())
    if corrupt == "config":  # checksums fine, shapes not: caught when the nets are rebuilt
        doc = orjson.loads((dest / "din.json").read_bytes())
        doc["config"]["hidden_dims"] = [d + 1 for d in doc["config"]["hidden_dims"]]
        (dest / "din.json").write_bytes(orjson.dumps(doc))
    (dest / MANIFEST).write_bytes(orjson.dumps(man))
    man["files"] = file_table(dest)
    (dest / MANIFEST).write_bytes(orjson.dumps(man))
    if corrupt == "byte":  # after the checksums: same size, other content
        path = max(dest.glob("*.safetensors"), key=lambda p: p.stat().st_size)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    set_current(root, name)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s, self.samples = pid, every_s, []  # (monotonic s, bytes)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), proc_tree_sample(self.pid)[1]))
            time.sleep(self.every_s)


async def outcome(client: httpx.AsyncClient, name: str, timeout_s: float = 120.0) -> str:
    """Poll /admin/models until version ``name`` serves ("swapped") or is rejected."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = (await client.get("/admin/models", headers=AUTH)).json()
        if m["version"] == name:
            return "swapped"
        if (m.get("last_rejection") or {}).get("version") == name:
            return "rejected"
        await asyncio.sleep(0.05)
    return "timeout"


async def publisher(url: str, root: Path, base: Path, runner: Runner, plan: list[str | None],
                    steady_s: float, gap_s: float, windows: list[dict],
                    pool: ProcessPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await asyncio.sleep(steady_s)
        for i, corrupt in enumerate(plan):
            name = f"bench-{i}-{corrupt or 'new'}"
            t_copy = loop.time() - runner._t0
            # Another process publishes, as a build would: copying and hashing ~15 MB here
            # would hold this generator's GIL and show up as the server's latency.
            await loop.run_in_executor(pool, publish_copy, root, base, name, corrupt)
            t_pub = loop.time() - runner._t0  # `current` flipped: the server's part starts
            result = await outcome(client, name)
            windows.append({"version": name, "corrupt": corrupt, "result": result,
                            "t_copy": t_copy, "t_publish": t_pub,
                            "t_done": loop.time() - runner._t0})
            await asyncio.sleep(max(0.0, gap_s - (loop.time() - runner._t0 - t_pub)))


def start_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GENREC_ADMIN_TOKEN": TOKEN, "GENREC_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--artifacts", str(root),
                             "--no-build", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"genrec serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("genrec serve did not become ready in 300 s")


def analyse(records: list, windows: list[dict], rss: list[tuple[float, int]], t0_mono: float,
            steady_s: float, total_s: float) -> dict:
    def inside(t: float, start: str = "t_publish") -> bool:
        return any(w[start] <= t <= w["t_done"] + 0.5 for w in windows)

    steady = [r for r in records if 2.0 <= r.t < steady_s]  # first 2 s: connection warm-up
    swap = [r for r in records if inside(r.t)]
    rss_t = [(t - t0_mono, b) for t, b in rss]
    steady_rss = [b for t, b in rss_t if 0 <= t < steady_s]
    swap_rss = [b for t, b in rss_t if inside(t)]
    out = {"all": latency_summary(records, total_s),
           "steady": latency_summary(steady, steady_s - 2.0),
           "swap_windows": latency_summary(swap, max(1e-9, sum(
               w["t_done"] + 0.5 - w["t_publish"] for w in windows))),
           # From the start of the copy: the publisher's own CPU (copying and hashing the
           # version on the same two cores) included, which a build elsewhere would not cost.
           "copy_and_swap_windows": latency_summary(
               [r for r in records if inside(r.t, "t_copy")], max(1e-9, sum(
                   w["t_done"] + 0.5 - w["t_copy"] for w in windows))),
           "versions": windows,
           "rss_mb": {"steady_median": round(float(np.median(steady_rss)) / 2**20, 1),
                      "swap_peak": round(max(swap_rss, default=0) / 2**20, 1),
                      "run_peak": round(max(b for _, b in rss_t) / 2**20, 1)}}
    # The generator's own lag (sent later than scheduled), which latency includes.
    out["send_lag_p99_ms"] = {
        name: round(1000 * float(np.percentile([r.send_lag_s for r in rs], 99)), 1)
        for name, rs in (("steady", steady), ("swap_windows", swap)) if rs}
    s99, w99 = out["steady"].get("p99_ms"), out["swap_windows"].get("p99_ms")
    out["p99_swap_over_steady"] = round(w99 / s99, 2) if s99 and w99 else None
    out["failed"] = sum(1 for r in records if r.error)
    out["slowest"] = [{"t": round(r.t, 2), "route": r.route, "kind": r.kind,
                       "ms": round(1000 * r.latency_s, 1)}
                      for r in sorted(records, key=lambda r: -r.latency_s)[:20]]
    return out


async def run(args: argparse.Namespace, url: str, root: Path, base: Path,
              pid: int) -> dict:
    plan: list[str | None] = [None] * args.new  # None: a valid new version
    for j, kind in enumerate(["byte", "config"][: args.corrupt]):  # 5 + 2: N N B N N C N
        plan.insert(min(len(plan), 2 + 3 * j), kind)
    total = args.steady_s + len(plan) * args.gap_s + args.tail_s
    traffic = traffic_for(args.dataset, Mix(), None, 10, args.seed)
    runner = Runner(url, traffic, process="poisson", timeout_s=10.0, seed=args.seed)
    sampler = RssSampler(pid)
    windows: list[dict] = []
    sampler.start()
    t0_mono = time.monotonic()
    with ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(int).result()  # the worker process exists before the load starts
        pub = asyncio.create_task(publisher(url, root, base, runner, plan, args.steady_s,
                                            args.gap_s, windows, pool))
        records = await runner.run([Step(args.rps, total)])
        await pub
    sampler.stop.set()
    return analyse(records, windows, sampler.samples, t0_mono, args.steady_s, total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "ml-100k")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--rps", type=float, default=50.0)
    ap.add_argument("--steady-s", type=float, default=30.0)
    ap.add_argument("--gap-s", type=float, default=10.0)
    ap.add_argument("--tail-s", type=float, default=10.0)
    ap.add_argument("--new", type=int, default=5)
    ap.add_argument("--corrupt", type=int, default=2, choices=(0, 1, 2))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = ap.parse_args()
    base = current_version(args.artifacts)
    if base is None:
        sys.exit(f"no current version in {args.artifacts}")
    with tempfile.TemporaryDirectory(prefix="genrec-reload-") as tmp:
        root = Path(tmp) / args.artifacts.name
        shutil.copytree(base, root / VERSIONS / base.name)
        set_current(root, base.name)
        port = free_port()
        proc = start_server(root, port)
        try:
            result = asyncio.run(run(args, f"http://127.0.0.1:{port}", root,
                                     root / VERSIONS / base.name, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result["config"] = {k: str(v) for k, v in vars(args).items()}
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reload_under_load.json").write_text(text)
    ok = result["failed"] == 0 and all(
        w["result"] == ("rejected" if w["corrupt"] else "swapped") for w in result["versions"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
