"""RedisFanout on a real Redis: changes committed in one process reach subscribers of another, never
their own process twice, never older after newer; cancels reach workers; exactly one worker claims a
new batch for validation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from aistats_gateway.bus import BatchBus
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.fanout import RedisFanout
from aistats_gateway.storage.records import BatchRecord
from tests import backends

pytestmark = pytest.mark.skipif(not backends.redis_available(), reason=backends.REDIS_SKIP)


@pytest.fixture
def prefix() -> Iterator[str]:
    p = backends.redis_prefix()
    yield p
    backends.drop_redis_keys(p)


def record(status: BatchStatus = BatchStatus.IN_PROGRESS, completed: int = 0, batch_id: str = "batch_1") -> BatchRecord:
    return BatchRecord(
        id=batch_id, workspace_id="ws", request_id="G-1", endpoint="/v1/chat/completions",
        endpoint_input="/v1/chat/completions", status=status, input_file_id="file-1", output_file_id=None,
        error_file_id=None, completion_window="24h", created_at=1, expires_at=2, in_progress_at=None,
        finalizing_at=None, completed_at=None, failed_at=None, expired_at=None, cancelling_at=None,
        cancelled_at=None, total=100, completed=completed, failed=0, input_tokens=0, output_tokens=0,
        metadata={"k": "v"}, session_id=None, webhook=None, provider_prefs=None, model=None, provider=None,
        errors=None, status_reason=None, updated_at=1.0)


async def until(check: object, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_changes_cancels_and_submits_cross_processes(prefix: str) -> None:
    async def body() -> None:
        import redis.asyncio as aredis

        clients = [aredis.Redis.from_url(backends.REDIS_URL) for _ in range(4)]
        api_bus, worker_bus = BatchBus(), BatchBus()
        cancels: list[str] = []
        submits: list[str] = []
        api = RedisFanout(clients[0], prefix, api_bus, "api", announce_submits=True)
        workers = [RedisFanout(c, prefix, worker_bus if i == 0 else BatchBus(), f"w{i}",
                               on_cancel=lambda r: cancels.append(r.id), on_submit=lambda r: submits.append(r.id))
                   for i, c in enumerate(clients[1:])]
        for f in (api, *workers):
            await f.start()
        try:
            sub = api_bus.subscribe("batch_1")
            workers[0].publish(record(completed=10))
            await until(lambda: sub.latest is not None)
            got = sub.take()
            assert got is not None and got.completed == 10 and got.metadata == {"k": "v"}
            assert got.status is BatchStatus.IN_PROGRESS
            # an older state arriving after a newer one is dropped; a newer one from another worker passes
            workers[1].publish(record(completed=50))
            await until(lambda: sub.latest is not None)
            assert (sub.take() or record()).completed == 50
            sub.armed = True
            workers[2].publish(record(completed=30))
            workers[2].publish(record(BatchStatus.COMPLETED, completed=100, batch_id="batch_2"))
            await until(lambda: api.received >= 4)
            assert sub.latest is None
            # a process never hears its own changes back (its local bus had them already)
            own = worker_bus.subscribe("batch_3")
            workers[0].publish(record(batch_id="batch_3"))
            api.publish(record(batch_id="batch_3", completed=1))
            await until(lambda: own.latest is not None)
            assert (own.take() or record()).completed == 1
            # a cancel committed by the API process reaches every worker
            api.publish(record(BatchStatus.CANCELLING, batch_id="batch_4"))
            await until(lambda: len(cancels) == 3)
            assert cancels == ["batch_4"] * 3
            # a new batch announced by the API-only process is claimed by exactly one worker
            api.publish(record(BatchStatus.VALIDATING, batch_id="batch_5"))
            await until(lambda: submits == ["batch_5"])
            await asyncio.sleep(0.2)
            assert submits == ["batch_5"]
            # a worker (announce_submits off) does not announce
            workers[0].publish(dataclasses.replace(record(BatchStatus.VALIDATING), id="batch_6"))
            await asyncio.sleep(0.2)
            assert submits == ["batch_5"]
        finally:
            for f in (api, *workers):
                await f.stop()
            for c in clients:
                await c.aclose()

    asyncio.run(body())
