"""Recover (issue 17) in storage, on SQLite and PostgreSQL: the error summary counted as lines settle, and
idempotency keys that make one object out of racing creates."""

from __future__ import annotations

import asyncio
import threading

import orjson

from aistats_gateway.domain.idempotency import IdempotencyKey
from aistats_gateway.domain.jsonl import error_line, upstream_error_line
from aistats_gateway.storage.idempotency import KeyTaken
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.store import Settlement, Store, create_engine
from tests.storage.support import run, seed

REJECTED = orjson.dumps({"error": {"message": "nope", "type": "invalid_request_error", "code": "mock_rejected"}})


def _upstream(line: int, status: int = 400, body: bytes = REJECTED) -> bytes:
    return upstream_error_line("r", f"c{line}", status, "G-x", body, "mock")


def test_error_summary_counts_failures_once_as_they_settle(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=8)
        leased = await store.items.lease("batch_1", "boot", 5, 100.0)
        group = [Settlement("batch_1", 1, True, b"{}", 1),
                 Settlement("batch_1", 2, False, _upstream(2), 1),
                 Settlement("batch_1", 3, False, _upstream(3), 1),
                 Settlement("batch_1", 4, False, _upstream(4, 503, b"upstream down"), 3),
                 Settlement("batch_1", 5, False, error_line("r", "c5", "upstream_timeout", "timed out"), 3)]
        assert [i.line for i in leased] == [1, 2, 3, 4, 5]
        await store.items.settle(group, 1.0)
        await store.items.settle(group, 2.0)  # re-applied (an ambiguous commit): nothing counts twice
        await store.items.fail_unfinished("batch_1", "batch_cancelled", 3.0)
        summary = (await store.errors.of(["batch_1"]))["batch_1"]
        assert summary == [
            {"code": "batch_cancelled", "status_code": None, "count": 3,
             "example": {"custom_id": "c6",
                         "message": "The batch was cancelled before this request was processed."}},
            {"code": "mock_rejected", "status_code": 400, "count": 2,
             "example": {"custom_id": "c2", "message": "nope"}},
            {"code": "server_error", "status_code": 503, "count": 1,
             "example": {"custom_id": "c4", "message": "upstream down"}},
            {"code": "upstream_timeout", "status_code": None, "count": 1,
             "example": {"custom_id": "c5", "message": "timed out"}},
        ]
        await store.items.fail_unfinished("batch_1", "batch_cancelled", 4.0)  # idempotent: nothing left to count
        assert (await store.errors.of(["batch_1"]))["batch_1"][0]["count"] == 3

    run(db_url, body)


def _file(file_id: str) -> FileRecord:
    return FileRecord(file_id, "ws_a", "in.jsonl", "batch", 1, "processed", f"files/{file_id}", 1, None)


def test_racing_creates_with_one_key_make_one_object(db_url: str) -> None:
    """20 threads, each with its own engine (separate connections, as separate requests or processes have),
    insert a file under one key at once: one row is stored, and every loser learns the winner's id."""
    run(db_url, lambda store: store.workspaces.ensure("ws_a", "ws_a"))
    key = IdempotencyKey("k-1", "f" * 64, "file")
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        async def main() -> str:
            store = Store(create_engine(db_url))
            try:
                barrier.wait(timeout=60)
                try:
                    await store.files.insert(_file(f"file-{n}"), key)
                    return f"won:file-{n}"
                except KeyTaken as taken:
                    return f"lost:{taken.stored.object_id}"
            finally:
                await store.close()

        result = asyncio.run(main())
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [o.split(":", 1)[1] for o in outcomes if o.startswith("won:")]
    assert len(outcomes) == 20 and len(winners) == 1, outcomes
    assert {o.split(":", 1)[1] for o in outcomes} == set(winners)

    async def check(store: Store) -> None:
        page, _ = await store.files.page("ws_a", after=None, limit=100, purpose=None, ascending=True, now=1)
        assert [f.id for f in page] == winners
        stored = await store.idempotency.get("ws_a", "k-1")
        assert stored is not None and stored.object_id == winners[0]
        assert await store.idempotency.get("ws_b", "k-1") is None  # keys are per workspace

    run(db_url, check)


def test_an_expired_key_is_taken_over(db_url: str) -> None:
    async def body(store: Store) -> None:
        await store.workspaces.ensure("ws_a", "ws_a")
        key = IdempotencyKey("k-2", "a" * 64, "file")
        await store.files.insert(_file("file-old"), key)
        try:
            await store.files.insert(_file("file-twice"), key)
            raise AssertionError("a live key must refuse a second object")
        except KeyTaken as taken:
            assert taken.stored.object_id == "file-old"
        store.db.clock.now = lambda: 1e12  # type: ignore[method-assign]  # far past the 24 h TTL
        await store.files.insert(_file("file-new"), key)
        stored = await store.idempotency.get("ws_a", "k-2")
        assert stored is not None and stored.object_id == "file-new"
        assert await store.idempotency.purge_expired(1e12 + 25 * 3600) == 1

    run(db_url, body)
