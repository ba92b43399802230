"""GET /v1/usage against a real gateway: per day and model totals agree with the request log, filters
and workspaces are honoured, bad parameters answer 400 with the envelope; the day expression compiles
to the same text in the select list and GROUP BY on PostgreSQL as well as SQLite."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.dialects import postgresql, sqlite

from aistats_gateway.storage.schema import request_log
from aistats_gateway.storage.usage import DAY_SECONDS, day_number
from tests.harness import MOCK_PRICES, Gateway, chat_line, jsonl, wait_for_batch

# Non-zero prices for mock/echo so spend is something to add up (USD per 1M tokens).
CONFIG = MOCK_PRICES


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("usage") / "data", config=CONFIG)
    yield g
    g.stop()


def run_batch(api: httpx.Client, lines: list[dict[str, Any]], session: str | None = None) -> dict[str, Any]:
    f = api.post("/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()
    body: dict[str, Any] = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}
    if session:
        body["session_id"] = session
    created = api.post("/batches", json=body)
    assert created.status_code == 200, created.text
    return wait_for_batch(api, created.json()["id"])


def logged(api: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api.get(f"/batches/{batch_id}/requests",
                                         params={"limit": 1000, "view": "attempts"}).json()["data"]
    return rows


def test_usage_adds_up_the_request_log_per_day_and_model(gw: Gateway) -> None:
    api = gw.client()
    a = run_batch(api, [chat_line(f"a{i}", "hello " * (i + 1)) for i in range(6)]
                  + [chat_line(f"r{i}", "no", model="mock/reject") for i in range(2)], session="sess-a")
    b = run_batch(api, [chat_line(f"b{i}", "world") for i in range(3)], session="sess-b")
    entries = logged(api, a["id"]) + logged(api, b["id"])

    usage = api.get("/usage", params={"days": 7}).json()
    assert usage["object"] == "usage" and usage["days"] == 7 and len(usage["dates"]) == 7
    assert usage["dates"][-1] == dt.datetime.now(dt.UTC).date().isoformat()
    assert usage["models"] == ["mock/echo", "mock/reject"]
    by_model = {row["model"]: row for row in usage["data"]}
    assert set(by_model) == {"mock/echo", "mock/reject"}
    for model, row in by_model.items():
        mine = [e for e in entries if e["model"] == model]
        assert row["date"] == usage["dates"][-1] and row["provider"] == "mock"
        assert row["requests"] == len(mine)
        assert row["succeeded"] == sum(1 for e in mine if 200 <= (e["status_code"] or 0) < 300)
        assert row["failed"] == row["requests"] - row["succeeded"]
        assert row["input_tokens"] == sum(e["usage"]["input_tokens"] for e in mine)
        assert row["output_tokens"] == sum(e["usage"]["output_tokens"] for e in mine)
        assert row["cost_nanos"] == sum(e["cost_nanos"] or 0 for e in mine)
    assert by_model["mock/echo"]["cost_nanos"] > 0  # the configured prices apply
    assert by_model["mock/reject"]["failed"] == 2 and by_model["mock/reject"]["succeeded"] == 0
    totals = usage["totals"]
    assert totals["requests"] == len(entries)
    assert totals["cost_nanos"] == a["billing"]["cost_nanos"] + b["billing"]["cost_nanos"]
    assert totals["cost_usd"] == f"{totals['cost_nanos'] / 1e9:.9f}"
    assert usage["batches_by_status"] == {"completed": 2}

    only_b = api.get("/usage", params={"session_id": "sess-b"}).json()
    assert only_b["totals"]["requests"] == len(logged(api, b["id"])) == 3
    assert only_b["models"] == ["mock/echo"] and only_b["batches_by_status"] == {"completed": 1}


def test_days_follow_the_callers_time_zone(gw: Gateway) -> None:
    api = gw.client()
    run_batch(api, [chat_line("tz1", "x")])
    now = time.time()
    for offset in (-600, 0, 330, 840):
        usage = api.get("/usage", params={"days": 3, "tz_offset_minutes": offset}).json()
        local_today = dt.datetime.fromtimestamp(now + offset * 60, dt.UTC).date()
        assert usage["dates"][-1] == local_today.isoformat(), offset
        assert usage["tz_offset_minutes"] == offset
        assert {row["date"] for row in usage["data"]} <= set(usage["dates"])
        # `from` is local midnight two days before today
        assert (usage["from"] + offset * 60) % DAY_SECONDS == 0
        assert usage["totals"]["requests"] >= 1


def test_other_workspaces_see_nothing(gw: Gateway) -> None:
    run_batch(gw.client(), [chat_line("w1", "mine")])
    other = gw.client(gw.new_key("usage-other"))
    usage = other.get("/usage").json()
    assert usage["data"] == [] and usage["totals"]["requests"] == 0 and usage["batches_by_status"] == {}
    assert usage["workspace_id"] != gw.client().get("/usage").json()["workspace_id"]


@pytest.mark.parametrize(("params", "param"), [
    ({"days": 0}, "days"), ({"days": 367}, "days"), ({"days": "soon"}, "days"),
    ({"tz_offset_minutes": 900}, "tz_offset_minutes"), ({"tz_offset_minutes": "x"}, "tz_offset_minutes"),
])
def test_bad_parameters_answer_400_with_the_envelope(gw: Gateway, params: dict[str, Any], param: str) -> None:
    resp = gw.client().get("/usage", params=params)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_usage_needs_a_key(gw: Gateway) -> None:
    resp = httpx.get(f"{gw.base_url}/usage")
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_day_expression_is_portable() -> None:
    """PostgreSQL rejects a GROUP BY whose expression differs from the select list's (e.g. by bind
    parameter numbers); the constants are inline, so both render the same text on both dialects."""
    from sqlalchemy import func, literal_column, select

    day = day_number(request_log.c.created_at + literal_column("3600"))
    query = select(day.label("day"), func.count()).group_by(day)
    pg = str(query.compile(dialect=postgresql.dialect()))
    lite = str(query.compile(dialect=sqlite.dialect()))
    assert "FLOOR((request_log.created_at + 3600) / 86400.0)" in pg
    assert pg.count("FLOOR((request_log.created_at + 3600) / 86400.0)") == 2
    assert lite.count("CAST((request_log.created_at + 3600) / 86400.0 AS INTEGER)") == 2
    assert "%(" not in pg and "?" not in lite  # no bind parameters in the day expression
