"""Settling a native job's lines: provider outcomes → our output/error lines, batch-plan prices, request log.

Owns the last step of native execution: each `Outcome` becomes the same result line the managed executor
would write (success lines keep the provider's response body; non-2xx answers keep status and body; lines
without an answer get an error code), priced with the provider's `batch` plan (`Pricer(catalog, "batch")`),
with one request-log row, committed through `Items.settle()` in groups. Only items still held by the job
are settled, so running a collection twice (a crash in the middle) settles nothing twice.
"""

from __future__ import annotations

from typing import Any

import orjson

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.jsonl import error_line, success_line, upstream_error_line
from aistats_gateway.domain.request_log import RequestLogRow
from aistats_gateway.pricing.calculator import PricingRow, usage_details
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.native_base import CANCELLED, COMPLETED, EXPIRED, FAILED, Outcome, blob_lines
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.native_jobs import JobItem, NativeJob, NativeJobs
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Settlement, Store

GROUP = 500
# What a line the provider did not report becomes, by how the provider batch ended.
MISSING = {
    COMPLETED: ("native_result_missing", "The provider's batch ended without a result for this request."),
    EXPIRED: ("batch_expired", "The provider's batch expired before this request was processed."),
    CANCELLED: ("batch_cancelled", "The batch was cancelled before this request was processed."),
    FAILED: ("native_batch_failed", "The provider's batch failed"),
    "rejected": ("native_batch_rejected", "The provider refused the batch"),
}


def provider_custom_id(job: NativeJob, item: JobItem) -> str:
    """The custom_id sent to the provider, by the job's id scheme (the client's, fixed when its input is built):
    `verbatim` the user's own (OpenAI); `job` `<job id>-<n>` (Anthropic: fits its 64-char pattern whatever the
    user's id, and no other batch can carry it, so results prove whose a batch is — native_anthropic.py);
    `line` `line-<n>` (Anthropic jobs built before `job`). n is our line number, so each maps back."""
    if job.id_scheme == "verbatim":
        return item.custom_id
    if job.id_scheme == "job":
        return f"{job.id}-{item.line}"
    return f"line-{item.line}"


class Settler:
    """Collects settlements of one job's lines and commits them in groups."""

    def __init__(self, store: Store, pricer: Pricer, clock: Clock, batch: BatchRecord, provider: str) -> None:
        self.store = store
        self.pricer = pricer
        self.clock = clock
        self.batch = batch
        self.provider = provider
        self.settlements: list[Settlement] = []
        self.logs: list[RequestLogRow] = []
        self.count = 0

    def add(self, item: JobItem, outcome: Outcome) -> None:
        request_id = ids.gateway_request_id()
        usage_rows: list[PricingRow] = []
        cost: int | None = None
        if outcome.succeeded and outcome.body is not None:
            usage_rows, cost = self.pricer.usage_rows(self.provider, item.model, self.batch.endpoint, outcome.usage)
            line = success_line(ids.batch_request_id(), item.custom_id, outcome.status or 200, request_id,
                                outcome.body, self.provider)
        elif outcome.status is not None:
            line = upstream_error_line(ids.batch_request_id(), item.custom_id, outcome.status, request_id,
                                       outcome.body or b"null", self.provider)
        else:
            line = error_line(ids.batch_request_id(), item.custom_id, outcome.error_code or "request_failed",
                              outcome.error_message or "The request failed.")
        cached, reasoning = usage_details(self.batch.endpoint, outcome.usage) if outcome.succeeded else (0, 0)
        self.settlements.append(Settlement(self.batch.id, item.line, outcome.succeeded, line, 1,
                                           outcome.input_tokens, outcome.output_tokens, tuple(usage_rows),
                                           cached, reasoning))
        self.logs.append(RequestLogRow(
            request_id, self.batch.workspace_id, self.batch.id, self.batch.session_id, item.custom_id, item.line, 1,
            self.provider, item.model, outcome.status, outcome.error_code, 0, outcome.input_tokens,
            outcome.output_tokens, cost, self.clock.now()))
        self.count += 1

    async def flush(self, force: bool = False) -> None:
        if not self.settlements or (not force and len(self.settlements) < GROUP):
            return
        group, logs = self.settlements, self.logs
        self.settlements, self.logs = [], []
        await self.store.items.settle(group, self.clock.now(), logs)


async def collect(
    jobs: NativeJobs, job: NativeJob, client: Any, batch: BatchRecord, settler: Settler, blobs: BlobStore,
    halt: BatchStatus | None,
) -> int:
    """Settle every line the job still holds from its downloaded result files; lines the files do not
    mention get the code of how the provider batch ended. Returns how many lines were settled."""
    held: dict[str, JobItem] = {}
    async for page in jobs.held_items(job):
        for item in page:
            held[provider_custom_id(job, item)] = item
    for key in job.result_keys or []:
        async for raw in blob_lines(blobs, key):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            cid = client.result_custom_id(record)
            found = held.pop(cid, None) if cid is not None else None
            if found is None:
                continue
            settler.add(found, _as_halted(client.outcome(batch.endpoint, found, record), halt))
            await settler.flush()
    ended = job.provider_status if job.provider_status in MISSING else COMPLETED
    code, message = MISSING[ended]
    if ended in (FAILED, "rejected") and job.error:
        message = f"{message}: {job.error}"
    for item in held.values():
        settler.add(item, _as_halted(Outcome(None, None, error_code=code, error_message=message), halt))
    await settler.flush(force=True)
    return settler.count


def _as_halted(outcome: Outcome, halt: BatchStatus | None) -> Outcome:
    """A line the provider cancelled because OUR window ran out is `batch_expired`, as the managed path says."""
    if halt is BatchStatus.EXPIRED and outcome.error_code == "batch_cancelled":
        return Outcome(None, None, error_code="batch_expired", error_message=MISSING[EXPIRED][1].replace(
            "The provider's batch expired", "The batch expired (completion_window ran out)"))
    return outcome
