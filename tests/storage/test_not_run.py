"""Lines that never ran (issue 18, item 1) on SQLite and PostgreSQL: `cancelled_lines` / `expired_lines` move with
the other counters in the settle and fail-unfinished transactions, and recounting from the item rows agrees."""

from __future__ import annotations

from aistats_gateway.domain.jsonl import error_line, upstream_error_line
from aistats_gateway.storage.lines import LineFilter
from aistats_gateway.storage.settlement import recount
from aistats_gateway.storage.store import Settlement, Store
from tests.storage.support import run, seed


def test_not_run_lines_are_counted_apart_from_failures(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=10)
        leased = await store.items.lease("batch_1", "boot", 4, 100.0)
        ok, bad, halted, timed_out = (i.line for i in leased)
        answer = b'{"error": {"message": "down", "type": "server_error", "code": null}}'
        rec = (await store.items.settle([
            Settlement("batch_1", ok, True, b"{}", 1),
            Settlement("batch_1", bad, False, upstream_error_line("r1", "c", 503, "G-1", answer), 2),
            # a native batch's provider reports a line it cancelled: settled through the same path
            Settlement("batch_1", halted, False, error_line("r2", "c", "batch_cancelled", "stopped"), 1),
            Settlement("batch_1", timed_out, False, error_line("r3", "c", "upstream_timeout", "slow"), 3),
        ], 1.0))["batch_1"]
        assert (rec.completed, rec.failed, rec.cancelled_lines, rec.expired_lines) == (1, 3, 1, 0)
        rec = await store.items.fail_unfinished("batch_1", "batch_cancelled", 2.0)
        counts = rec.counts
        assert (counts.total, counts.completed, counts.failed) == (10, 1, 9)  # OpenAI's counts as they were
        assert counts.extensions() == {"succeeded": 1, "errored": 2, "cancelled": 7, "expired": 0}
        async with store.db.write() as conn:
            again = await recount(conn, "batch_1", 3.0)
        assert again.counts == counts
        # the stored codes the line inspector filters on: the one rule of domain.failures
        lines = await store.lines.page("batch_1", LineFilter(), after=None, offset=0, limit=10)
        codes = {row["line"]: row["error_code"] for row in lines[0]}
        assert (codes[ok], codes[bad], codes[halted], codes[timed_out]) == (
            None, "server_error", "batch_cancelled", "upstream_timeout")

    run(db_url, body)


def test_expired_lines(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=3)
        rec = await store.items.fail_unfinished("batch_1", "batch_expired", 2.0)
        assert (rec.failed, rec.cancelled_lines, rec.expired_lines, rec.counts.errored) == (3, 0, 3, 0)

    run(db_url, body)
