"""Summaries of a run: per step and route, JSON, markdown and two PNGs.

Latency percentiles are over every request that was sent, answered or not: a timeout counts
at the client timeout, so a step whose answers stop coming shows it in its p99 instead of
dropping those requests from the figures. "achieved rps" counts 2xx answers only.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.runner import Record
from loadtest.schedule import Step
from loadtest.server import Sample


def _ms(x: float) -> float:
    return round(1000.0 * float(x), 1)


def latency_summary(recs: list[Record], duration_s: float) -> dict[str, Any]:
    lat = np.array([r.latency_s for r in recs if not math.isnan(r.latency_s)])
    ok = sum(1 for r in recs if not r.error)
    errors = collections.Counter(r.error for r in recs if r.error)
    out: dict[str, Any] = {"sent": len(recs), "ok": ok,
                           "achieved_rps": round(ok / duration_s, 2),
                           "errors": dict(sorted(errors.items())),
                           "degraded": sum(r.degraded for r in recs),
                           "partial": sum(r.partial for r in recs)}
    if len(lat):
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        out.update(p50_ms=_ms(p50), p95_ms=_ms(p95), p99_ms=_ms(p99), max_ms=_ms(lat.max()))
    return out


def _server(samples: list[Sample], t0: float, t1: float) -> dict[str, Any]:
    """CPU cores used (CPU seconds per wall second) and peak RSS over [t0, t1]."""
    inside = [s for s in samples if t0 - 1.5 <= s.t <= t1 + 1.5]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    cores = (last.cpu_s - first.cpu_s) / max(last.t - first.t, 1e-9)
    return {"cpu_cores": round(cores, 3),
            "rss_mb_max": round(max(s.rss_bytes for s in inside) / 2**20, 1)}


def summarize(records: list[Record], steps: list[Step], samples: list[Sample],
              config: dict[str, Any]) -> dict[str, Any]:
    out_steps = []
    start = 0.0
    for i, step in enumerate(steps):
        recs = [r for r in records if r.step == i]
        routes = sorted({r.route for r in recs})
        lags = np.array([r.send_lag_s for r in recs]) if recs else np.zeros(1)
        out_steps.append({
            "step": i, "offered_rps": step.rps, "duration_s": step.duration_s,
            "all": latency_summary(recs, step.duration_s),
            "routes": {rt: latency_summary([r for r in recs if r.route == rt], step.duration_s)
                       for rt in routes},
            "send_lag_p99_ms": _ms(float(np.percentile(lags, 99))),
            "server": _server(samples, start, start + step.duration_s),
        })
        start += step.duration_s
    return {"config": config, "steps": out_steps}


def markdown(summary: dict[str, Any]) -> str:
    cfg = summary["config"]
    lines = [f"# Load test against {cfg.get('url')}", "",
             f"{cfg.get('process')} arrivals, timeout {cfg.get('timeout_s')} s, mix "
             f"{cfg.get('mix')}{', forced path ' + cfg['force'] if cfg.get('force') else ''}; "
             "latency from the scheduled send; achieved rps counts 2xx.", "",
             "| step | offered rps | route | sent | achieved rps | p50 ms | p95 ms | p99 ms | "
             "max ms | errors | degraded | server CPU cores | server RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for st in summary["steps"]:
        srv = st["server"]
        rows = [("all", st["all"])] + list(st["routes"].items())
        for j, (route, s) in enumerate(rows):
            errs = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "0"
            cpu = srv.get("cpu_cores", "") if j == 0 else ""
            rss = srv.get("rss_mb_max", "") if j == 0 else ""
            lines.append(f"| {st['step']} | {st['offered_rps']:g} | {route} | {s['sent']} | "
                         f"{s['achieved_rps']} | {s.get('p50_ms', '')} | {s.get('p95_ms', '')} "
                         f"| {s.get('p99_ms', '')} | {s.get('max_ms', '')} | {errs} | "
                         f"{s['degraded']} | {cpu} | {rss} |")
    lag = max((st["send_lag_p99_ms"] for st in summary["steps"]), default=0.0)
    lines += ["", f"Generator send lag p99 (worst step): {lag} ms."]
    return "\n".join(lines) + "\n"


def plot(records: list[Record], summary: dict[str, Any], out: Path) -> list[Path]:
    """latency_time.png (every request's latency against its scheduled time, per route) and
    latency_load.png (p50/p95/p99 against offered rps). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot as plt

    paths = [out / "latency_time.png", out / "latency_load.png"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for route in sorted({r.route for r in records}):
        rs = [r for r in records if r.route == route and not math.isnan(r.latency_s)]
        ax.scatter([r.t for r in rs], [1000 * r.latency_s for r in rs], s=3, alpha=0.5,
                   label=route)
    ax.set(xlabel="scheduled send (s from start)", ylabel="latency (ms)", yscale="log",
           title="latency over time")
    ax.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = summary["steps"]
    x = [s["offered_rps"] for s in steps]
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        ax.plot(x, [s["all"].get(q, np.nan) for s in steps], marker="o", label=q[:3])
    ax.set(xlabel="offered rps", ylabel="latency (ms)", yscale="log",
           title="latency against offered load (all routes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def write(records: list[Record], summary: dict[str, Any], out: Path,
          plots: bool = True) -> list[Path]:
    """summary.json, summary.md, records.csv.gz and (when matplotlib is there) the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    (out / "summary.md").write_text(markdown(summary))
    with gzip.open(out / "records.csv.gz", "wt", newline="") as f:
        rows = [asdict(r) for r in records]
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["step"])
        w.writeheader()
        w.writerows(rows)
    written = [out / "summary.json", out / "summary.md", out / "records.csv.gz"]
    if plots:
        # matplotlib is optional (the load extra); the tables are written without it
        with contextlib.suppress(ImportError):
            written += plot(records, summary, out)
    return written
