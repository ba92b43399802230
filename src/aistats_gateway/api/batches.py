"""Routes of the batch router: create, list (cursor pagination), get, cancel, retry, results (also merged over
a retry chain), request log.

The router has no prefix of its own: app.py mounts it at `/v1/batches` and at the singular alias `/v1/batch`
(as the AI Stats server does), after the files router and the literal segments of api/catalog.py, so
`/v1/batches/files`, `/models` and `/capabilities` are never read as a batch id.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from aistats_gateway.api import wire
from aistats_gateway.api.deps import Workspace, base_url, gateway
from aistats_gateway.api.files import replay_headers
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.uploads import parse_json_object, read_limited
from aistats_gateway.api.views import batch_page, batch_view, log_entry, request_row
from aistats_gateway.domain import idempotency
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.services.batches import ensure_rows_kept
from aistats_gateway.services.request_rows import parse_view
from aistats_gateway.services.results import cursor_of, stream_merged, stream_results
from aistats_gateway.storage.batches import BatchSearch

router = APIRouter(tags=["batches"])
PREFIXES = ("/v1/batches", "/v1/batch")  # the canonical path first; the alias answers identically
MAX_CREATE_BODY = 64 * 1024 * 1024  # inline `requests` can be large
MAX_OFFSET = 2**31 - 1  # far beyond any request log; larger values overflow the databases' 64-bit integers


@router.post("")
async def create_batch(request: Request, workspace: Workspace) -> JSONResponse:
    body = parse_json_object(await read_limited(request.stream(), MAX_CREATE_BODY))
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    gw = gateway(request)
    create = gw.batches.parse_create(body)
    if create.dry_run:  # validation and cost preview, nothing created (an Idempotency-Key has nothing to answer)
        return JSONResponse(await gw.batches.dry_run(workspace, create))
    claim = None if key is None else idempotency.IdempotencyKey(
        key, idempotency.json_fingerprint("batches.create", body), "batch")
    record, replayed = await gw.batches.create_once(workspace, create, claim)
    return JSONResponse(await batch_view(gw, record, base_url(request)), headers=replay_headers(replayed))


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
    request: Request, workspace: Workspace, batch_id: str, after: str | None = None, follow: bool = False,
    merged: bool = False,
) -> StreamingResponse:
    """NDJSON of every line settled so far (also while the batch runs); `after` resumes after that
    custom_id; `follow=true` keeps the stream open until the batch is terminal. `merged=true` (on any batch of
    a retry chain): one line per custom_id of the chain root's input, in its order, the latest success anywhere
    in the chain, else the latest outcome."""
    gw = gateway(request)
    if merged:
        if after or follow:
            raise InvalidRequest("'merged=true' streams a whole chain at once: it takes no 'after' or 'follow'.",
                                 code="invalid_value", param="after" if after else "follow")
        assert gw.retries is not None
        chain = await gw.retries.chain(workspace, batch_id)
        return StreamingResponse(stream_merged(gw.store, chain), media_type="application/x-ndjson")
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
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    status: str | None = None,
    view: str | None = None,
) -> JSONResponse:
    """The request rows (one per input line, the SDKs' BatchRequestRow; `status`: queued, in_progress, completed,
    failed, cancelled, expired, success, error or an HTTP code); `view=attempts`: every upstream attempt."""
    gw = gateway(request)
    chosen = parse_view(view)
    batch = await gw.batches.get(workspace, batch_id)
    ensure_rows_kept(batch, "request log" if chosen == "attempts" else "request rows")
    if chosen == "attempts":
        rows, has_more = await gw.request_rows.attempts(batch, limit=limit, offset=offset, status=status)
        data = [log_entry(r) for r in rows]
    else:
        rows, has_more = await gw.request_rows.rows(batch, limit=limit, offset=offset, status=status)
        data = [request_row(r) for r in rows]
    return JSONResponse({"object": "list", "batch_id": batch_id, "view": chosen, "data": data, "has_more": has_more,
                         "offset": offset, "limit": limit})


@router.post("/{batch_id}/retry")
async def retry_batch(request: Request, workspace: Workspace, batch_id: str) -> JSONResponse:
    """A new batch re-running the lines of this terminal batch that did not succeed (body optional:
    statuses, error_codes, custom_ids)."""
    raw = await read_limited(request.stream(), MAX_CREATE_BODY)
    body = parse_json_object(raw) if raw.strip() else {}
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    gw = gateway(request)
    assert gw.retries is not None
    record, replayed = await gw.retries.retry(workspace, batch_id, body, key)
    return JSONResponse(await batch_view(gw, record, base_url(request)), headers=replay_headers(replayed))


@router.post("/{batch_id}/cancel")
async def cancel_batch(request: Request, workspace: Workspace, batch_id: str) -> JSONResponse:
    gw = gateway(request)
    record = await gw.batches.cancel(workspace, batch_id)
    return JSONResponse(await batch_view(gw, record, base_url(request)))
