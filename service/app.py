"""Wires the app: settings, experiment, store, exposure log, routers, error mapping, metrics,
and the background tasks (artifact loading, store-reset watch, experiment sync).
No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service import errors, store_watch
from service.config import Settings
from service.experiment_sync import ExperimentSync
from service.experiments import load_experiment
from service.exposures import close_exposure_log, create_exposure_log
from service.loader import load_into
from service.middleware import AdmissionMiddleware, BodyLimitMiddleware, MetricsMiddleware
from service.routers import ROUTERS
from service.state import AppState
from service.stores.factory import create_link, create_store

log = logging.getLogger("genrec")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # A bad experiment fails here, naming the source and the field (ExperimentConfigError);
    # arms are checked against the served pipelines once the artifacts are in (loader).
    experiment = load_experiment(settings.experiment_file, settings.experiment_json)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pool and one circuit breaker per Redis URL, shared by the store, the exposure
        # log and the experiment sync (None with the embedded store).
        link = create_link(settings.redis_url, timeout_ms=settings.redis_timeout_ms,
                           breaker_failures=settings.breaker_failures,
                           breaker_reset_s=settings.breaker_reset_s)
        store = create_store(settings.redis_url, settings.redis_prefix, settings.max_history,
                             link=link, max_users=settings.memory_store_max_users)
        exposures = create_exposure_log(
            settings.redis_url, settings.redis_prefix, experiment=experiment.name,
            arms=experiment.arm_names, stream_maxlen=settings.exposure_stream_maxlen,
            ttl_s=settings.exposure_ttl_s, link=link,
        )
        state = AppState(settings=settings, store=store, experiment=experiment,
                         exposures=exposures)
        app.state.genrec = state
        sync = ExperimentSync(state, link, settings.redis_prefix)
        app.state.experiment_sync = sync
        # Artifacts load in the background so /healthz answers at once and /readyz tells
        # when the models are in.
        task = asyncio.create_task(load_into(state))
        # With Redis: the shared experiment split, and the watch that re-seeds an emptied store.
        watchers = []
        if link is not None:
            watchers.append(asyncio.create_task(sync.run(settings.experiment_sync_s)))
            if settings.store_check_s > 0:
                watchers.append(asyncio.create_task(
                    store_watch.watch(state, settings.store_check_s)))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            state.compute.close()
            await close_exposure_log(exposures)
            await store.close()
            if link is not None:
                await link.close()

    app = FastAPI(title="genrec", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    # The body limit sits inside the metrics (the last added is the outermost), so its 413s are
    # counted; it refuses an oversized body before any route reads it (service/middleware.py).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Backpressure outside the body limit: a request turned away is never read.
    app.add_middleware(AdmissionMiddleware, limit=settings.max_inflight)
    app.add_middleware(MetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    return app
