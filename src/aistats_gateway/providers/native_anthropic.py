"""Anthropic Message Batches (`/v1/messages/batches`) as a native execution backend.

Owns that API's wire and its translation both ways, reusing the Messages translation of the managed path:
  * input: `/v1/messages` lines go as `params` unchanged; `/v1/chat/completions` and `/v1/responses` lines are
    translated (anthropic_translate.py) — a line that cannot be translated fails at once with the same 400 the
    managed path gives, and is never sent; other endpoints fail the same way;
  * custom_id: Anthropic takes 1-64 characters of `[A-Za-z0-9_-]`; every line goes as `<job id>-<n>` (the
    `job` id scheme, native_settle.py: n is our line number), which fits whatever the user's ids are and no
    other batch can carry — what makes a lost create provable (below);
  * results: `succeeded` → 200 with the message (translated back to `chat.completion`/`response` for OpenAI
    lines, anthropic_answers.py); `errored` → the error's HTTP status (invalid_request_error 400, ...,
    overloaded_error 529) with the error body (OpenAI's envelope for translated lines); `canceled` →
    `batch_cancelled`; `expired` → `batch_expired`;
  * a create whose answer was lost: Message Batches carry no metadata, and another gateway (or any client) on
    the same key may have made a batch just like it — adopting that one would hand its answers to our tenant
    and delete it at the provider. So a listed batch is only a candidate (`is_candidate`: unclaimed, the
    job's request count, made between the job's planning and its last create attempt), and a candidate is
    the job's only when its results prove it (`Proof`: exactly the job's `<job id>-<n>` custom_ids). Results
    exist once a batch has ended: while a candidate runs the search says `pending` and the runner waits.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from datetime import datetime
from typing import Any

import orjson
from aiohttp.payload import AsyncIterablePayload

from aistats_gateway.errors import Rejected
from aistats_gateway.providers.anthropic import ANTHROPIC_VERSION, DEFAULT_BASE_URL, TRANSLATED
from aistats_gateway.providers.anthropic_answers import (
    AnswerError,
    error_to_openai,
    normalized_usage,
    openai_error,
    prompt_tokens,
    to_chat_completion,
    to_response,
)
from aistats_gateway.providers.anthropic_translate import TranslationError
from aistats_gateway.providers.native_base import (
    CANCELLED,
    COMPLETED,
    EXPIRED,
    ExpectedIds,
    HttpClient,
    Outcome,
    RemoteBatch,
    Search,
    blob_lines,
    result_custom_id,
    split_lines,
)
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.native_jobs import JobItem, NativeJob

CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
SKEW_SECONDS = 300.0  # clock difference tolerated between us and the provider when matching a lost create
ID_SCHEME = "job"  # the custom_ids sent (native_settle.provider_custom_id): `<job id>-<line>`


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def remote(obj: Any) -> RemoteBatch:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError("not a message batch object")
    counts = {k: int((obj.get("request_counts") or {}).get(k) or 0)
              for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    status = str(obj.get("processing_status"))
    ended_as = None
    if status == "ended":
        if obj.get("cancel_initiated_at"):
            ended_as = CANCELLED
        elif counts["expired"]:
            ended_as = EXPIRED
        else:
            ended_as = COMPLETED
    url = obj.get("results_url")
    return RemoteBatch(
        id=obj["id"], status=status, ended_as=ended_as,
        counts={"total": sum(counts.values()), "completed": counts["succeeded"],
                "failed": counts["errored"] + counts["canceled"] + counts["expired"]},
        result_refs=[url] if isinstance(url, str) and url else [], created_at=_time(obj.get("created_at")),
    )


def is_candidate(found: RemoteBatch, job: NativeJob, claimed: Collection[str]) -> bool:
    """Could `found` be the batch a lost create of `job` made? Not another job's, exactly the job's request
    count, and made after the job was planned and before its last create attempt (give or take SKEW_SECONDS
    of clock difference). Only a candidate: `Proof` decides."""
    if found.id in claimed or found.counts["total"] != job.lines or found.created_at is None:
        return False
    last = job.create_attempted_at if job.create_attempted_at is not None else job.created_at
    return job.created_at - SKEW_SECONDS <= found.created_at <= last + SKEW_SECONDS


class Proof:
    """Whether a batch's results prove it the job's: fed the custom_id of each result line (None for a line
    without one), it holds when every one is among the ids the job sent, none twice, and none missing. Since
    the job's ids carry its unique id, no other batch can pass. `add` says False as soon as it cannot hold,
    so a foreign batch's results are not read to their end."""

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = frozenset(expected)
        self.seen: set[str] = set()
        self.broken = False

    def add(self, custom_id: str | None) -> bool:
        if self.broken or custom_id is None or custom_id not in self.expected or custom_id in self.seen:
            self.broken = True
            return False
        self.seen.add(custom_id)
        return True

    @property
    def proven(self) -> bool:
        return not self.broken and bool(self.expected) and len(self.seen) == len(self.expected)


class AnthropicBatches:
    kind = "anthropic"
    id_scheme = ID_SCHEME

    def __init__(self, name: str, base_url: str | None, api_key: str | None, *, timeout_seconds: float) -> None:
        self.name = name
        root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = (root[:-3] if root.endswith("/v1") else root) + "/v1/messages/batches"
        headers = {"anthropic-version": ANTHROPIC_VERSION, "user-agent": "aistats-gateway/0.1"}
        if api_key:
            headers["x-api-key"] = api_key
        self.http = HttpClient(name, headers, timeout_seconds)
        self._not_ours: dict[str, set[str]] = {}  # job id -> ended candidates whose results disproved them

    # ---------------------------------------------------------------- input
    def input_line(self, endpoint: str, custom_id: str, upstream_model: str, item: JobItem) -> bytes | Outcome:
        try:
            body = orjson.loads(item.body or b"{}")  # held_items reads it; None only for unreadable lines
            if endpoint in TRANSLATED:
                body = TRANSLATED[endpoint](body)
            elif endpoint != "/v1/messages":
                return Outcome(400, openai_error(
                    f"Provider '{self.name}' (Anthropic) does not serve {endpoint}; it serves /v1/messages, "
                    "/v1/chat/completions and /v1/responses.", code="unsupported_endpoint"))
        except TranslationError as exc:
            return Outcome(400, openai_error(exc.message, param=exc.param, code="unsupported_for_anthropic"))
        body.pop("x_fault", None)  # the test upstreams' fault plans have no place in a batch request
        body["model"] = upstream_model
        return orjson.dumps({"custom_id": custom_id, "params": body})

    async def submit(self, job: NativeJob, blobs: BlobStore, endpoint: str, window: str, tags: dict[str, str],
                     on_file: Callable[[str], Awaitable[None]]) -> RemoteBatch:
        assert job.input_key is not None
        payload = AsyncIterablePayload(_requests_body(blobs, job.input_key), content_type="application/json")
        return remote(await self.http.call("POST", self.base_url, data=payload, what="message batch create"))

    # ---------------------------------------------------------------- status
    async def get(self, native_id: str) -> RemoteBatch:
        return remote(await self.http.call("GET", f"{self.base_url}/{native_id}", what="message batch status"))

    async def cancel(self, native_id: str) -> RemoteBatch:
        return remote(await self.http.call("POST", f"{self.base_url}/{native_id}/cancel",
                                           what="message batch cancel"))

    async def find(self, job: NativeJob, claimed: set[str], pages: int, expected: ExpectedIds) -> Search:
        """The batch a lost create of `job` made, proven by its results; or how many candidates still run.
        Jobs built before the `job` id scheme have nothing that could prove a batch theirs: nothing is found."""
        if job.id_scheme != ID_SCHEME:
            return Search()
        pending = 0
        ids: frozenset[str] | None = None
        refuted = self._not_ours.get(job.id, set())
        for candidate in await self._candidates(job, claimed, pages):
            if candidate.ended_as is None:
                pending += 1
            elif candidate.id not in refuted:
                ids = await expected() if ids is None else ids
                if await self._proves(candidate, ids):
                    self._not_ours.pop(job.id, None)
                    return Search(found=candidate)
                self._not_ours.setdefault(job.id, refuted).add(candidate.id)
        return Search(pending=pending)

    async def _candidates(self, job: NativeJob, claimed: set[str], pages: int) -> list[RemoteBatch]:
        """`is_candidate` batches from the newest-first list, oldest first; the list is read until it reaches
        batches made before the job."""
        after: str | None = None
        found: list[RemoteBatch] = []
        for _ in range(pages):
            params = {"limit": "100"}
            if after:
                params["after_id"] = after
            page = await self.http.call("GET", self.base_url, params=params, what="message batch list")
            data = page.get("data") or []
            batches = [remote(obj) for obj in data]
            found += [b for b in batches if is_candidate(b, job, claimed)]
            too_old = any(b.created_at is not None and b.created_at < job.created_at - SKEW_SECONDS for b in batches)
            if not page.get("has_more") or not data or too_old:
                break
            after = str(page.get("last_id") or data[-1]["id"])
        found.sort(key=lambda b: b.created_at or 0.0)
        return found

    async def _proves(self, candidate: RemoteBatch, ids: frozenset[str]) -> bool:
        """Read the ended candidate's results until `Proof` holds or breaks (a foreign batch: at its first line)."""
        proof = Proof(ids)
        url = candidate.result_refs[0] if candidate.result_refs else f"{self.base_url}/{candidate.id}/results"
        try:
            async with contextlib.aclosing(self.http.stream(url, what="message batch results")) as chunks:
                async for raw in split_lines(chunks):
                    try:
                        record = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        record = None
                    if not proof.add(self.result_custom_id(record) if isinstance(record, dict) else None):
                        break
        except Rejected as exc:
            if exc.status == 404:  # deleted by whoever owns it: nothing left to prove, so not ours to take
                return False
            raise
        return proof.proven

    # ---------------------------------------------------------------- results
    async def download(self, found: RemoteBatch, blobs: BlobStore, prefix: str) -> list[str]:
        url = found.result_refs[0] if found.result_refs else f"{self.base_url}/{found.id}/results"
        key = f"{prefix}/results.jsonl"
        await self.http.download(url, blobs, key, what="message batch results")
        return [key]

    async def discard(self, found: RemoteBatch, provider_file_id: str | None) -> None:
        """Delete the ended Message Batch (and its results) once our copy of the results is stored."""
        await self.http.delete(f"{self.base_url}/{found.id}", what="message batch delete")

    result_custom_id = staticmethod(result_custom_id)

    def outcome(self, endpoint: str, item: JobItem, record: dict[str, Any]) -> Outcome:
        raw_result = record.get("result")
        result: dict[str, Any] = raw_result if isinstance(raw_result, dict) else {}
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = result["message"]
            usage = normalized_usage(message)
            try:
                if endpoint == "/v1/chat/completions":
                    body = orjson.dumps(to_chat_completion(message))
                elif endpoint == "/v1/responses":
                    body = orjson.dumps(to_response(message, orjson.loads(item.body or b"{}")))
                else:
                    body = orjson.dumps(message)
            except AnswerError as exc:
                return Outcome(None, None, error_code="native_invalid_result",
                               error_message=f"{self.name} returned a result that is not a message: {exc}")
            return Outcome(200, body, usage, prompt_tokens(usage), usage["output_tokens"])
        if kind == "errored":
            raw_error = result.get("error")
            envelope: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
            raw_inner = envelope.get("error")
            inner: dict[str, Any] = raw_inner if isinstance(raw_inner, dict) else envelope
            status = ERROR_STATUS.get(str(inner.get("type")), 500)
            raw = orjson.dumps(envelope if envelope.get("type") == "error" else {"type": "error", "error": inner})
            return Outcome(status, raw if endpoint == "/v1/messages" else error_to_openai(status, raw, self.name))
        if kind == "canceled":
            return Outcome(None, None, error_code="batch_cancelled",
                           error_message="The batch was cancelled before this request was processed.")
        if kind == "expired":
            return Outcome(None, None, error_code="batch_expired",
                           error_message="The provider's batch expired before this request was processed.")
        return Outcome(None, None, error_code="native_invalid_result",
                       error_message=f"{self.name} returned a result of unknown type {kind!r}.")

    async def close(self) -> None:
        await self.http.close()


async def _requests_body(blobs: BlobStore, key: str) -> AsyncIterator[bytes]:
    """`{"requests": [<line>, <line>, ...]}` streamed from the JSONL input blob."""
    yield b'{"requests":['
    first = True
    async for line in blob_lines(blobs, key):
        yield line if first else b"," + line
        first = False
    yield b"]}"
