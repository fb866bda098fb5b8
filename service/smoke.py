"""The smoke query of a candidate version: every pipeline, for a few known users (and each
experiment arm's params for the first), must give ``SMOKE_K`` valid, distinct, unblocked items
with no NaN score.

It runs on a worker thread of the serving process, or with ``GENREC_SMOKE_PROCESS=true`` in
a child process (``python -m service.smoke``, at the lowest CPU priority): the smoke runs cost
a few hundred ms of Python and torch work, and on a thread they compete with the compute lane
for the GIL right before the swap (the lane's batches ran 2-3x slower then, measured). The
child rebuilds the version from its files and the contexts from plain lists (no pickling, so
a new version's objects never cross processes); the verdict comes back as one JSON line. On
2 cores the child did not lower the swap-window p99 (the cores, not the GIL, are what is
short there) and adds its ~300 MB while it runs, so it is off by default; it is meant for
replicas with a spare core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.engine.core.context import UserContext, make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import Components, build_components

SMOKE_K = 10  # items asked of each pipeline per smoke user
# A child that has not answered by then is killed and the version rejected.
CHILD_TIMEOUT_S = 300.0
Arm = tuple[str, str, Mapping[str, Any]]  # (arm name, path, checked params)


class SmokeFailed(Exception):
    """A pipeline failed the smoke query; the message names the path, arm and user."""


def smoke_users(rt: Runtime, n: int) -> list[str]:
    """``n`` users the models know, spread over the id map (deterministic)."""
    ids = rt.users.ids
    picks = np.unique(np.linspace(0, len(ids) - 1, num=min(n, len(ids))).astype(int))
    return [ids[i] for i in picks.tolist()] if len(ids) else []


def smoke(rt: Runtime, components: Components, contexts: list[UserContext],
          arms: Sequence[Arm]) -> None:
    """Raises ``SmokeFailed`` at the first pipeline run that fails the check above."""
    for path, pipeline in sorted(components.pipelines.items()):
        runs = [(ctx, None, "") for ctx in contexts]
        runs += [(contexts[0], params, f" (arm {name!r})")
                 for name, arm_path, params in arms if arm_path == path and contexts]
        for ctx, params, arm in runs:
            where = f"smoke: path {path!r}{arm}, user {ctx.user_id!r}"
            try:
                result = pipeline.run(ctx, SMOKE_K, params)
            except Exception as exc:
                raise SmokeFailed(f"{where}: {type(exc).__name__}: {exc}") from None
            ids = np.asarray(result.items)
            want = min(SMOKE_K, rt.n_items - len(ctx.blocked))
            problem = (f"{len(ids)} items, expected {want}" if len(ids) != want
                       else "item ids out of range" if ((ids < 0) | (ids >= rt.n_items)).any()
                       else "duplicate items" if len(set(ids.tolist())) != len(ids)
                       else "a consumed or excluded item" if ctx.blocked & set(ids.tolist())
                       else "NaN scores" if np.isnan(np.asarray(result.scores)).any()
                       else None)
            if problem:
                raise SmokeFailed(f"{where}: {problem}")


# --- the child process ------------------------------------------------------------------------


def _request(directory: Path, settings: EngineSettings, contexts: list[UserContext],
             arms: Sequence[Arm]) -> bytes:
    return orjson.dumps({
        "directory": str(directory),
        "settings": settings.model_dump(mode="json", include=set(EngineSettings.model_fields)),
        "contexts": [{"user_id": c.user_id, "history": c.history.tolist(),
                      "blocked": sorted(c.blocked),
                      "timestamps": None if c.timestamps is None else c.timestamps.tolist()}
                     for c in contexts],
        "arms": [[name, path, params] for name, path, params in arms]})


def _lower_priority() -> None:
    os.nice(19)  # the serving process and its clients get the cores first


async def smoke_in_child(directory: Path, settings: EngineSettings,
                         contexts: list[UserContext], arms: Sequence[Arm]) -> None:
    """``smoke`` over ``directory`` in a child process; raises ``SmokeFailed``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.smoke", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_lower_priority)
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(_request(directory, settings, contexts, arms)), CHILD_TIMEOUT_S)
    except TimeoutError:
        raise SmokeFailed(f"smoke: no answer within {CHILD_TIMEOUT_S:.0f} s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    try:
        verdict = orjson.loads(out.splitlines()[-1])
    except (IndexError, ValueError):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise SmokeFailed(f"smoke: the check exited with code {proc.returncode}: "
                          f"{' '.join(tail)}") from None
    if not verdict.get("ok"):
        raise SmokeFailed(str(verdict.get("reason", "smoke: failed")))


def _child(raw: bytes) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    req = orjson.loads(raw)
    settings = EngineSettings(**req["settings"])
    rt = Runtime.load(Path(req["directory"]), settings.hnsw_ef_search)
    components = build_components(rt, settings)
    contexts = [make_context(rt, c["user_id"], c["history"], c["blocked"], c["timestamps"])
                for c in req["contexts"]]
    arms = [(name, path, components.pipelines[path].check_params(params))
            for name, path, params in req["arms"] if path in components.pipelines]
    try:
        smoke(rt, components, contexts, arms)
    except SmokeFailed as exc:
        return {"ok": False, "reason": str(exc)}
    return {"ok": True}


if __name__ == "__main__":
    try:
        verdict = _child(sys.stdin.buffer.read())
    except Exception as exc:  # loading failed here although it passed in the parent
        verdict = {"ok": False, "reason": f"smoke: {type(exc).__name__}: {exc}"}
    sys.stdout.buffer.write(orjson.dumps(verdict) + b"\n")
