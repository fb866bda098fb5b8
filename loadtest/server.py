"""The server's CPU and memory while it is loaded.

Two sources: a local process tree (``--server-pid``: the pid and every descendant, read from
/proc, which covers several uvicorn workers), or the service's own /metrics
(``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` from prometheus-client's
process collector; one process only). Sampled about once a second: one scrape a second is
noise next to the load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sample:
    t: float  # seconds from the run's start
    cpu_s: float  # CPU seconds used so far (user + system), every process counted
    rss_bytes: int  # resident memory now, summed over the processes


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def proc_tree_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of ``pid`` and all its descendants, from /proc."""
    cpu, rss, todo, seen = 0.0, 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            statm = Path(f"/proc/{p}/statm").read_text().split()
        except OSError:  # the process ended between the listing and the read
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        cpu += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        rss += int(statm[1]) * _PAGE
        todo += _children(p)
    return cpu, rss


def parse_metrics(text: str) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) from a Prometheus exposition, None when it has neither."""
    cpu = rss = None
    for fam in text_string_to_metric_families(text):
        if fam.name == "process_cpu_seconds":
            cpu = sum(s.value for s in fam.samples)
        elif fam.name == "process_resident_memory_bytes":
            rss = sum(s.value for s in fam.samples)
    if cpu is None or rss is None:
        return None
    return float(cpu), int(rss)


class ServerProbe:
    def __init__(self, base_url: str, pid: int | None = None) -> None:
        self.base_url, self.pid = base_url.rstrip("/"), pid
        self.samples: list[Sample] = []

    async def sample(self, session: aiohttp.ClientSession, t: float) -> None:
        got: tuple[float, int] | None = None
        if self.pid is not None:
            got = proc_tree_sample(self.pid)
        else:
            try:
                async with session.get(self.base_url + "/metrics",
                                       timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                    if resp.status == 200:
                        got = parse_metrics(await resp.text())
            except (aiohttp.ClientError, TimeoutError):
                got = None
        if got is not None:
            self.samples.append(Sample(t, *got))
