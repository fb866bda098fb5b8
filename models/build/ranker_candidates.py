"""What a ranker is trained on: the candidates its path's recall sources propose.

When serving, a path's ranker reorders the union of its recall sources' lists
(``models/engine/paths/fused.py``), so its hard negatives are mined from the same served
source objects (``registry.RECALL`` factories over the directory being assembled), the ones
in the path's pool (``registry.PATH_SPECS``) that this build holds.

Leakage: the sources are trained on the training split, so their lists for a training
position are optimistic (the target is often there). Only negatives are taken from them: for
each user, the sources are queried at ``positions`` training positions ``gap`` before the
user's last one (history = the sequence before that position, never the validation or test
targets), with every training item of the user blocked, so every returned item is an item
the user never consumed in training, never a positive. The per-user union is the user's pool
(``train/samples.py:CandidatePools``); the trainers mix draws from it with uniform negatives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.numpy import load_file

from index.base import search_excluding
from models.artifacts.manifest import ID_MAPS, USER_FEATURES
from models.build.job import BuildJob
from models.data.dataset import IdMap
from models.engine.core.context import UserContext, make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.recall.ann import ANNRecall
from models.engine.recall.sequential import SequentialRecall
from models.nets.features import pad_histories
from models.registry import COMPONENTS, PATH_SPECS, RECALL, resolve
from models.train.samples import CandidatePools

# Per-source caps on the mining quota; 0 = not mined. The semantic-ID beam search costs
# several times a vector source's batched request (77 ms a request on a busy 2-core box)
# and most of its candidates are in the other sources' lists too.
QUOTA_CAPS = {"semantic_id": 0}


def sources_runtime(job: BuildJob, names: Sequence[str]) -> Runtime:
    """The directory being assembled as a runtime of the components ``names`` whose files
    are all in place (``Runtime.load`` wants every required component, and the rankers are
    not built yet)."""
    d = job.out
    maps = orjson.loads((d / ID_MAPS).read_bytes())
    rt = Runtime(directory=d, manifest={"version": "building"},
                 users=IdMap.from_ids(maps["users"]), items=IdMap.from_ids(maps["items"]),
                 user_codes=load_file(str(d / USER_FEATURES))["codes"].astype(np.int64),
                 components=frozenset())
    present = [c for c in COMPONENTS if c.name in names
               and all((d / f).is_file() for f in c.files)]
    for comp in present:
        rt._load_files(comp.files, None)  # noqa: SLF001 (the runtime's own file loader)
    rt.components = frozenset(c.name for c in present)
    return rt


def ranked_path(ranker: str) -> str | None:
    """The path whose ranker ``ranker`` is (its candidates are what it will rank), if any."""
    return next((spec.name for spec in PATH_SPECS if spec.ranker == ranker), None)


def path_sources(path: str) -> tuple[str, ...]:
    """The recall sources the path's fusion may use (its pool)."""
    return next(spec.pool for spec in PATH_SPECS if spec.name == path)


def source_components(sources: Sequence[str]) -> tuple[str, ...]:
    """The components those recall sources serve from."""
    return tuple(dict.fromkeys(c for stage in RECALL if stage.name in sources
                               for c in stage.needs))


@torch.inference_mode()
def user_vectors(src: Any, contexts: Sequence[UserContext]) -> np.ndarray | None:
    """(U, d) user vectors of a vector source (two-tower ANN, sequential retriever) for every
    context in one forward pass, from the inputs its ``user_vector`` reads (its own history
    window, timestamps where the model takes them); None for any other source."""
    if isinstance(src, ANNRecall):
        cfg = src.model.cfg
        codes = torch.from_numpy(np.stack([c.user_codes for c in contexts])).long()  # (U, F)
        hist = pad_histories([c.history for c in contexts], cfg.max_history, cfg.n_items)
        return src.model.user_embed(codes, hist).float().numpy()
    if isinstance(src, SequentialRecall):
        hist = pad_histories([c.history for c in contexts], src.max_len,
                             src.model.cfg.n_items)  # (U, L)
        kwargs = {}
        if src.timed and all(c.timestamps is not None for c in contexts):
            ts = np.zeros(hist.shape, dtype=np.float64)  # (U, L) seconds, 0 at padding
            for row, c in enumerate(contexts):
                tail = np.asarray(c.timestamps, dtype=np.float64)[-src.max_len:]
                ts[row, src.max_len - len(tail):] = tail
            kwargs["timestamps"] = torch.from_numpy(ts)
        return src.model.user_vector(hist, **kwargs).float().numpy()
    return None


def answers(src: Any, contexts: Sequence[UserContext], k: int,
            chunk: int = 512) -> list[np.ndarray]:
    """Each context's ranked ids from ``src``, as served: vector sources search their index
    with user vectors computed ``chunk`` contexts per forward pass (they may differ from
    one-context passes in the last float bits), the others one request at a time."""
    out: list[np.ndarray] = []
    for lo in range(0, len(contexts), chunk):
        part = contexts[lo:lo + chunk]
        vecs = user_vectors(src, part)
        if vecs is None:
            out.extend(src.recall(ctx, k)[0] for ctx in part)
        else:
            out.extend(search_excluding(src.index, v, k, ctx.blocked)[0].astype(np.int64)
                       for ctx, v in zip(part, vecs, strict=True))
    return out


def pools_from_pairs(users: np.ndarray, items: np.ndarray, n_users: int,
                     n_items: int) -> CandidatePools:
    """(P,) user and item ids of (user, item) pairs -> each user's distinct items, sorted."""
    key = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
    bounds = np.searchsorted(key // n_items, np.arange(n_users + 1))
    return CandidatePools(flat=key % n_items, offsets=bounds.astype(np.int64))


def mine_pools(job: BuildJob, path: str, positions: int, quota: int, gap: int = 0
               ) -> tuple[CandidatePools | None, dict[str, Any]]:
    """Per user, the union of the path's sources' top ``quota`` items (at most
    ``QUOTA_CAPS``) at ``positions`` training positions ending ``gap`` positions before the
    user's last one, every training item blocked -> (pools, report); (None, report) when
    nothing is to be mined. The gap keeps the queries away from the held-out targets: the
    sources are good at the very next item, so lists for the last training position hold the
    validation target itself far more often than chance, and a ranker trained to push it
    down is measured (and would serve) worse."""
    pool = path_sources(path)
    if positions < 1 or quota < 1:
        return None, {"path": path, "sources": []}
    t0 = time.perf_counter()
    rt = sources_runtime(job, source_components(pool))
    settings = EngineSettings()
    quotas = {s.name: min(quota, QUOTA_CAPS.get(s.name, quota)) for s in RECALL
              if s.name in pool and rt.has(*s.needs)}
    sources = {s.name: resolve(s.make)(rt, settings, s.name) for s in RECALL
               if quotas.get(s.name, 0) > 0}
    quotas = {name: quotas[name] for name in sources}
    if not sources:
        return None, {"path": path, "sources": []}
    times = job.ds.timestamps
    owner, contexts = [], []
    for u, seq in enumerate(job.split.train):
        blocked = np.asarray(seq).tolist()
        last = len(seq) - 1 - max(gap, 0)
        for t in range(last, max(last - positions, 0), -1):
            ts = None if times is None else times[u][:t]
            # The whole prefix: each source keeps its own tail, as when serving.
            contexts.append(make_context(rt, rt.users.ids[u], seq[:t], blocked=blocked,
                                         timestamps=ts, limit=t))
            owner.append(u)
    found: list[np.ndarray] = []
    with torch.inference_mode():
        for name, src in sources.items():
            found.extend(answers(src, contexts, quotas[name]))
    items = np.concatenate(found) if found else np.zeros(0, np.int64)
    users = np.concatenate([np.full(len(f), owner[i % len(contexts)], np.int64)
                            for i, f in enumerate(found)]) if found else items
    out = pools_from_pairs(users, items, len(job.split.train), job.ds.n_items)
    report = {"path": path, "sources": list(quotas.items()), "positions": positions,
              "gap": gap,
              "queries": len(contexts), "mean_pool": round(float(out.sizes().mean()), 1),
              "seconds": round(time.perf_counter() - t0, 1)}
    job.console.print(f"{path} ranker: hard negatives from {', '.join(sources)} "
                      f"({len(contexts)} queries, {report['mean_pool']} items per user, "
                      f"{report['seconds']}s)")
    return out, report
