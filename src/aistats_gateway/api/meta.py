"""Routes that describe the gateway: health and the models its providers serve."""

from __future__ import annotations

from fastapi import APIRouter, Request

from aistats_gateway import __version__
from aistats_gateway.api.deps import Workspace, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.views import log_entry

router = APIRouter(prefix="/v1", tags=["meta"])


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
