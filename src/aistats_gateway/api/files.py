"""Routes of the files router: upload (multipart or JSON), list, get, content (streamed), delete.

No prefix of its own: app.py mounts it at `/v1/files`, `/v1/batches/files` and `/v1/batch/files` (the paths the
Phaseo SDKs use), all identical.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from aistats_gateway.api import wire
from aistats_gateway.api.deps import Workspace, gateway
from aistats_gateway.api.json_upload import read_json_upload
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.uploads import read_multipart
from aistats_gateway.domain import batch as rules
from aistats_gateway.domain import idempotency
from aistats_gateway.errors import InvalidRequest, PayloadTooLarge
from aistats_gateway.services.files import check_filename, check_purpose

router = APIRouter(tags=["files"])
PREFIXES = ("/v1/files", "/v1/batches/files", "/v1/batch/files")


@router.post("")
async def upload(request: Request, workspace: Workspace) -> JSONResponse:
    gw = gateway(request)
    files = gw.files
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > files.max_bytes + 64 * 1024:
        raise PayloadTooLarge(
            f"The upload is {int(length):,} bytes; the limit is {files.max_bytes:,} bytes.", code="file_too_large",
            param="file")
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()  # media types are case-insensitive (RFC 9110)
    if media_type != "multipart/form-data" and not media_type.startswith("application/json") and media_type:
        raise InvalidRequest(
            f"Unsupported Content-Type '{content_type}': send multipart/form-data (file, purpose) or "
            "JSON {\"purpose\", \"file\"}.", code="unsupported_content_type")
    idempotency_key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    with gw.uploads.hold():
        file_id, key, writer = files.new_upload()
        try:  # the file streams into the blob writer as it arrives, in either form
            if media_type == "multipart/form-data":
                form = await read_multipart(request.stream(), content_type, writer)
                fields: dict[str, Any] = dict(form.fields)
                raw_filename: object = form.filename
                expires_raw: object = _bracketed(form.fields, "expires_after")
                saw_file = form.saw_file
            else:
                body = await read_json_upload(request.stream(), writer, files.max_bytes * 2 + 64 * 1024)
                fields, saw_file = body.fields, body.saw_file
                raw_filename, expires_raw = fields.get("filename"), fields.get("expires_after")
            if not saw_file:
                raise InvalidRequest("Missing required parameter 'file' (a multipart file part, or the JSONL text "
                                     "or a data: URL in JSON).", code="missing_required_parameter", param="file")
            purpose = check_purpose(fields.get("purpose"))
            expires_after = rules.parse_expires_after(expires_raw, "expires_after")
            filename = check_filename(raw_filename)
        except BaseException:
            await writer.writer.abort()
            raise
        claim = None if idempotency_key is None else idempotency.IdempotencyKey(
            idempotency_key, idempotency.upload_fingerprint(writer.sha256.digest(), purpose, filename, expires_after),
            "file")
        record, replayed = await files.publish_upload(workspace, file_id, key, writer, filename=filename,
                                                      purpose=purpose, expires_after=expires_after, idempotency=claim)
    return JSONResponse(wire.file_object(record), headers=replay_headers(replayed))


def replay_headers(replayed: bool) -> dict[str, str]:
    """`Idempotent-Replayed: true` on an answer repeated for a create retried with its Idempotency-Key."""
    return {idempotency.REPLAYED_HEADER: "true"} if replayed else {}


def _bracketed(fields: dict[str, str], name: str) -> dict[str, str] | None:
    """A nested form field as multipart clients send it (`expires_after[anchor]`, `expires_after[seconds]`)."""
    prefix = f"{name}["
    found = {key[len(prefix):-1]: value for key, value in fields.items()
             if key.startswith(prefix) and key.endswith("]")}
    return found or None


@router.get("")
async def list_files(
    request: Request,
    workspace: Workspace,
    after: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    purpose: str | None = None,
    order: str = Query("desc", pattern="^(asc|desc)$"),
) -> JSONResponse:
    gw = gateway(request)
    records, has_more = await gw.store.files.page(
        workspace, after=after, limit=limit, purpose=purpose, ascending=order == "asc", now=int(gw.files.clock.now()))
    return JSONResponse(wire.page([wire.file_object(r) for r in records], has_more))


@router.get("/{file_id}")
async def get_file(request: Request, workspace: Workspace, file_id: str) -> JSONResponse:
    return JSONResponse(wire.file_object(await gateway(request).files.get(workspace, file_id)))


@router.get("/{file_id}/content")
async def file_content(request: Request, workspace: Workspace, file_id: str) -> StreamingResponse:
    record, chunks = await gateway(request).files.content(workspace, file_id)
    media = "application/jsonl" if record.filename.endswith((".jsonl", ".ndjson")) else "application/octet-stream"
    headers: dict[str, Any] = {
        "content-length": str(record.bytes),
        "content-disposition": content_disposition(record.filename),
    }
    return StreamingResponse(chunks, media_type=media, headers=headers)


def content_disposition(filename: str) -> str:
    """`attachment` with the name as a quoted ASCII fallback and, when that had to change it, the exact name as
    RFC 5987 `filename*` (UTF-8, percent-encoded). Header values are Latin-1 without control characters, so a
    name like 'é€.jsonl' or one with a quote or a line break must never reach the header as it is."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename) or "download"
    header = f'attachment; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


@router.delete("/{file_id}")
async def delete_file(request: Request, workspace: Workspace, file_id: str) -> JSONResponse:
    record = await gateway(request).files.delete(workspace, file_id)
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})
