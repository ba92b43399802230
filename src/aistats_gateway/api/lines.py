"""Routes of the line inspector (issue 18, item 2): `GET /v1/batches/{id}/lines` (filtered, bounded pages) and
`GET /v1/batches/{id}/lines/{line}` (one line, bodies whole). Mounted with the batch router's prefixes, before
it; services/lines.py owns the rules and the shape."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request

from aistats_gateway.api.deps import Workspace, base_url, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.services.lines import LineInspector, parse_query

router = APIRouter(tags=["batches"])


def _inspector(request: Request) -> LineInspector:
    inspector = gateway(request).lines
    assert inspector is not None  # built with the gateway (app.py)
    return inspector


@router.get("/{batch_id}/lines")
async def batch_lines(
    request: Request, workspace: Workspace, batch_id: str, custom_id: str | None = None, status: str | None = None,
    error_code: str | None = None, after: str | None = None, offset: int = Query(0, ge=0, le=2**31 - 1),
    limit: int = Query(20, ge=1, le=2**31 - 1),
) -> JSONResponse:
    """Lines of a batch in line order: `custom_id` (prefix), `status` (pending, running, succeeded, failed,
    not_run), `error_code`; `after` a line number (keyset), `offset` lines more to skip (page N)."""
    where, after_line = parse_query(custom_id=custom_id, status=status, error_code=error_code, after=after,
                                    offset=offset, limit=limit)
    record = await gateway(request).batches.get(workspace, batch_id)
    return JSONResponse(await _inspector(request).page(record, base_url(request), where, after=after_line,
                                                      offset=offset, limit=limit))


@router.get("/{batch_id}/lines/{line}")
async def batch_line(request: Request, workspace: Workspace, batch_id: str,
                     line: int = Path(ge=0, le=2**31 - 1)) -> JSONResponse:
    record = await gateway(request).batches.get(workspace, batch_id)
    return JSONResponse(await _inspector(request).line(record, base_url(request), line))
