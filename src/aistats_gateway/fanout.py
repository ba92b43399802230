"""Cross-process fan-out over Redis pub/sub: batch changes and cancel signals between API and workers.

Owns the channels under the configured prefix: `<prefix>events` carries every committed batch change
(the record the store's commit listener saw) so a WebSocket or results subscriber on ANY API process
hears of updates committed by ANY worker; `<prefix>cancel` carries batches that entered `cancelling`,
so every worker stops sending their items at once instead of at its next sweep; `<prefix>submit`
(published by API-only processes) carries new batches, and ONE worker — the one that wins
`SET <prefix>ingest:<batch> NX` — starts validating it at once.

Publishing never blocks a commit: the store listener only records the latest change per batch, and a
background task publishes what accumulated (one message per batch per round, so a burst of commits on
one batch costs one message). Receiving feeds the local `BatchBus` only for batches someone here
subscribes to, drops this process's own messages (the local bus already has them) and drops records
older than what was already delivered (messages of different workers can arrive out of order: status
rank, then settled count, never go back). Pub/sub is at-most-once: a process that was disconnected
misses messages, which is why subscribers still take a fresh snapshot from the database on connect and
workers still sweep the database for cancels — Redis only makes both immediate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from aistats_gateway.bus import BatchBus
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.storage.records import BatchRecord, batch_record, snapshot_of
from aistats_gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_RANK = {BatchStatus.VALIDATING: 0, BatchStatus.IN_PROGRESS: 1, BatchStatus.FINALIZING: 2,
         BatchStatus.CANCELLING: 2}


def _order(record: BatchRecord) -> tuple[int, int]:
    return (3 if record.status.terminal else _RANK.get(record.status, 0), record.completed + record.failed)


class RedisFanout:
    def __init__(self, client: Any, prefix: str, bus: BatchBus, origin: str, *,
                 on_cancel: Callable[[BatchRecord], None] | None = None,
                 on_submit: Callable[[BatchRecord], None] | None = None, announce_submits: bool = False) -> None:
        self.client = client
        self.bus = bus
        self.origin = origin
        self.prefix = prefix
        self.on_cancel = on_cancel
        self.on_submit = on_submit
        self.announce_submits = announce_submits  # an API-only process: workers must hear of new batches
        self.events_channel = f"{prefix}events"
        self.cancel_channel = f"{prefix}cancel"
        self.submit_channel = f"{prefix}submit"
        self._pending: dict[str, BatchRecord] = {}
        self._cancels: list[BatchRecord] = []
        self._submits: dict[str, BatchRecord] = {}
        self._claims: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._delivered: dict[str, tuple[int, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self.published = 0
        self.received = 0

    # ------------------------------------------------------------------ publishing (store listener)
    def publish(self, record: BatchRecord, _queued: bool = False) -> None:
        self._pending[record.id] = record
        if record.status is BatchStatus.CANCELLING:
            self._cancels.append(record)
        elif record.status is BatchStatus.VALIDATING and self.announce_submits:
            self._submits[record.id] = record
        self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the newest state was kept; try again shortly
                log.warning("publishing batch changes to Redis failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        cancels, self._cancels = self._cancels, []
        submits, self._submits = self._submits, {}
        if not pending and not cancels and not submits:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for record in pending.values():
                    pipe.publish(self.events_channel, self._encode(record))
                for record in cancels:
                    pipe.publish(self.cancel_channel, self._encode(record))
                for record in submits.values():
                    pipe.publish(self.submit_channel, self._encode(record))
                await pipe.execute()
        except BaseException:
            for batch_id, record in pending.items():
                self._pending.setdefault(batch_id, record)
            self._cancels[:0] = cancels
            self._submits.update({k: v for k, v in submits.items() if k not in self._submits})
            raise
        self.published += len(pending) + len(cancels) + len(submits)

    def _encode(self, record: BatchRecord) -> bytes:
        return orjson.dumps({"o": self.origin, "r": snapshot_of(record)})

    # ------------------------------------------------------------------ receiving
    async def _subscriber(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [self.events_channel, self.cancel_channel]
                if self.on_submit is not None:
                    channels.append(self.submit_channel)
                await pubsub.subscribe(*channels)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._receive(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis subscription lost (%s); re-subscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _receive(self, message: dict[str, Any]) -> None:
        try:
            data = orjson.loads(message["data"])
            if data.get("o") == self.origin:
                return
            record = batch_record(data["r"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed fan-out message: %s", exc)
            return
        self.received += 1
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if channel == self.cancel_channel:
            if self.on_cancel is not None:
                self.on_cancel(record)
            return
        if channel == self.submit_channel:
            task = asyncio.create_task(self._claim_ingest(record))
            self._claims.add(task)
            task.add_done_callback(self._claims.discard)
            return
        if not self.bus.subscribers(record.id):
            self._delivered.pop(record.id, None)
            return
        order = _order(record)
        if order < self._delivered.get(record.id, (-1, -1)):
            return  # an older state than one already delivered (another worker's message overtook it)
        self._delivered[record.id] = order
        self.bus.publish(record)

    async def _claim_ingest(self, record: BatchRecord) -> None:
        """One worker validates a new batch: the first to set the claim key (others' sweeps still find it
        later should this one die)."""
        try:
            won = await self.client.set(f"{self.prefix}ingest:{record.id}", self.origin, nx=True, ex=600)
        except Exception as exc:
            log.warning("claiming %s for validation failed (%s); the sweep will find it", record.id, exc)
            return
        if won and self.on_submit is not None:
            self.on_submit(record)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publisher(), name="fanout-publisher"),
                       asyncio.create_task(self._subscriber(), name="fanout-subscriber")]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, *self._claims])
        self._tasks.clear()
        with contextlib.suppress(Exception):  # what was committed last still goes out
            await asyncio.wait_for(self._flush(), 2.0)
