"""Throughput per path with and without cross-request batching, in one run: the highest
offered rate each path sustains with p99 <= 50 ms and 0 errors.

  python benchmarks/throughput.py --artifacts artifacts/ml-100k --out /tmp/throughput \
      --config unbatched:GENREC_BATCH_MAX=1 --config batched:GENREC_BATCH_MAX=16

``--mix`` sets the request mix (default ``known=1``); each row gives the share of its
/recommend requests answered from the result cache (``GENREC_RESULT_CACHE_SIZE=0`` in a
config turns it off).

For each config (a name and env settings, e.g. ``GENREC_BATCH_MAX=1``, ``workers=2``), a
real `genrec serve --no-build` process serves the artifacts (embedded store, or Redis when
GENREC_REDIS_URL is set, which ``workers`` > 1 needs). For each path, `python -m loadtest`
sends open-loop Poisson arrivals of known users' /recommend forced onto that path, one step
per rate, lowest first, ``--step-s`` seconds each, after a short warm-up; the steps stop after
the first one past capacity (an error, or p99 over 1 s). A step meets the goal when every
request got a 2xx and p99 <= 50 ms. Configs alternate per path, so machine drift hits them alike.

Writes results.json, results.md (one row per config, path and rate) and capacity.png.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
P99_GOAL_MS = 50.0
STOP_MS = 1_000.0  # a step this slow is past capacity: the rates above it are not run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_config(text: str) -> tuple[str, dict[str, str], int, Path | None, Path]:
    """"name:KEY=V,KEY=V,workers=N,artifacts=PATH,code=PATH" -> (name, env, workers,
    artifacts or None for ``--artifacts``, code). ``code`` (default: this checkout) serves
    from another checkout, a git worktree of an earlier commit say, so two versions of the
    code meet the same load in one run."""
    name, _, rest = text.partition(":")
    env, workers, artifacts, code = {}, 1, None, ROOT
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key == "workers":
            workers = int(value)
        elif key == "artifacts":
            artifacts = Path(value)
        elif key == "code":
            code = Path(value).resolve()
        else:
            env[key] = value
    return name, env, workers, artifacts, code


def start(artifacts: Path, env: dict[str, str], workers: int, code: Path = ROOT
          ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # `-m` imports from the cwd first; PYTHONPATH keeps the checkout ahead of the editable
    # install for the server's own subprocesses too.
    full = {**os.environ, "GENREC_LOG_LEVEL": "warning", **env, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
           "--no-build", "--port", str(port)]
    if workers > 1:
        full.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="genrec-prom-"))
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=code, env=full)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"genrec serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("genrec serve did not become ready in 300 s")


def cache_lookups(url: str) -> dict[str, float]:
    """The server's result-cache lookups so far, by result (hit, miss), from its /metrics."""
    out = {"hit": 0.0, "miss": 0.0}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if fam.name == "genrec_result_cache_lookups":
            for s in fam.samples:
                if s.name.endswith("_total") and s.labels.get("result") in out:
                    out[s.labels["result"]] += s.value
    return out


def load(url: str, path: str, steps: str, pid: int, out: Path, dataset: str,
         mix: str) -> list[dict]:
    """One `python -m loadtest` run -> its summary's steps."""
    subprocess.run([sys.executable, "-m", "loadtest", "--url", url, "--path", path,
                    "--mix", mix, "--steps", steps, "--process", "poisson",
                    "--server-pid", str(pid), "--dataset", dataset, "--out", str(out)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())["steps"]


def meets_goal(step: dict) -> bool:
    s = step["all"]
    return (not s["errors"] and s["ok"] == s["sent"]
            and s.get("p99_ms", float("inf")) <= P99_GOAL_MS)


def sweep(url: str, pid: int, path: str, rates: list[float], step_s: float, out: Path,
          dataset: str, mix: str) -> list[dict]:
    """Steps at each rate until one is past capacity (an error, or p99 over ``STOP_MS``)
    -> one row per step run, with the share of its /recommend lookups that hit the result
    cache."""
    load(url, path, f"{min(rates)}x5", pid, out / "warmup", dataset, mix)
    rows = []
    for rate in rates:
        before = cache_lookups(url)
        (step,) = load(url, path, f"{rate}x{step_s}", pid, out / f"{rate:g}", dataset, mix)
        after = cache_lookups(url)
        hits, total = after["hit"] - before["hit"], sum(after.values()) - sum(before.values())
        s = step["all"]
        rows.append({"offered_rps": rate, "achieved_rps": s["achieved_rps"],
                     "p50_ms": s.get("p50_ms"), "p95_ms": s.get("p95_ms"),
                     "p99_ms": s.get("p99_ms"), "errors": s["errors"],
                     "cpu_cores": step["server"].get("cpu_cores"),
                     "cache_hits": round(hits / total, 3) if total else None,
                     "meets_goal": meets_goal(step)})
        if s["errors"] or s.get("p99_ms", float("inf")) > STOP_MS:
            break
    return rows


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = sorted({p for cfg in results.values() for p in cfg})
    fig, axes = plt.subplots(1, len(paths), figsize=(6 * len(paths), 4), squeeze=False)
    for ax, path in zip(axes[0], paths, strict=True):
        for name, cfg in results.items():
            rows = cfg.get(path, [])
            ax.plot([r["offered_rps"] for r in rows], [r["p99_ms"] for r in rows],
                    marker="o", label=name)
        ax.axhline(P99_GOAL_MS, color="grey", ls="--", lw=1)
        ax.set(title=path, xlabel="offered rps", ylabel="p99 ms", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "capacity.png", dpi=120)


def capacity(rows: list[dict]) -> float:
    return max((r["offered_rps"] for r in rows if r["meets_goal"]), default=0.0)


def markdown(results: dict) -> str:
    lines = ["| config | path | offered rps | achieved | p50 / p95 / p99 ms | errors | "
             "server cores | result-cache hits | goal |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, cfg in results.items():
        for path, rows in cfg.items():
            for r in rows:
                lines.append(f"| {name} | {path} | {r['offered_rps']:g} | {r['achieved_rps']} | "
                             f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} | "
                             f"{sum(r['errors'].values())} | {r['cpu_cores']} | "
                             f"{r.get('cache_hits')} | {'yes' if r['meets_goal'] else 'no'} |")
    lines += ["", "| config | path | highest rate meeting p99 <= 50 ms, 0 errors |",
              "| --- | --- | --- |"]
    lines += [f"| {name} | {path} | {capacity(rows):g} |"
              for name, cfg in results.items() for path, rows in cfg.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "ml-100k")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--config", action="append", required=True,
                    help="NAME:KEY=VALUE,... (env settings; workers=N; artifacts=PATH "
                         "instead of --artifacts; code=PATH to serve another checkout), "
                         "repeatable")
    ap.add_argument("--paths", default="cascade,generative")
    ap.add_argument("--mix", default="known=1",
                    help="loadtest's request mix (default: known users only; \"\" = its "
                         "default mix, with events that change histories)")
    ap.add_argument("--rates", action="append", default=[],
                    help="PATH=R1,R2,... (default 25,50,75,100,150,200,300,400)")
    ap.add_argument("--step-s", type=float, default=20.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rates = {p: [25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0]
             for p in args.paths.split(",")}
    for item in args.rates:
        path, _, values = item.partition("=")
        rates[path] = [float(v) for v in values.split(",")]
    configs = [parse_config(c) for c in args.config]
    results: dict[str, dict[str, list[dict]]] = {name: {} for name, *_ in configs}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    for i, path in enumerate(args.paths.split(",")):
        order = configs if i % 2 == 0 else configs[::-1]
        for name, env, workers, artifacts, code in order:
            proc, url = start(artifacts or args.artifacts, env, workers, code)
            try:
                results[name][path] = sweep(url, proc.pid, path, rates[path], args.step_s,
                                            args.out / name / path, args.dataset, args.mix)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(f"{name} {path}: {capacity(results[name][path]):g} rps", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "argv": sys.argv, "cpus": os.cpu_count(),
            "configs": args.config, "step_s": args.step_s, "p99_goal_ms": P99_GOAL_MS,
            "mix": args.mix}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results},
                                                      indent=1))
    (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
