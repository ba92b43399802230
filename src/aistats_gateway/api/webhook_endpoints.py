"""Routes of `/v1/webhook-endpoints`: create, list, get, update, delete, rotate-secret, test.

Records are camelCase, as the SDKs type `WebhookEndpoint` (`workspaceId`, `hasSecret`, `createdAt`, …, times
as ISO 8601); `signing_secret` appears only in the answers of create and rotate-secret. The use cases are
services/webhook_endpoints.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from aistats_gateway.api.deps import Workspace, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.uploads import parse_json_object, read_limited
from aistats_gateway.api.wire import iso

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhook-endpoints"])
MAX_BODY = 64 * 1024
MAX_OFFSET = 2**31 - 1


def endpoint_record(row: dict[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
    """The public record; never a secret unless `with_secret` (create and rotate answer it once)."""
    record: dict[str, Any] = {
        "id": row["id"], "object": "webhook_endpoint", "workspaceId": row["workspace_id"], "name": row["name"],
        "url": row["url"], "status": row["status"], "events": list(row["events"]), "hasSecret": bool(row["secret"]),
        "createdBy": None, "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"]),
        "deletedAt": iso(row["deleted_at"]),
        # our extension: until when the secret replaced by the last rotation still signs deliveries
        "previousSecretExpiresAt": iso(row["previous_secret_until"]),
    }
    if with_secret:
        record["signing_secret"] = row["secret"]
    return record


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await read_limited(request.stream(), MAX_BODY)
    if optional and not raw.strip():
        return {}
    return parse_json_object(raw)


@router.post("")
async def create_endpoint(request: Request, workspace: Workspace) -> JSONResponse:
    row = await gateway(request).webhook_endpoints.create(workspace, await _body(request))
    return JSONResponse(endpoint_record(row, with_secret=True), status_code=201)


@router.get("")
async def list_endpoints(request: Request, workspace: Workspace, limit: int = Query(100, ge=1, le=100),
                         offset: int = Query(0, ge=0, le=MAX_OFFSET), include_deleted: bool = False) -> JSONResponse:
    rows, has_more = await gateway(request).webhook_endpoints.list(workspace, limit=limit, offset=offset,
                                                                   include_deleted=include_deleted)
    return JSONResponse({"object": "list", "data": [endpoint_record(r) for r in rows], "has_more": has_more})


@router.get("/{endpoint_id}")
async def get_endpoint(request: Request, workspace: Workspace, endpoint_id: str) -> JSONResponse:
    return JSONResponse(endpoint_record(await gateway(request).webhook_endpoints.get(workspace, endpoint_id)))


@router.patch("/{endpoint_id}")
async def update_endpoint(request: Request, workspace: Workspace, endpoint_id: str) -> JSONResponse:
    row = await gateway(request).webhook_endpoints.update(workspace, endpoint_id, await _body(request))
    return JSONResponse(endpoint_record(row))


@router.delete("/{endpoint_id}")
async def delete_endpoint(request: Request, workspace: Workspace, endpoint_id: str) -> JSONResponse:
    await gateway(request).webhook_endpoints.delete(workspace, endpoint_id)
    return JSONResponse({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


@router.post("/{endpoint_id}/rotate-secret")
async def rotate_secret(request: Request, workspace: Workspace, endpoint_id: str) -> JSONResponse:
    """Body optional: `{"overlap_seconds": N}` (default 86400; 0 retires the old secret at once)."""
    row = await gateway(request).webhook_endpoints.rotate(workspace, endpoint_id, await _body(request, optional=True))
    return JSONResponse(endpoint_record(row, with_secret=True))


@router.post("/{endpoint_id}/test")
async def test_endpoint(request: Request, workspace: Workspace, endpoint_id: str) -> JSONResponse:
    await _body(request, optional=True)  # nothing to read, but a body is bounded like any other
    return JSONResponse(await gateway(request).webhook_endpoints.test(workspace, endpoint_id))
