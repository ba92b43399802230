"""Money end to end: priced lines settle to exactly the sum of their pricing lines, cancelled batches pay
only for what ran, uncoverable batches get 402 and hold nothing, dry runs price without running, and a
kill around settlement never charges twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, ProcessExited, Upstream, wait_for_batch

# Shipped list prices, in nanos per token (USD per 1M tokens × 1000): hand-written here on purpose.
PRICES = {"gpt-4o-mini": (150, 600), "gpt-4.1-nano": (100, 400)}


def line(cid: str, model: str, text: str, max_tokens: int = 20) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                     "x_fault": {"key": cid}}}


def grant(gw: Gateway, usd: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "credits", "grant", "--usd", usd,
                          "--json"], env=gw.env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def expected_cost(api: httpx.Client, batch: dict[str, Any]) -> int:
    lines = [json.loads(x) for x in api.get(f"/files/{batch['output_file_id']}/content").text.splitlines()]
    total = 0
    for entry in lines:
        body = entry["response"]["body"]
        price_in, price_out = PRICES[body["model"]]
        total += body["usage"]["prompt_tokens"] * price_in + body["usage"]["completion_tokens"] * price_out
    return total


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    upstream = Upstream(tmp_path / "up.log", latency_ms=30)
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"},
                 config="[executor]\nconcurrency = 8\n")
    yield gw, upstream
    gw.stop()
    upstream.stop()


def test_mixed_batch_settles_to_the_sum_of_its_lines(stack: Any) -> None:
    gw, _ = stack
    api = gw.client()
    rows = [line(f"m{i}", "gpt-4o-mini" if i % 2 else "gpt-4.1-nano", "word " * (i % 7 + 1)) for i in range(60)]
    done = wait_for_batch(api, api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}
                                        ).json()["id"])
    cost = expected_cost(api, done)
    billing = done["billing"]
    assert cost > 0 and billing["cost_nanos"] == cost == sum(p["line_nanos"] for p in done["pricing_lines"])
    assert billing["reason"] == "charged" and billing["billed"] and billing["charged"]
    assert billing["cost_usd"] == f"{cost // 10**9}.{cost % 10**9:09d}" and billing["state"] == "settled"
    assert billing["estimated_nanos"] >= cost  # the estimate is an upper bound
    models = {(p["model"], p["dimension"]) for p in done["pricing_lines"]}
    assert ("gpt-4o-mini", "output_text_tokens") in models and ("gpt-4.1-nano", "input_text_tokens") in models
    mini_in = next(p for p in done["pricing_lines"] if p["model"] == "gpt-4o-mini" and
                   p["dimension"] == "input_text_tokens")
    assert mini_in["unit_price_usd"] == "0.150000000" and mini_in["unit_size"] == 1_000_000
    assert mini_in["pricing_plan"] == "standard"
    logged = api.get(f"/batches/{done['id']}/requests", params={"limit": 100}).json()["data"]
    assert sum(e["cost_nanos"] for e in logged) == cost  # integer per-token prices: no rounding difference


def test_credit_hold_refusal_cancel_and_release(stack: Any) -> None:
    gw, _ = stack
    api = gw.client()
    assert api.get("/credits").json()["unlimited"] is True
    assert grant(gw, "0.05")["balance_nanos"] == 50_000_000
    big = [line(f"b{i}", "gpt-4o-mini", "x", max_tokens=100_000) for i in range(10)]  # 10 × 100k × 600 = $0.60
    refused = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": big})
    assert refused.status_code == 402 and refused.json()["error"]["type"] == "insufficient_funds"
    assert refused.json()["error"]["estimated_nanos"] >= 600_000_000
    assert api.get("/credits").json()["held_nanos"] == 0 and api.get("/batches").json()["data"] == []
    assert [f for f in api.get("/files").json()["data"] if f["filename"] == "inline_requests.jsonl"] == []

    rows = [line(f"c{i}", "gpt-4o-mini", "hello there", max_tokens=50) for i in range(400)]
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}).json()
    assert batch["billing"]["reservation_status"] == "held" and batch["billing"]["reserved_nanos"] > 0
    assert api.get("/credits").json()["held_nanos"] == batch["billing"]["reserved_nanos"]
    deadline = time.monotonic() + 20
    while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    api.post(f"/batches/{batch['id']}/cancel")
    done = wait_for_batch(api, batch["id"])
    cost = expected_cost(api, done)
    assert done["status"] == "cancelled" and 0 < cost
    assert done["billing"]["cost_nanos"] == cost and done["billing"]["reservation_status"] == "settled"
    assert done["billing"]["reason"] == "charged_partial_success"
    credit = api.get("/credits").json()
    assert credit["held_nanos"] == 0 and credit["balance_nanos"] == 50_000_000 - cost

    empty = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                       "requests": [line("v", "gpt-4o-mini", "x")]}).json()
    api.post(f"/batches/{empty['id']}/cancel")
    void = wait_for_batch(api, empty["id"])
    if void["request_counts"]["completed"] == 0:  # cancelled before anything ran: the hold is released
        assert void["billing"]["reservation_status"] == "released" and void["billing"]["cost_nanos"] == 0
        assert void["billing"]["reason"] == "cancelled" and void["billing"]["billed"] is False
    assert api.get("/credits").json()["held_nanos"] == 0


def test_dry_run_prices_without_running(stack: Any) -> None:
    gw, upstream = stack
    api = gw.client()
    rows = [line(f"d{i}", "gpt-4o-mini", "hello", max_tokens=100) for i in range(5)]
    preview = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows, "dry_run": True})
    body = preview.json()
    assert preview.status_code == 200 and body["object"] == "batch.dry_run" and body["valid"] is True
    assert body["request_counts"]["total"] == 5 and body["estimated_nanos"] >= 5 * 100 * 600
    out_line = next(p for p in body["pricing_lines"] if p["dimension"] == "output_text_tokens")
    assert out_line["quantity"] == 500 and out_line["line_nanos"] == 300_000
    bad = api.post("/batches", json={"endpoint": "/v1/chat/completions", "dry_run": True,
                                     "requests": [line("x", "gpt-4o-mini", "a"), line("x", "gpt-4o-mini", "b")]})
    assert bad.json()["valid"] is False and bad.json()["errors"]["data"][0]["code"] == "duplicate_custom_id"
    assert api.get("/batches").json()["data"] == [] and upstream.stats().get("requests", 0) == 0


@pytest.mark.parametrize("failpoint", ["before_publish", "after_publish"])
def test_a_kill_around_settlement_never_charges_twice(tmp_path: Path, failpoint: str) -> None:
    upstream = Upstream(tmp_path / "up.log")
    env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"}
    gw = Gateway(tmp_path / "data", env=env)
    try:
        grant(gw, "5")
        gw.stop()
        gw = Gateway(tmp_path / "data", env={**env, "AISTATS_FAILPOINTS": failpoint})
        api = gw.client()
        rows = [line(f"k{i}", "gpt-4o-mini", "some words") for i in range(50)]
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}).json()
        assert gw.proc.wait(30) == 86  # died at the failpoint
        gw.stop(signal.SIGKILL)
        try:
            gw = Gateway(tmp_path / "data", env=env)
        except ProcessExited as exc:  # pragma: no cover - not armed any more
            raise AssertionError(str(exc)) from exc
        api = gw.client()
        done = wait_for_batch(api, batch["id"])
        cost = expected_cost(api, done)
        assert done["billing"]["cost_nanos"] == cost
        with sqlite3.connect(tmp_path / "data" / "gateway.db") as conn:
            charges = conn.execute("SELECT amount_nanos FROM credit_entries WHERE batch_id = ? AND kind = 'charge'",
                                   (batch["id"],)).fetchall()
            releases = conn.execute("SELECT COUNT(*) FROM credit_entries WHERE batch_id = ? AND kind = 'release'",
                                    (batch["id"],)).fetchone()
        assert charges == [(cost,)] and releases == (1,)
        credit = api.get("/credits").json()
        assert credit["balance_nanos"] == 5_000_000_000 - cost and credit["held_nanos"] == 0
    finally:
        gw.stop()
        upstream.stop()
