"""Composition root: `build_app(settings)` wires store, blobs, providers, router and executor.

The FastAPI lifespan opens everything in order (migrate → keys → providers → executor) and closes
it in reverse; nothing is created at import time, so tests can build as many apps as they like.
Roles: `build_app` serves the API (and runs the executor unless `run_worker` is off: `serve
--no-worker`); `build_worker_app` runs only the executor and the webhook deliverer (`aistats worker`),
answering just /v1/health and /metrics. Storage comes from settings: SQLite or PostgreSQL, local or
S3-compatible blobs; with `redis_url`, batch changes and cancels fan out across processes and
`Gateway.permits` is the shared rate-limit PermitSource.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from aistats_gateway import __version__, banner, ids
from aistats_gateway.api import batches as batch_routes
from aistats_gateway.api import catalog as catalog_routes
from aistats_gateway.api import errors as api_errors
from aistats_gateway.api import files as file_routes
from aistats_gateway.api import lines as line_routes
from aistats_gateway.api import meta as meta_routes
from aistats_gateway.api import stream as stream_routes
from aistats_gateway.api import usage as usage_routes
from aistats_gateway.api import webhook_endpoints as webhook_endpoint_routes
from aistats_gateway.api.auth import Authenticator
from aistats_gateway.api.limits import BodyTimeoutMiddleware, UploadSlots
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.views import render_batch
from aistats_gateway.bus import BatchBus
from aistats_gateway.clock import Clock, SystemClock
from aistats_gateway.config import Settings
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.native import NativeRunner
from aistats_gateway.executor.service import Executor
from aistats_gateway.executor.shared_limits import RedisPermitSource
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.fanout import RedisFanout
from aistats_gateway.metrics import Metrics
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.kinds import build_provider
from aistats_gateway.providers.routing import Router
from aistats_gateway.services.batches import BatchService
from aistats_gateway.services.catalog import UpstreamModels
from aistats_gateway.services.files import FileService
from aistats_gateway.services.keys import ensure_default_keys
from aistats_gateway.services.lines import LineInspector
from aistats_gateway.services.request_rows import RequestRowService
from aistats_gateway.services.retention import RetentionSweeper
from aistats_gateway.services.retries import RetryService
from aistats_gateway.services.webhook_endpoints import WebhookEndpointService
from aistats_gateway.settings_check import check_settings
from aistats_gateway.storage.blobs import BlobStore, open_blob_store
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store, create_engine
from aistats_gateway.ui.routes import build_router as build_ui_router
from aistats_gateway.webhooks.deliverer import Deliverer

log = logging.getLogger("aistats_gateway")


@dataclass
class Gateway:
    settings: Settings
    store: Store
    blobs: BlobStore
    router: Router
    executor: Executor | None
    files: FileService
    batches: BatchService
    auth: Authenticator
    bus: BatchBus
    deliverer: Deliverer | None
    pricer: Pricer
    metrics: Metrics
    generated_key: str | None
    uploads: UploadSlots  # uploads streaming at once (limits.max_concurrent_uploads)
    webhook_endpoints: WebhookEndpointService
    request_rows: RequestRowService  # GET /v1/batches/{id}/requests
    storage_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # refreshed at each scrape
    redis: Any = None  # redis.asyncio.Redis when redis_url is set
    fanout: RedisFanout | None = None
    permits: RedisPermitSource | None = None  # shared rate limits (PermitSource) when redis_url is set
    retention: RetentionSweeper | None = None  # removes expired files (worker processes only)
    upstream_models: UpstreamModels = field(default_factory=UpstreamModels)  # GET /v1/models of upstreams, cached
    retries: RetryService | None = None  # POST /v1/batches/{id}/retry and the chains it makes
    lines: LineInspector | None = None  # the line inspector (GET /v1/batches/{id}/lines)


async def _open_store(settings: Settings, clock: Clock, metrics: Metrics) -> Store:
    """Storage at the schema's head, with batch-finish counting on the metrics."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.sqlalchemy_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    await upgrade_to_head(engine)
    store = Store(engine, webhook_max_attempts=settings.webhooks.max_attempts, clock=clock)

    def count_finished(record: BatchRecord, _queued: bool) -> None:
        if record.status.terminal:  # only a terminal transition publishes a terminal record
            metrics.batches.labels(record.status.value).inc()

    store.listeners.append(count_finished)
    return store


def _deliverer(settings: Settings, store: Store, clock: Clock, failpoints: Failpoints, metrics: Metrics) -> Deliverer:
    """The webhook deliverer of a worker process; batch objects in its payloads carry the public URL."""
    public = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")

    async def render(record: BatchRecord) -> dict[str, Any]:
        return await render_batch(store, record, public)

    deliverer = Deliverer(settings.webhooks, store.outbox, clock, render, allow_local=settings.webhooks.allow_local,
                          failpoints=failpoints, metrics=metrics, node_prefix=f"{settings.node_id}:",
                          owner=f"{settings.node_id}:deliverer_{ids.ulid()}", endpoints=store.webhook_endpoints)
    store.listeners.append(deliverer.notify)
    return deliverer


def _open_redis(settings: Settings) -> tuple[Any, RedisPermitSource | None]:
    """The Redis client and its shared rate-limit permits, when a Redis URL is configured."""
    if not settings.redis_url:
        return None, None
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(settings.redis_url)
    return client, RedisPermitSource(client, settings.redis.key_prefix, settings.redis.limiter_ttl_seconds)


def _fanout(settings: Settings, store: Store, redis_client: Any, bus: BatchBus,
            executor: Executor | None) -> RedisFanout:
    """Cross-process events over Redis: cancels reach this process's executor at once, submits its validator."""

    def on_cancel(record: BatchRecord) -> None:
        # another process moved this batch to cancelling: stop sending its items now (the housekeeper's
        # database sweep would find it too, seconds later)
        if executor is not None:
            executor.halt(record.id, BatchStatus.CANCELLED, record.endpoint)

    fanout = RedisFanout(redis_client, settings.redis.key_prefix, bus, f"{settings.node_id}:{ids.ulid()}",
                         on_cancel=on_cancel, on_submit=executor.submitted if executor is not None else None,
                         announce_submits=executor is None)
    store.listeners.append(fanout.publish)
    return fanout


async def open_gateway(settings: Settings, clock: Clock | None = None, *, serve_api: bool = True) -> Gateway:
    """Open storage and build every service. `serve_api=False` (a worker process): no API keys are set up."""
    clock = clock or SystemClock()
    check_settings(settings)
    metrics = Metrics(settings.metrics.max_model_labels)
    store = await _open_store(settings, clock, metrics)
    generated = await ensure_default_keys(store.workspaces, settings.api_key) if serve_api else None
    failpoints = Failpoints(settings.failpoints)
    if failpoints.armed:
        log.warning("failpoints armed: %s (durability testing only)", settings.failpoints)
    bus = BatchBus()
    store.listeners.append(bus.publish)
    deliverer = _deliverer(settings, store, clock, failpoints, metrics) if settings.run_worker else None
    blobs = await open_blob_store(settings)
    redis_client, permits = _open_redis(settings)
    router = Router([build_provider(p, settings) for p in settings.providers])
    pricer = Pricer(PriceCatalog.load(settings.prices))
    native = (NativeRunner(settings, store, blobs, router, clock, pricer.catalog, failpoints)
              if settings.run_worker and any(p.batch_api for p in settings.providers) else None)
    executor = (Executor(settings, store, blobs, router, clock, failpoints, pricer, metrics, permits, native)
                if settings.run_worker else None)
    fanout = _fanout(settings, store, redis_client, bus, executor) if redis_client is not None else None
    files = FileService(store.files, blobs, clock, settings.limits.max_file_bytes, settings.retention,
                        store.idempotency)
    batches = BatchService(store, files, executor, clock, settings.limits.max_batch_lines,
                           allow_local_webhooks=settings.webhooks.allow_local, router=router, pricer=pricer,
                           max_errors=settings.limits.max_validation_errors,
                           batch_api={p.name for p in settings.providers if p.batch_api})
    gw = Gateway(settings, store, blobs, router, executor, files, batches, Authenticator(store.workspaces), bus,
                 deliverer, pricer, metrics, generated, UploadSlots(settings.limits.max_concurrent_uploads),
                 WebhookEndpointService(store.webhook_endpoints, settings.webhooks, clock),
                 RequestRowService(store, blobs),
                 redis=redis_client, fanout=fanout, permits=permits,
                 retention=RetentionSweeper(store, files, clock, settings.retention) if settings.run_worker else None,
                 retries=RetryService(store, files, batches, clock), lines=LineInspector(store, blobs))
    metrics.watch_storage(lambda: gw.storage_counts)
    return gw


async def close_gateway(gw: Gateway) -> None:
    if gw.executor is not None:
        await gw.executor.stop()
    if gw.deliverer is not None:
        await gw.deliverer.stop()
    if gw.retention is not None:
        await gw.retention.stop()
    if gw.fanout is not None:
        await gw.fanout.stop()
    for provider in gw.router.providers:
        await provider.close()
    await gw.blobs.close()
    if gw.redis is not None:
        await gw.redis.aclose()
    await gw.store.close()


async def start_services(gw: Gateway) -> None:
    """Background services, after everything is open: executor, deliverer, cross-process fan-out."""
    if gw.executor is not None:
        await gw.executor.start()
    if gw.deliverer is not None:
        await gw.deliverer.start()
    if gw.fanout is not None:
        await gw.fanout.start()
    if gw.retention is not None:
        await gw.retention.start()
    # Everything built so far lives as long as the process: keep the collector from rescanning it
    # (measured: garbage collection was ~10 % of the executor's CPU before this).
    gc.collect()
    gc.freeze()


def build_app(settings: Settings, clock: Clock | None = None, *, print_key: bool = True) -> FastAPI:
    """`print_key=False`: the caller prints a generated key itself (`aistats serve` does, once the port
    accepts connections, with the ready line: see banner.py)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = await open_gateway(settings, clock)
        app.state.gateway = gw
        if gw.generated_key and print_key:
            print(banner.key_box(gw.generated_key), flush=True)
        await start_services(gw)
        try:
            yield
        finally:
            await close_gateway(gw)

    # No redirect of `/v1/files/` to `/v1/files`: Starlette built that 307's Location from the Host header, before
    # authentication (`Location: http://evil.example/...`); a trailing slash is a 404 that says so.
    app = FastAPI(title="AI Stats Gateway", version=__version__, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json", redirect_slashes=False)
    api_errors.install(app)
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.limits.body_timeout_seconds)
    app.add_middleware(api_errors.NulGuardMiddleware)
    app.add_middleware(api_errors.RequestIdMiddleware)  # added last: runs first, so the guard's 400 has an id
    app.include_router(meta_routes.router)
    # Order matters: Starlette serves the first route that matches. The files API under /v1/batches/files and
    # the literal segments (models, capabilities) come before the batch router's /{batch_id} routes.
    for prefix in file_routes.PREFIXES:
        app.include_router(file_routes.router, prefix=prefix)
    for prefix in batch_routes.PREFIXES:
        app.include_router(catalog_routes.router, prefix=prefix)
    for prefix in batch_routes.PREFIXES:
        app.include_router(line_routes.router, prefix=prefix)
        app.include_router(batch_routes.router, prefix=prefix)
    for module in (stream_routes, usage_routes, webhook_endpoint_routes):
        app.include_router(module.router)
    app.include_router(meta_routes.metrics_router)
    app.include_router(build_ui_router())  # the dashboard at /ui/
    return app


def build_worker_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    """A worker process (`aistats worker`): executor and deliverer only; /v1/health and /metrics for probes."""
    settings = settings.model_copy(update={"run_worker": True})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = await open_gateway(settings, clock, serve_api=False)
        app.state.gateway = gw
        await start_services(gw)
        try:
            yield
        finally:
            await close_gateway(gw)

    probes = APIRouter()

    @probes.get("/v1/health")
    async def health(request: Request) -> JSONResponse:
        gw: Gateway = request.app.state.gateway
        return JSONResponse({"status": "ok", "version": __version__, "role": "worker", "worker": True,
                             "node_id": settings.node_id, "providers": [p.name for p in gw.router.providers]})

    app = FastAPI(title="AI Stats Gateway worker", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.include_router(probes)
    app.include_router(meta_routes.metrics_router)
    return app


def app_factory() -> Any:
    """For `uvicorn --factory aistats_gateway.app:app_factory` (settings from the environment)."""
    return build_app(Settings.load())
