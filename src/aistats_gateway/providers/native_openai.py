"""The OpenAI Batch API as a native execution backend: `/v1/files` + `/v1/batches` of any server that
speaks it (OpenAI itself, or another AI Stats gateway).

Owns the wire of that API: uploading the input file (streamed from our blob store, never whole in memory),
creating the batch with an `Idempotency-Key` header and our ids in its `metadata` (so a create whose answer
was lost is found again by listing), reading status and `request_counts`, cancelling, downloading the output
and error files, and reading their lines back into `Outcome`s. Input and output lines are OpenAI's own
format, so bodies pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp.payload import AsyncIterablePayload

from aistats_gateway.providers.base import usage_dict, usage_of
from aistats_gateway.providers.native_base import (
    CANCELLED,
    COMPLETED,
    EXPIRED,
    FAILED,
    ExpectedIds,
    HttpClient,
    Outcome,
    RemoteBatch,
    Search,
    result_custom_id,
)
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.native_jobs import JobItem, NativeJob

ENDED = {"completed": COMPLETED, "expired": EXPIRED, "cancelled": CANCELLED, "failed": FAILED}
JOB_TAG = "aistats_native_job"
BATCH_TAG = "aistats_batch_id"


def remote(obj: Any) -> RemoteBatch:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError("not a batch object")
    status = str(obj.get("status"))
    counts = obj.get("request_counts") or {}
    errors = obj.get("errors") or {}
    messages = [str(e.get("message")) for e in (errors.get("data") or []) if isinstance(e, dict)]
    refs = [ref for ref in (obj.get("output_file_id"), obj.get("error_file_id")) if isinstance(ref, str) and ref]
    raw_tags = obj.get("metadata")
    tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    return RemoteBatch(
        id=obj["id"], status=status, ended_as=ENDED.get(status),
        counts={k: int(counts.get(k) or 0) for k in ("total", "completed", "failed")}, result_refs=refs,
        error="; ".join(messages[:5]) or None, created_at=obj.get("created_at"),
        tags={str(k): str(v) for k, v in tags.items()},
    )


class OpenAIBatches:
    kind = "openai"
    id_scheme = "verbatim"  # OpenAI takes any custom_id our validation accepts

    def __init__(self, name: str, base_url: str, api_key: str | None, *, timeout_seconds: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": "aistats-gateway/0.1"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.http = HttpClient(name, headers, timeout_seconds)

    # ---------------------------------------------------------------- input
    def input_line(self, endpoint: str, custom_id: str, upstream_model: str, item: JobItem) -> bytes | Outcome:
        body = orjson.loads(item.body or b"{}")  # held_items reads it; None only for unreadable lines
        body["model"] = upstream_model
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body})

    async def submit(self, job: NativeJob, blobs: BlobStore, endpoint: str, window: str, tags: dict[str, str],
                     on_file: Callable[[str], Awaitable[None]]) -> RemoteBatch:
        file_id = job.provider_file_id
        if file_id is None:
            assert job.input_key is not None
            writer = aiohttp.MultipartWriter("form-data")
            purpose = writer.append("batch")
            purpose.set_content_disposition("form-data", name="purpose")
            part = writer.append_payload(AsyncIterablePayload(blobs.read(job.input_key),
                                                              content_type="application/jsonl"))
            part.set_content_disposition("form-data", name="file", filename=f"aistats-{job.id}.jsonl")
            uploaded = await self.http.call("POST", f"{self.base_url}/files", data=writer, what="file upload")
            file_id = str(uploaded["id"])
            await on_file(file_id)
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window, "metadata": tags}
        created = await self.http.call("POST", f"{self.base_url}/batches", data=orjson.dumps(body),
                                       headers={"content-type": "application/json",
                                                "idempotency-key": job.idempotency_key}, what="batch create")
        return remote(created)

    # ---------------------------------------------------------------- status
    async def get(self, native_id: str) -> RemoteBatch:
        return remote(await self.http.call("GET", f"{self.base_url}/batches/{native_id}", what="batch status"))

    async def cancel(self, native_id: str) -> RemoteBatch:
        return remote(await self.http.call("POST", f"{self.base_url}/batches/{native_id}/cancel",
                                           what="batch cancel"))

    async def find(self, job: NativeJob, claimed: set[str], pages: int, expected: ExpectedIds) -> Search:
        """The provider batch a lost create made for `job`, proven by the job id we put in its metadata (unique:
        a ULID; a batch without it — another client's, however alike — is never taken). `expected` is unused."""
        after: str | None = None
        for _ in range(pages):
            params = {"limit": "100"}
            if after:
                params["after"] = after
            page = await self.http.call("GET", f"{self.base_url}/batches", params=params, what="batch list")
            data = page.get("data") or []
            for obj in data:
                found = remote(obj)
                if found.tags.get(JOB_TAG) == job.id and found.id not in claimed:
                    return Search(found=found)
            oldest = data[-1].get("created_at") if data else None
            if not page.get("has_more") or not data or (
                    isinstance(oldest, (int, float)) and oldest < job.created_at - 3600):
                return Search()
            after = str(data[-1]["id"])
        return Search()

    # ---------------------------------------------------------------- results
    async def download(self, found: RemoteBatch, blobs: BlobStore, prefix: str) -> list[str]:
        keys = []
        for i, file_id in enumerate(found.result_refs):
            key = f"{prefix}/result_{i}.jsonl"
            await self.http.download(f"{self.base_url}/files/{file_id}/content", blobs, key, what="result download")
            keys.append(key)
        return keys

    async def discard(self, found: RemoteBatch, provider_file_id: str | None) -> None:
        """Delete what we left on the provider once our copies are stored: the input file we uploaded and the
        batch's output and error files (OpenAI keeps batches themselves; they cannot be deleted)."""
        for file_id in [f for f in (provider_file_id, *found.result_refs) if f]:
            await self.http.delete(f"{self.base_url}/files/{file_id}", what="file delete")

    result_custom_id = staticmethod(result_custom_id)

    def outcome(self, endpoint: str, item: JobItem, record: dict[str, Any]) -> Outcome:
        response = record.get("response")
        error = record.get("error")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            status = int(response["status_code"])
            body = response.get("body")
            raw = orjson.dumps(body) if not isinstance(body, str) else body.encode()
            if 200 <= status < 300:
                tin, tout = usage_of(body)
                return Outcome(status, raw, usage_dict(body), tin, tout)
            return Outcome(status, raw)
        if isinstance(error, dict):
            return Outcome(None, None, error_code=str(error.get("code") or "request_failed"),
                           error_message=str(error.get("message") or "The provider reported an error."))
        return Outcome(None, None, error_code="native_invalid_result",
                       error_message="The provider's result line has neither a response nor an error.")

    async def close(self) -> None:
        await self.http.close()
