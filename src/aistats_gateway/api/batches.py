"""Routes of the batch router: create, list (cursor pagination), get, cancel, results, request log.

The router has no prefix of its own: app.py mounts it at `/v1/batches` and at the singular alias `/v1/batch`
(as the AI Stats server does), after the files router and the literal segments of api/catalog.py, so
`/v1/batches/files`, `/models` and `/capabilities` are never read as a batch id.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from aistats_gateway.api import wire
from aistats_gateway.api.deps import Workspace, base_url, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.uploads import parse_json_object, read_limited
from aistats_gateway.api.views import batch_page, batch_view, log_entry
from aistats_gateway.services.batches import ensure_rows_kept
from aistats_gateway.services.results import cursor_of, stream_results
from aistats_gateway.storage.batches import BatchSearch

router = APIRouter(tags=["batches"])
PREFIXES = ("/v1/batches", "/v1/batch")  # the canonical path first; the alias answers identically
MAX_CREATE_BODY = 64 * 1024 * 1024  # inline `requests` can be large
MAX_OFFSET = 2**31 - 1  # far beyond any request log; larger values overflow the databases' 64-bit integers


@router.post("")
async def create_batch(request: Request, workspace: Workspace) -> JSONResponse:
    body = parse_json_object(await read_limited(request.stream(), MAX_CREATE_BODY))
    gw = gateway(request)
    create = gw.batches.parse_create(body)
    if create.dry_run:  # validation and cost preview, nothing created
        return JSONResponse(await gw.batches.dry_run(workspace, create))
    record = await gw.batches.create(workspace, create)
    return JSONResponse(await batch_view(gw, record, base_url(request)))


@router.get("")
async def list_batches(
    request: Request,
    workspace: Workspace,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    status: str | None = None,
    session_id: str | None = None,
    id_prefix: str | None = None,
    metadata_value: str | None = None,
    session_prefix: str | None = None,
) -> JSONResponse:
    """Newest first; `id_prefix`, `metadata_value` (any key's value, exactly) and `session_prefix` search."""
    gw = gateway(request)
    search = BatchSearch(id_prefix or None, metadata_value or None, session_prefix or None)
    records, has_more = await gw.batches.list(workspace, after=after, limit=limit, status=status,
                                              session_id=session_id, search=search)
    base = base_url(request)
    return JSONResponse(wire.page(await batch_page(gw, records, base), has_more))


@router.get("/{batch_id}")
async def get_batch(request: Request, workspace: Workspace, batch_id: str) -> JSONResponse:
    gw = gateway(request)
    record = await gw.batches.get(workspace, batch_id)
    return JSONResponse(await batch_view(gw, record, base_url(request)))


@router.get("/{batch_id}/results")
async def batch_results(
    request: Request, workspace: Workspace, batch_id: str, after: str | None = None, follow: bool = False
) -> StreamingResponse:
    """NDJSON of every line settled so far (also while the batch runs); `after` resumes after that
    custom_id; `follow=true` keeps the stream open until the batch is terminal."""
    gw = gateway(request)
    record = await gw.batches.get(workspace, batch_id)
    ensure_rows_kept(record, "per-line results")
    cursor = await cursor_of(gw.store, record, after)
    return StreamingResponse(stream_results(gw.store, gw.bus, record, cursor=cursor, follow=follow),
                             media_type="application/x-ndjson")


@router.get("/{batch_id}/requests")
async def batch_requests(
    request: Request,
    workspace: Workspace,
    batch_id: str,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    status: str | None = None,
) -> JSONResponse:
    """The request log: every upstream attempt of the batch (`status`: success, error or a code)."""
    rows, has_more = await gateway(request).batches.requests(workspace, batch_id, limit=limit, offset=offset,
                                                             status=status)
    return JSONResponse({"object": "list", "data": [log_entry(r) for r in rows], "has_more": has_more,
                         "offset": offset, "limit": limit})


@router.post("/{batch_id}/cancel")
async def cancel_batch(request: Request, workspace: Workspace, batch_id: str) -> JSONResponse:
    gw = gateway(request)
    record = await gw.batches.cancel(workspace, batch_id)
    return JSONResponse(await batch_view(gw, record, base_url(request)))
