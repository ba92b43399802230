"""Routes that describe the gateway: the `/v1` index, health and the models its providers serve."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from aistats_gateway import __version__
from aistats_gateway.api.deps import Workspace, base_url, gateway
from aistats_gateway.api.errors import error_response
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.views import log_entry
from aistats_gateway.errors import AuthenticationFailed
from aistats_gateway.pricing.calculator import usd

router = APIRouter(prefix="/v1", tags=["meta"])
metrics_router = APIRouter(tags=["meta"])


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format. Unauthenticated, like most exporters, unless `[metrics] token` is set (then
    `Authorization: Bearer <token>`, which Prometheus sends with `authorization: {credentials: ...}`); its size
    is bounded whatever the traffic (metrics.py's label budget)."""
    gw = gateway(request)
    token = gw.settings.metrics.token
    if token is not None and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                                     f"Bearer {token}".encode()):
        return error_response(AuthenticationFailed("GET /metrics needs 'Authorization: Bearer <metrics token>' "
                                                   "([metrics] token, AISTATS_METRICS_TOKEN)."), request)
    gw.storage_counts.update(await gw.store.batches.state_counts())  # one cheap query per scrape
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("")
async def index(request: Request) -> JSONResponse:
    """`GET /v1`, unauthenticated like /health: the base URL pasted into a browser or curl says what it is
    and where to go (the dashboard, the docs), instead of a 404. The endpoints are read from the app's
    OpenAPI document (built once, then cached by FastAPI), so the list cannot drift from what is served."""
    base = base_url(request).rstrip("/")
    paths = sorted(path for path in request.app.openapi().get("paths", {}) if path.startswith("/v1/"))
    return JSONResponse({
        "object": "gateway", "name": "AI Stats Gateway", "version": __version__, "api": f"{base}/v1",
        "dashboard": f"{base}/ui/", "docs": f"{base}/docs", "health": f"{base}/v1/health",
        "authentication": "Authorization: Bearer <API key> (every endpoint but this index and /v1/health)",
        "endpoints": paths,
    })


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    gw = gateway(request)
    return JSONResponse({
        "status": "ok", "version": __version__, "worker": gw.executor is not None,
        "providers": [p.name for p in gw.router.providers],
    })


@router.get("/models")
async def models(request: Request, _workspace: Workspace) -> JSONResponse:
    gw = gateway(request)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": provider.name}
        for provider in gw.router.providers
        for model in provider.listed_models()
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/generations/{request_id}")
async def generation(request: Request, workspace: Workspace, request_id: str) -> JSONResponse:
    """One upstream attempt by its gateway request id (the `request_id` in an output line)."""
    return JSONResponse(log_entry(await gateway(request).batches.generation(workspace, request_id)))


@router.get("/credits")
async def credits(request: Request, workspace: Workspace) -> JSONResponse:
    """The workspace's credit: balance (or unlimited), what open batches hold, and what is available."""
    balance, held = await gateway(request).store.ledger.account(workspace)
    return JSONResponse(credit_view(workspace, balance, held))


def credit_view(workspace: str, balance: int | None, held: int) -> dict[str, object]:
    available = None if balance is None else balance - held
    return {
        "object": "credit_balance", "workspace_id": workspace, "unlimited": balance is None,
        "balance_nanos": balance, "balance_usd": None if balance is None else usd(balance),
        "held_nanos": held, "held_usd": usd(held),
        "available_nanos": available, "available_usd": None if available is None else usd(available),
    }
