"""Finalizer: write a settled batch's output and error files and publish its terminal status.

Idempotent and safe to re-run from any point: blobs go to deterministic keys and become visible
atomically; the file rows and the status change are one transaction, so either the batch shows
its files or it is still finalizing/cancelling/in_progress and the next run writes them again.
Unfinished items of a cancelled or expired batch are settled first as `batch_cancelled` /
`batch_expired` failures, so every input line lands exactly once across the two files.

Also owns the deferred half of deleting an input file: items point into their batch's input file, so a
file deleted while a batch still reads it keeps its blob until that batch (the last one reading it) is
terminal; `purge_deleted_inputs` then removes it (after each finalize, and from the housekeeper's sweep).
"""

from __future__ import annotations

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.failpoints import NONE as NO_FAILPOINTS
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.storage.blobs import BlobStore, BlobWriter
from aistats_gateway.storage.records import BatchRecord, FileRecord
from aistats_gateway.storage.schema import ITEM_FAILED
from aistats_gateway.storage.store import Store

PAGE = 2000


async def finalize(
    batch: BatchRecord, target: BatchStatus, *, store: Store, blobs: BlobStore, clock: Clock,
    failpoints: Failpoints = NO_FAILPOINTS,
) -> BatchRecord:
    """Move `batch` (finalizing, cancelling or in_progress-to-expire) to `target` with its files."""
    if target in (BatchStatus.CANCELLED, BatchStatus.EXPIRED):
        code = "batch_cancelled" if target is BatchStatus.CANCELLED else "batch_expired"
        batch = await store.items.fail_unfinished(batch.id, code, clock.now())
    elif await store.items.unsettled_count(batch.id):
        raise RuntimeError(f"{batch.id} still has unsettled items; it cannot complete")

    out_key = f"batches/{batch.id}/output.jsonl"
    err_key = f"batches/{batch.id}/errors.jsonl"
    out, err = blobs.writer(out_key), blobs.writer(err_key)
    counts = [0, 0]
    try:
        after = 0
        while page := await store.items.results_by_line(batch.id, after, PAGE):
            for item in page:
                after = item.line
                if counts[0] + counts[1] == batch.total // 2:
                    failpoints.hit("mid_output_write")
                if item.succeeded:
                    await out.write(item.rendered() + b"\n")
                    counts[0] += 1
                elif item.status == ITEM_FAILED:
                    await err.write(item.rendered() + b"\n")
                    counts[1] += 1
                else:
                    raise RuntimeError(f"{batch.id} line {item.line} is not settled")
        new_files: list[FileRecord] = []
        now = int(clock.now())
        values: dict[str, str | None] = {}
        for writer, key, count, field, name in (
            (out, out_key, counts[0], "output_file_id", "output"),
            (err, err_key, counts[1], "error_file_id", "errors"),
        ):
            size = await _publish(writer, count)
            if size is None:
                values[field] = None
                continue
            record = FileRecord(
                id=ids.file_id(), workspace_id=batch.workspace_id, filename=f"{batch.id}_{name}.jsonl",
                purpose="batch_output", bytes=size, status="processed", blob_key=key,
                created_at=now,
                expires_at=now + batch.output_expires_after if batch.output_expires_after is not None else None,
            )
            new_files.append(record)
            values[field] = record.id
    except BaseException:
        await out.abort()
        await err.abort()
        raise
    failpoints.hit("before_publish")
    published = await store.batches.publish_results(batch.id, batch.status, target, clock.now(), new_files, **values)
    failpoints.hit("after_publish")
    return published


async def _publish(writer: BlobWriter, count: int) -> int | None:
    if count == 0:
        await writer.abort()
        return None
    return await writer.commit()


async def purge_deleted_inputs(store: Store, blobs: BlobStore) -> int:
    """Remove the blobs, then the rows, of input files deleted by their owners while a batch still read them,
    once no unfinished batch does. Idempotent (several processes may race: deleting a blob twice is harmless)."""
    found = await store.files.purgeable()
    for record in found:
        await blobs.delete(record.blob_key)
        await store.files.forget(record.id)
    return len(found)
