"""`genrec build`: dataset -> every component of ``models.registry.COMPONENTS`` trained on the
leave-one-out training part -> an artifacts directory.

The steps run in the registry's order, each as ``build(job, component) -> report`` writing its
component's files; the report goes to ``manifest.json`` under ``configs``. The directory's own
files (manifest, id maps, user features) are ``models.artifacts.manifest``'s. Models train on
the training part only, so `genrec eval` numbers are honest. Each build is a new version
(``models.artifacts.versions``): assembled under a temporary name, listed file by file with
checksums in its manifest, then published as ``<out>/versions/<version>/`` and made
``<out>/current``; older versions beyond ``keep`` are pruned. A failed build leaves ``current``
as it was. Nothing is pickled.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.numpy import save_file

from models.artifacts import versions
from models.artifacts.manifest import (
    ARTIFACT_VERSION,
    ID_MAPS,
    MANIFEST,
    USER_FEATURE_NAMES,
    USER_FEATURES,
    write_json,
)
from models.build.job import BuildJob
from models.build.parallel import WorkerSpec, discard_work_dirs, train_parallel, usable_cpus
from models.build.partial import Reuse
from models.build.profiles import profile as load_profile
from models.data import leave_one_out, load_dataset
from models.registry import COMPONENTS, RECALL, Component, resolve


def build(
    dataset: str,
    out_dir: Path,
    profile: str = "default",
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    device: str = "cpu",
    only: list[str] | None = None,
    overrides: list[str] | None = None,
    keep: int = versions.DEFAULT_KEEP,
    progressive: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Train everything and publish it as a new version of the artifacts directory ``out_dir``
    (``out_dir/versions/<version>``, then ``out_dir/current``); returns the manifest.

    ``only``: retrain just these components (``models.registry``; those trained on one's output
    are retrained with it) and copy every other component from ``out_dir``'s current version,
    which must have been built from the same data. Popularity, ItemCF and the fusion plans are
    always refitted. ``overrides``: ``GROUP.FIELD=VALUE`` settings on top of the profile.
    ``keep``: how many versions to keep (the newest; the current one is never deleted).
    ``progressive``: also publish a partial version each time a new recall source is trained
    (the first one holds popularity and ItemCF, seconds in), so a service watching
    ``current`` answers long before the whole build is done (``models/engine/factory.py``
    serves a partial version's paths from what is live). ``workers``: train that many
    components at once, each in its own process on its share of the cores
    (``models/build/parallel.py``)."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    if progressive and only:
        raise ValueError("--progressive publishes a whole build's steps; it cannot be used "
                         "with --only")
    # A bad profile or override fails before any data is read.
    checked = load_profile(profile, overrides or ())
    console = console or Console(quiet=not progress)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t_start = time.perf_counter()
    ds = load_dataset(dataset)
    console.print(f"[bold]{ds.name}[/]: {ds.n_users} users, {ds.n_items} items, "
                  f"{ds.n_interactions} interactions")
    out_dir = Path(out_dir)
    reuse = Reuse(out_dir, ds.fingerprint, only)
    tmp = versions.staging_dir(out_dir)
    versions.discard(tmp)
    discard_work_dirs(tmp)
    tmp.mkdir(parents=True)
    job = BuildJob(ds=ds, split=leave_one_out(ds), seed=seed, progress=progress, device=device,
                   profile=checked, out=tmp, console=console)
    meta = {"dataset": dataset, "profile": profile, "reuse": reuse,
            "overrides": list(overrides or ()), "root": out_dir}
    snapshot = None
    if progressive:
        def snapshot(configs: dict[str, Any], todo: list[str]) -> None:
            _publish_partial(job, meta, configs, todo, keep)
    try:
        _write_ids(job)
        spec = WorkerSpec(dataset, profile, tuple(overrides or ()), seed, device,
                          threads=max(1, usable_cpus() // max(workers, 1)))
        configs = _train_all(job, reuse, snapshot, spec, workers)
        manifest = _finish(job, meta, configs, tmp)
        published = versions.publish(out_dir, tmp, manifest["version"], keep)
    except BaseException:
        versions.discard(tmp)  # never leave a half-built directory behind
        discard_work_dirs(tmp)
        raise
    console.print(f"artifacts written to {published} (now {out_dir / versions.CURRENT}) in "
                  f"{time.perf_counter() - t_start:.1f}s")
    return manifest


def _train_all(job: BuildJob, reuse: Reuse,
               snapshot: Callable[[dict[str, Any], list[str]], None] | None = None,
               spec: WorkerSpec | None = None, workers: int = 1) -> dict[str, Any]:
    """Each component trained (or, in a partial rebuild, copied) in registry order; -> the
    manifest's ``configs``, keyed by each component's manifest key. ``snapshot(configs,
    still to train)`` runs whenever the components done so far serve a new recall source.
    With ``workers`` > 1 the trained components run side by side (``models/build/parallel``)."""
    if workers > 1 and spec is not None:
        return _train_side_by_side(job, reuse, snapshot, spec, workers)
    configs: dict[str, Any] = {}
    done: list[str] = []
    served = 0
    for i, comp in enumerate(COMPONENTS):
        if not (comp.always or reuse.train(comp.name)):
            reuse.keep(comp, job.out, configs, job.timings)
        else:
            t = time.perf_counter()
            configs[comp.key] = resolve(comp.build)(job, comp)
            job.timings[comp.key] = time.perf_counter() - t
        done.append(comp.name)
        sources = sum(all(n in done for n in s.needs) for s in RECALL)
        todo = [c.name for c in COMPONENTS[i + 1:]]
        if snapshot is not None and sources > served and todo:
            snapshot(configs, todo)
        served = sources
    return configs


def _train_side_by_side(job: BuildJob, reuse: Reuse,
                        snapshot: Callable[[dict[str, Any], list[str]], None] | None,
                        spec: WorkerSpec, workers: int) -> dict[str, Any]:
    """``_train_all`` with the trained components in worker processes: the ``always`` ones
    before the first trained component (popularity, ItemCF) first, then the kept ones copied,
    then the trained ones side by side, then the remaining ``always`` ones (the fusion fit)."""
    configs: dict[str, Any] = {}
    first = next(i for i, c in enumerate(COMPONENTS) if not c.always)
    done: list[str] = []
    served = 0

    def step(comp: Component) -> None:
        t = time.perf_counter()
        configs[comp.key] = resolve(comp.build)(job, comp)
        job.timings[comp.key] = time.perf_counter() - t
        landed(comp.name)

    def landed(name: str) -> None:
        nonlocal served
        done.append(name)
        sources = sum(all(n in done for n in s.needs) for s in RECALL)
        todo = [c.name for c in COMPONENTS if c.name not in done]
        if snapshot is not None and sources > served and todo:
            snapshot(configs, todo)
        served = sources

    for comp in COMPONENTS[:first]:
        if comp.always:
            step(comp)
    trained = [c.name for c in COMPONENTS if not c.always and reuse.train(c.name)]
    for comp in COMPONENTS:
        if not comp.always and not reuse.train(comp.name):
            reuse.keep(comp, job.out, configs, job.timings)
            landed(comp.name)
    train_parallel(job, spec, trained, workers, configs, landed)
    for comp in COMPONENTS[first:]:
        if comp.always:
            step(comp)
    return configs


def _publish_partial(job: BuildJob, meta: dict[str, Any], configs: dict[str, Any],
                     todo: list[str], keep: int) -> None:
    """Publish what the staging directory holds now as a partial version: a copy (later
    steps keep writing to the staging directory) with its own manifest."""
    root: Path = meta["root"]
    snap = root.with_name(root.name + ".snapshot")
    versions.discard(snap)
    shutil.copytree(job.out, snap)
    manifest = _finish(job, meta, configs, snap, todo)
    versions.publish(root, snap, manifest["version"], keep)
    job.console.print(f"published partial version {manifest['version']} "
                      f"(still training: {', '.join(todo)})")


def _write_ids(job: BuildJob) -> None:
    """Id maps and user features, first: the fusion step loads the directory as a runtime."""
    ds, tmp = job.ds, job.out
    write_json(tmp / ID_MAPS, {"users": ds.users.ids, "items": ds.items.ids})
    codes = job.user_codes[0].numpy().astype(np.int64)
    save_file({"codes": codes}, str(tmp / USER_FEATURES))
    side = ds.user_side
    write_json(tmp / USER_FEATURE_NAMES,
               {"names": side.names if side else [], "vocab": side.vocab if side else {}})


def _finish(job: BuildJob, meta: dict[str, Any], configs: dict[str, Any], tmp: Path,
            todo: list[str] | None = None) -> dict[str, Any]:
    """The manifest of the version assembled in ``tmp``, written last: it marks the version
    complete (``partial`` with the components ``todo`` when a progressive build publishes
    its steps) and lists every other file with its size and sha256. Its version names a
    directory not yet in the artifacts root."""
    ds, reuse = job.ds, meta["reuse"]
    sid_report = configs.get("semantic_ids")
    version = f"{ds.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    manifest = {
        "version": versions.unique_version(meta["root"], version),
        "artifact_format": ARTIFACT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "partial": bool(todo),
        "training": todo or [],
        "profile": meta["profile"],
        "overrides": meta["overrides"],
        # A partial rebuild (`--only`): which components this profile retrained.
        "retrained": None if reuse.only is None else sorted(reuse.only),
        "seed": job.seed,
        "dataset": {"name": ds.name, "source": meta["dataset"], "fingerprint": ds.fingerprint,
                    "n_users": ds.n_users, "n_items": ds.n_items,
                    "n_interactions": ds.n_interactions, "split": "leave-one-out"},
        "configs": configs,
        "train_seconds": {k: round(v, 3) for k, v in job.timings.items()},
        "semantic_ids": None if sid_report is None else {
            k: sid_report[k] for k in ("source", "utilisation", "collision_rate",
                                       "max_items_per_code", "id_length")},
        "metrics": {},
        "files": versions.file_table(tmp),
    }
    write_json(tmp / MANIFEST, manifest)
    return manifest
