"""Routes of the literal segments of the batch router: `/models`, `/capabilities`, and the guard that keeps
`models`, `capabilities` and `files` from ever being read as a batch id.

Mounted by app.py at `/v1/batches` and `/v1/batch`, after the files router (so `/v1/batches/files…` is the files
API) and before the batch router's `/{batch_id}…` routes: Starlette takes the first route that matches, so a path
under a literal segment that no real route serves answers 404 `route_not_found` here instead of "no batch with
id 'models'".
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from aistats_gateway.api.deps import Workspace, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.domain.create_batch import CREATE_FIELDS
from aistats_gateway.errors import NotFound, excerpt
from aistats_gateway.services import catalog

router = APIRouter(tags=["batches"])
LITERALS = ("models", "capabilities", "files")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@router.get("/capabilities")
async def batch_capabilities(request: Request, _workspace: Workspace) -> JSONResponse:
    """One entry per configured provider: endpoints (native or translated), input modes, batch API."""
    return JSONResponse({"object": "list", "data": catalog.capabilities(gateway(request).settings.providers)})


@router.get("/models")
async def batch_models(request: Request, _workspace: Workspace,
                       params: list[str] = Query(default_factory=list)) -> JSONResponse:
    """The models this gateway's routing can serve, with providers, endpoints, parameters and prices;
    `params` (repeatable or comma-separated) keeps those supporting every named batch parameter."""
    gw = gateway(request)
    providers = gw.settings.providers
    upstream = await gw.upstream_models.all(providers)
    models = catalog.model_entries(providers, gw.pricer.catalog, upstream, CREATE_FIELDS)
    return JSONResponse({"object": "list", "data": catalog.keep_supporting(models, catalog.parse_params(params))})


def _guard(literal: str) -> None:
    async def no_route(request: Request, rest: str) -> None:
        raise NotFound(f"No route {request.method} {excerpt(request.url.path, 200)}: '{literal}' is not a batch id.",
                       code="route_not_found")

    router.add_api_route(f"/{literal}/{{rest:path}}", no_route, methods=METHODS, include_in_schema=False,
                         name=f"no_route_under_{literal}")


for _literal in LITERALS:
    _guard(_literal)
