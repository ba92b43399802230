"""Routes that describe the gateway: health and the models its providers serve."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse

from aistats_gateway import __version__
from aistats_gateway.api.deps import Workspace, gateway

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get("/health")
async def health(request: Request) -> ORJSONResponse:
    gw = gateway(request)
    return ORJSONResponse({
        "status": "ok", "version": __version__, "worker": gw.executor is not None,
        "providers": [p.name for p in gw.router.providers],
    })


@router.get("/models")
async def models(request: Request, _workspace: Workspace) -> ORJSONResponse:
    gw = gateway(request)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": provider.name}
        for provider in gw.router.providers
        for model in provider.listed_models()
    ]
    return ORJSONResponse({"object": "list", "data": data})
