"""Retries: re-run the lines of a terminal batch that did not succeed, as a new batch of the same chain.

Owns `POST /v1/batches/{id}/retry` (which lines: domain/retry.py; the new input file holds exactly those lines,
byte for byte as the parent's input file has them, in its order) and reading a chain (`chain`, for the merged
results). The retry batch takes over the parent's endpoint, window, webhook, session, metadata, provider
preferences, execution mode and output expiry, and records `parent_batch_id` and its chain's root. With an
Idempotency-Key, the same retry asked twice answers the first retry batch (domain/idempotency.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from aistats_gateway.clock import Clock
from aistats_gateway.domain.batch import CompletionWindow
from aistats_gateway.domain.create_batch import CreateBatch
from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.domain.failures import failure_of
from aistats_gateway.domain.idempotency import IdempotencyKey, json_fingerprint, replay_of
from aistats_gateway.domain.retry import RetryFilter, parse_retry
from aistats_gateway.errors import Conflict, InputFileUnavailable, InvalidRequest, excerpt
from aistats_gateway.services.batches import BatchService, ensure_rows_kept
from aistats_gateway.services.files import FileService
from aistats_gateway.storage.bodies import read_lines
from aistats_gateway.storage.idempotency import KeyTaken
from aistats_gateway.storage.items import FailedLine
from aistats_gateway.storage.records import BatchRecord, FileRecord
from aistats_gateway.storage.store import Store

PAGE = 1000


def retry_request(parent: BatchRecord, input_file_id: str) -> CreateBatch:
    """The create of a retry of `parent` over `input_file_id`: the parent's settings, as its create stored them."""
    return CreateBatch(
        endpoint=parent.endpoint, endpoint_input=parent.endpoint_input,
        window=CompletionWindow(parent.expires_at - parent.created_at, parent.completion_window),
        metadata=parent.metadata, session_id=parent.session_id, webhook=parent.webhook, prefs=parent.provider_prefs,
        dry_run=False, output_expires_after=parent.output_expires_after,
        execution=ExecutionMode.of(parent.execution), input_file_id=input_file_id,
        inline=None)


class RetryService:
    def __init__(self, store: Store, files: FileService, batches: BatchService, clock: Clock) -> None:
        self.store = store
        self.files = files
        self.batches = batches
        self.clock = clock

    async def chain(self, workspace_id: str, batch_id: str) -> list[BatchRecord]:
        """The chain `batch_id` belongs to, root first (a batch that is no retry and has none: itself alone)."""
        batch = await self.batches.get(workspace_id, batch_id)
        chain = await self.store.batches.chain(batch.root_batch_id or batch.id)
        for member in chain:
            ensure_rows_kept(member, "per-line results")
        return chain

    async def retry(self, workspace_id: str, batch_id: str, body: dict[str, Any], key: str | None
                    ) -> tuple[BatchRecord, bool]:
        """(the retry batch, whether it is the one an earlier request with this Idempotency-Key created)."""
        parent = await self.batches.get(workspace_id, batch_id)
        claim = None if key is None else IdempotencyKey(key, json_fingerprint(f"batches.retry {parent.id}", body),
                                                        "batch")
        if claim is not None:
            earlier = replay_of(await self.store.idempotency.get(workspace_id, claim.key), claim, self.clock.now())
            if earlier is not None:
                return await self.batches.get(workspace_id, earlier), True
        if not parent.status.terminal:
            raise Conflict(f"Batch '{parent.id}' is {parent.status.value}; only a completed, failed, expired or "
                           "cancelled batch can be retried (cancel it first, or wait for it to end).",
                           code="batch_not_terminal", param="batch_id")
        ensure_rows_kept(parent, "per-line outcomes")
        chosen = parse_retry(body)
        if chosen.custom_ids is not None:
            unknown = chosen.custom_ids - await self.store.items.known_custom_ids(parent.id, sorted(chosen.custom_ids))
            if unknown:
                first = sorted(unknown)[0]
                raise InvalidRequest(f"'custom_ids' names {len(unknown)} line(s) that batch {parent.id} does not "
                                     f"have, such as '{excerpt(first)}'.", code="unknown_custom_id",
                                     param="custom_ids")
        file = await self._input_of(parent, chosen)
        try:
            record = await self.batches.create(workspace_id, retry_request(parent, file.id), key=claim, lineage={
                "parent_batch_id": parent.id, "root_batch_id": parent.root_batch_id or parent.id})
        except KeyTaken as taken:  # a retry with the same key won the race: answer its batch
            with contextlib.suppress(Exception):
                await self.files.delete(workspace_id, file.id)
            assert claim is not None
            earlier = replay_of(taken.stored, claim, self.clock.now())
            if earlier is None:
                raise
            return await self.batches.get(workspace_id, earlier), True
        except BaseException:
            with contextlib.suppress(Exception):
                await self.files.delete(workspace_id, file.id)
            raise
        return record, False

    async def _input_of(self, parent: BatchRecord, chosen: RetryFilter) -> FileRecord:
        """The retry's input file: the chosen lines of the parent's input, byte for byte, in input order."""
        blob_key = await self.store.files.input_blob_key(parent.id)
        file_id, key, writer = self.files.new_upload()
        written = 0
        try:
            after = 0
            while page := await self.store.items.failed_lines(parent.id, after, PAGE):
                after = page[-1].line
                picked = [row for row in page if chosen.matches(row.custom_id, failure_of(row.result, row.error_code))]
                for line in await self._raw_lines(parent, blob_key, picked):
                    await writer.write(line + b"\n")
                    written += 1
            if not written:
                raise InvalidRequest(f"No line of batch {parent.id} matches ({chosen.describe()}): nothing to "
                                     "retry. Its error_summary lists the codes of its failed lines.",
                                     code="nothing_to_retry", param="statuses")
        except BaseException:
            await writer.writer.abort()
            raise
        return await self.files.finish_upload(parent.workspace_id, file_id, key, writer,
                                              filename=f"retry_of_{parent.id}.jsonl", purpose="batch")

    async def _raw_lines(self, parent: BatchRecord, blob_key: str | None, rows: list[FailedLine]) -> list[bytes]:
        ranges = [(r.body_offset, r.body_length) for r in rows
                  if r.body_offset is not None and r.body_length is not None]
        raw: list[bytes | None] = []
        if ranges:
            try:
                if blob_key is None:
                    raise InputFileUnavailable(f"batch {parent.id} has no input file row any more")
                raw = await read_lines(self.files.blobs, blob_key, ranges)
            except InputFileUnavailable:
                raise Conflict(f"The input file '{parent.input_file_id}' of batch {parent.id} is gone (deleted or "
                               "expired): its lines cannot be re-run. Upload them again and create a new batch.",
                               code="input_file_unavailable", param="batch_id") from None
        lines: list[bytes] = []
        found = iter(raw)
        for row in rows:
            if row.body_offset is not None and row.body_length is not None:
                line = next(found)
                if line is None:
                    raise Conflict(f"The input file '{parent.input_file_id}' of batch {parent.id} no longer holds "
                                   f"line {row.line}; its lines cannot be re-run.", code="input_file_unavailable",
                                   param="batch_id")
                lines.append(line)
            else:  # an item stored before its line was kept by reference (0007): its line is rebuilt from its body
                lines.append(orjson.dumps({"custom_id": row.custom_id, "method": "POST", "url": parent.endpoint,
                                           "body": orjson.Fragment(row.body or b"{}")}))
        return lines
