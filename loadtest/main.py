"""`python -m loadtest` / `genrec loadtest`: open-loop load against a running service.

  python -m loadtest --url http://127.0.0.1:8000 --steps 50x30,100x30 --out loadtest-out
"""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

from loadtest.schedule import PROCESSES, parse_steps
from loadtest.traffic import Mix, Traffic

console = Console(stderr=True)


def check_host(url: str, allowed: list[str]) -> None:
    """Refuse a target that is neither loopback nor named in ``allowed`` (a load test aimed
    at the wrong host is an attack)."""
    host = urlsplit(url).hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    if host in allowed:
        return
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError(f"{host} is not a loopback address; name it with --allow-host to "
                         "load it")


def traffic_for(dataset: str, mix: Mix, force: str | None, k: int, seed: int) -> Traffic:
    """Known users, items and histories from the dataset the service was built on."""
    from models.data import load_dataset

    ds = load_dataset(dataset)
    hist = [[ds.items.ids[i] for i in seq[-50:]] for seq in ds.sequences if len(seq)]
    return Traffic(list(ds.users.ids), list(ds.items.ids), hist, mix=mix, force=force, k=k,
                   seed=seed)


def loadtest(
    url: Annotated[str, typer.Option(help="the service's base URL")] = "http://127.0.0.1:8000",
    steps: Annotated[str, typer.Option(
        help="RATE[xSECONDS][:MAX] steps, comma-separated, e.g. 25x30,50x30,100x30")] = "50x30",
    process: Annotated[str, typer.Option(help=f"arrivals: {' or '.join(PROCESSES)}")] = "poisson",
    mix: Annotated[str, typer.Option(
        help="KIND=WEIGHT,... over known, cold, history, forced, events (default: "
             "known .55, cold .1, history .1, forced .05, events .2)")] = "",
    path: Annotated[str | None, typer.Option(
        help="force every /recommend onto this path (cascade or generative)")] = None,
    dataset: Annotated[str, typer.Option(help="the dataset the service serves (its users and "
                                              "items)")] = "ml-100k",
    k: int = 10,
    timeout_s: Annotated[float, typer.Option(help="client timeout per request, s")] = 10.0,
    server_pid: Annotated[int | None, typer.Option(
        help="read the server's CPU and RSS from /proc (pid and descendants) instead of "
             "its /metrics")] = None,
    out: Annotated[Path, typer.Option(help="where the JSON, markdown and PNGs go")] = Path(
        "loadtest-out"),
    allow_host: Annotated[list[str] | None, typer.Option(
        help="a non-loopback host that may be loaded (repeatable)")] = None,
    seed: int = 0,
) -> None:
    """Open-loop load (constant or Poisson arrivals, latency from the scheduled send) against
    a running genrec; writes summary.json, summary.md, records.csv.gz and two PNGs."""
    try:
        from loadtest.report import summarize, write
        from loadtest.runner import run_steps
        from loadtest.server import ServerProbe
    except ImportError as exc:  # aiohttp comes with the `load` extra
        console.print(f"[red]error:[/] {exc}; install the load extra: pip install -e '.[load]'")
        raise typer.Exit(2) from exc

    try:
        check_host(url, allow_host or [])
        plan = parse_steps(steps)
        if process not in PROCESSES:
            raise ValueError(f"--process must be one of {PROCESSES}, got {process!r}")
        traffic = traffic_for(dataset, Mix.parse(mix), path, k, seed)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    probe = ServerProbe(url, server_pid)
    console.print(f"load on {url}: {len(plan)} step(s), {process} arrivals")
    t = time.time()
    records, wall = run_steps(url, traffic, plan, process=process, timeout_s=timeout_s,
                              seed=seed, probe=probe,
                              on_step=lambda i, s: console.print(
                                  f"step {i}: {s.rps:g} rps for {s.duration_s:g} s"))
    config = {"url": url, "steps": steps, "process": process, "mix": mix or "default",
              "force": path, "dataset": dataset, "k": k, "timeout_s": timeout_s,
              "seed": seed, "started_unix": round(t, 1), "wall_s": round(wall, 1)}
    summary = summarize(records, plan, probe.samples, config)
    files = write(records, summary, out)
    console.print((out / "summary.md").read_text())
    console.print("wrote " + ", ".join(str(f) for f in files))


def main() -> None:
    typer.run(loadtest)
