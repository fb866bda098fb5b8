"""The trained components of one `genrec build` side by side, each in a worker process.

Why: on a small CPU a component's ops are too small for torch's threads to pay (TIGER's CPU
default trains about 1.1x faster on two threads than on one, on 2 cores), so two components
trained at once with one thread each end sooner than both in turn with two.

Order: a component starts once everything it ``needs`` is built; one that mines the recall
sources for its training candidates (``Component.after_recall``: the rankers) waits for every
other trained component, so it sees what a sequential build shows it. Popularity, ItemCF and
the fusion fit (``always``) stay in the calling process, before and after.

Files: each worker trains into a private directory beside the staging one, holding hard links
to what is already complete there; when a component ends, its files move into the staging
directory. The staging directory, which ``--progressive`` publishes, so only ever holds whole
files. A worker reseeds torch and numpy before each component and keeps to ``threads``
threads, so a parallel build repeats itself whichever worker takes which component.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from models.build.job import BuildJob
from models.registry import Component, component, resolve

# (component just landed) -> None: the build's hook (the progressive build's snapshots).
Landed = Callable[[str], None]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the job: all of it picklable, none of it loaded."""

    dataset: str
    profile: str
    overrides: tuple[str, ...]
    seed: int
    device: str
    threads: int


_job: BuildJob | None = None  # the worker's job (its data loaded once per process)


def usable_cpus() -> int:
    """The cores this process may run on (its affinity: a container's or taskset's share, which
    ``os.cpu_count`` ignores)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _init_worker(spec: WorkerSpec) -> None:
    global _job
    import faiss

    from models.build.profiles import profile as load_profile
    from models.data import leave_one_out, load_dataset
    from models.train.loop import cap_threads

    cap_threads(spec.threads)
    faiss.omp_set_num_threads(spec.threads)
    parent = os.getppid()

    def exit_with_parent() -> None:  # a killed build must not leave workers training
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    ds = load_dataset(spec.dataset)
    _job = BuildJob(ds=ds, split=leave_one_out(ds), seed=spec.seed, progress=False,
                    device=spec.device, profile=load_profile(spec.profile, spec.overrides),
                    console=Console(quiet=True))


def _train_one(name: str, work: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Train component ``name`` into ``work``; -> (its report, its timings)."""
    assert _job is not None, "worker not initialised"
    comp = component(name)
    _job.out, _job.timings = work, {}
    torch.manual_seed(_job.seed)
    np.random.seed(_job.seed)
    t = time.perf_counter()
    report = resolve(comp.build)(_job, comp)
    _job.timings[comp.key] = time.perf_counter() - t
    return report, dict(_job.timings)


def _private_copy(staging: Path, name: str) -> Path:
    """A directory beside ``staging`` with hard links to its complete files (copies where the
    file system refuses links)."""
    work = staging.with_name(f"{staging.name}.{name}")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(staging, work, copy_function=_link_or_copy)
    return work


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _ready(comp: Component, pending: set[str]) -> bool:
    """Whether ``comp`` may start while ``pending`` are unfinished (itself among them)."""
    if any(n in pending for n in comp.needs):
        return False
    if comp.after_recall:  # every other trained component first
        return not any(n != comp.name and not component(n).after_recall for n in pending)
    return True


def discard_work_dirs(staging: Path) -> None:
    """Remove the workers' private directories beside ``staging`` (a killed build's too)."""
    for work in staging.parent.glob(f"{staging.name}.*"):
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """Spawned workers inherit these: numpy's BLAS and OpenMP size their pools from them when
    they load, before any initializer could cap them."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: str(threads) for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_parallel(job: BuildJob, spec: WorkerSpec, names: list[str], workers: int,
                   configs: dict[str, Any], landed: Landed | None = None) -> None:
    """Train the components ``names`` (registry order, none ``always``) into ``job.out`` with
    ``workers`` processes; their reports go into ``configs`` and their seconds into
    ``job.timings``. ``landed(name)`` runs after each component's files are in place."""
    staging: Path = job.out
    pending = set(names)  # not yet finished
    running: dict[Future, tuple[str, Path]] = {}
    ctx = multiprocessing.get_context("spawn")  # fork would inherit torch's thread pools
    with _thread_env(spec.threads), ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(spec,)) as pool:
        try:
            while pending:
                _start_ready(pool, names, pending, running, staging, workers)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name, work = running[fut]
                    report, timings = fut.result()  # a worker's error is raised here
                    comp = component(name)
                    for file in comp.files:
                        os.replace(work / file, staging / file)
                    shutil.rmtree(work, ignore_errors=True)
                    del running[fut]
                    configs[comp.key] = report
                    job.timings.update(timings)
                    pending.discard(name)
                    job.console.print(f"{name} trained in {timings[comp.key]:.1f}s "
                                      f"({workers} workers)")
                    if landed is not None:
                        landed(name)
        except BaseException:
            # Stop the other workers now rather than let them finish their components.
            procs = list((pool._processes or {}).values())  # no public kill before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(10)
            raise
        finally:
            for _, work in running.values():
                shutil.rmtree(work, ignore_errors=True)


def _start_ready(pool: ProcessPoolExecutor, names: list[str], pending: set[str],
                 running: dict[Future, tuple[str, Path]], staging: Path, workers: int) -> None:
    """Submit every ready component, in registry order, while a worker is free."""
    started = {n for n, _ in running.values()}
    for name in names:
        if len(running) >= workers:
            break
        if name in pending and name not in started and _ready(component(name), pending):
            work = _private_copy(staging, name)
            try:
                running[pool.submit(_train_one, name, work)] = (name, work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            started.add(name)
    if not running:
        raise RuntimeError(f"no component can start: {sorted(pending)} wait on each other")
