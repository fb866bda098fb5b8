"""Experiment state shared by every replica: the traffic split lives in Redis, versioned.

    {prefix}ab:experiment:{name}   hash: ``rev`` (a counter, bumped by every change) and
                                   ``shares`` (JSON ``{arm: share}``)

Arms, paths, params and the salt come from each replica's configuration; only the shares change
at runtime. An admin change (``publish``) is a compare-and-set on the revision, so two admins on
two replicas can't silently overwrite each other: the loser re-reads and re-applies its change
on top. Every replica polls the hash every ``experiment_sync_s`` and applies a revision that
differs from its own (differs, not greater: a Redis that lost its data counts from 1 again), so
a change is served everywhere within about one poll interval. No hash (never changed, or Redis
reset) keeps the split a replica serves. With the embedded store there is one process: changes
apply locally and the revision counts them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Annotated

import orjson
from fastapi import Depends, Request

from service import metrics
from service.experiments import Experiment, ExperimentConfigError
from service.state import AppState
from service.stores.base import StoreUnavailable
from service.stores.link import RedisLink

log = logging.getLogger("genrec")
CAS_ATTEMPTS = 5

# KEYS[1] the hash; ARGV: expected revision ("0" = none yet), new shares JSON -> the new
# revision, or -1 when another change got in first.
_PUBLISH = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if rev ~= tonumber(ARGV[1]) then return -1 end
local new = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], 'shares', ARGV[2])
return new
"""


class ConflictError(RuntimeError):
    """Concurrent share changes kept winning the compare-and-set."""


class ExperimentSync:
    """Applies the shared experiment state to one process's ``AppState``."""

    def __init__(self, state: AppState, link: RedisLink | None, prefix: str = "genrec:") -> None:
        self.state = state
        self.link = link
        self.configured = state.experiment  # arms/params/salt; shares may be replaced
        self.key = f"{prefix}ab:experiment:{state.experiment.name}"
        self.revision = 0
        self._publish = link.client.register_script(_PUBLISH) if link is not None else None
        metrics.EXPERIMENT_REVISION.set(0)

    async def _read(self) -> tuple[int, dict[str, float] | None]:
        assert self.link is not None
        rev, shares = await self.link.call(
            "experiment_sync", lambda: self.link.client.hmget(self.key, "rev", "shares"))
        if rev is None or shares is None:
            return 0, None
        return int(rev), orjson.loads(shares)

    def _apply(self, revision: int, shares: Mapping[str, float]) -> None:
        try:
            updated = self.configured.with_shares(shares)
        except ExperimentConfigError as exc:
            # Another deployment's arms (a config change mid-rollout): keep serving ours.
            log.warning("experiment revision %d not applied: %s", revision, exc)
        else:
            self.state.set_experiment(updated)
        # Recorded either way, so a bad revision is logged once, not every poll.
        self.revision = revision
        metrics.EXPERIMENT_REVISION.set(revision)

    async def refresh(self) -> bool:
        """Apply the stored state if its revision differs from ours; True when applied.
        Raises ``StoreUnavailable``."""
        if self.link is None:
            return False
        rev, shares = await self._read()
        if shares is None or rev == self.revision:
            return False
        self._apply(rev, shares)
        return True

    def _base(self, stored: Mapping[str, float] | None) -> Experiment:
        """The split a change applies to: the stored one when it fits our arms."""
        if stored:
            try:
                return self.configured.with_shares(stored)
            except ExperimentConfigError:
                pass
        return self.state.experiment

    async def publish(self, shares: Mapping[str, float]) -> Experiment:
        """Change some arms' shares (arms not named keep theirs) for every replica. Raises
        ``ExperimentConfigError`` for a bad split (nothing changes), ``StoreUnavailable``
        and ``ConflictError``."""
        if self.link is None or self._publish is None:
            updated = self.state.experiment.with_shares(shares)
            self.state.set_experiment(updated)
            self.revision += 1
            metrics.EXPERIMENT_REVISION.set(self.revision)
            return updated
        for _ in range(CAS_ATTEMPTS):
            rev, stored = await self._read()
            updated = self._base(stored).with_shares(shares)
            payload = orjson.dumps({a.name: a.share for a in updated.arms})
            new = await self.link.call(
                "experiment_publish",
                lambda p=payload, r=rev: self._publish(keys=[self.key], args=[r, p]))
            if new != -1:
                self._apply(int(new), {a.name: a.share for a in updated.arms})
                return self.state.experiment
        raise ConflictError("the experiment kept changing; retry")

    async def run(self, interval_s: float) -> None:
        """Poll until cancelled; an unavailable Redis keeps the current split."""
        while True:
            try:
                await self.refresh()
            except StoreUnavailable:
                pass
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad stored value must not kill the sync
                log.exception("experiment sync failed")
            await asyncio.sleep(interval_s)


async def get_sync(request: Request) -> ExperimentSync:
    """FastAPI dependency: the app's ``ExperimentSync`` (set up by ``service.app``)."""
    return request.app.state.experiment_sync


SyncDep = Annotated[ExperimentSync, Depends(get_sync)]
