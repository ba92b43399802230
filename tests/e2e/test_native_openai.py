"""Native execution against the OpenAI Batch API, for real: gateway A sends its batches to gateway B (a second
gateway, managed, which speaks the same /v1/files + /v1/batches API) as provider batches.

Covers completion (files, counts, batch-plan pricing, exactly one batch on B carrying our ids), partial
failure, the per-batch override and the 400 for `native` on a provider without a batch API, cancel, expiry
on the provider's side (B in-process on a clock the test moves), B killed while A polls, A killed while B's
batch runs (reattached by native_batch_id), and A killed between B's create and storing its id (found again
by listing B's batches, never created twice)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from aistats_gateway.clock import FakeClock
from tests.harness import Gateway, InProcessGateway, Receiver, chat_line, free_port, wait_for_batch

B_KEY = "sk-test-upstream-b"
B_CONFIG = "[executor]\nconcurrency = 1\nexpiry_check_seconds = 0.2\n[mock]\nslow_latency_ms = 250\n"
ENDPOINT = "/v1/chat/completions"


def a_config(b_url: str, c_url: str | None = None, c_key: str = "") -> str:
    clocked = f"""
[[providers]]
name = "clocked"
kind = "openai"
base_url = "{c_url}"
api_key = "{c_key}"
models = ["mock/*"]
batch_api = true
""" if c_url else ""
    return f"""
[executor]
expiry_check_seconds = 0.2

[webhooks]
allow_local = true

[native]
poll_interval_seconds = 0.2
reconcile_grace_seconds = 1
refresh_on_get_seconds = 0

[[providers]]
name = "openai"
kind = "openai"
base_url = "{b_url}"
api_key = "{B_KEY}"
models = ["mock/*"]
batch_api = true

[[providers]]
name = "plain"
kind = "openai"
base_url = "{b_url}"
api_key = "{B_KEY}"
models = ["plain-*"]
{clocked}
[[prices]]
provider = "openai"
model = "mock/echo"
default_max_output_tokens = 100
[prices.plans.standard]
input_text_tokens = "2.00"
output_text_tokens = "8.00"
[prices.plans.batch]
input_text_tokens = "1.00"
output_text_tokens = "4.00"
"""


def lines_of(api: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in api.get(f"/files/{file_id}/content").text.splitlines()]


def b_batches(b: httpx.Client) -> list[dict[str, Any]]:
    return list(b.get("/batches", params={"limit": 100}).json()["data"])


def create(api: httpx.Client, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    answer = api.post("/batches", json={"endpoint": ENDPOINT, "requests": rows, **extra})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_native_id(api: httpx.Client, batch_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = api.get(f"/batches/{batch_id}").json()
        if batch["native_batch_id"]:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def wait_provider_completed(up: httpx.Client, native_id: str, at_least: int, timeout: float = 15.0) -> None:
    """Until the provider's batch has finished `at_least` lines."""
    deadline = time.monotonic() + timeout
    while up.get(f"/batches/{native_id}").json()["request_counts"]["completed"] < at_least:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@dataclass
class Stack:
    a: Gateway  # the gateway under test: native batches on
    b: Gateway  # its upstream "OpenAI": a managed gateway
    c: InProcessGateway  # a second upstream, in this process on a clock the test moves (provider-side expiry)
    clock: FakeClock


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("native_openai")
    clock = FakeClock(start=time.time())
    # C runs one line at a time, 0.5 s each: its 20-line batch needs 10 s, far more than the expiry sweep
    # (every 0.05 s) needs to notice the moved clock even on a loaded machine.
    c = InProcessGateway(root / "c", clock, executor={"concurrency": 1, "expiry_check_seconds": 0.05},
                         mock={"slow_latency_ms": 500})
    b = Gateway(root / "b", api_key=B_KEY, config=B_CONFIG)
    a = Gateway(root / "a", config=a_config(b.base_url, c.base_url, c.api_key))
    yield Stack(a, b, c, clock)
    a.stop()
    b.stop()
    c.stop()


def test_completion_and_partial_failure_run_as_provider_batches_at_batch_prices(stack: Stack) -> None:
    a, b = stack.a, stack.b
    api, up = a.client(), b.client()
    rows = [chat_line("q/1 ünïcode", "hello there"), chat_line("q2", "second", max_tokens=5),
            chat_line("bad", "no", model="mock/reject"), chat_line("q3", "third")]
    before = {x["id"] for x in b_batches(up)}
    batch = create(api, rows, metadata={"team": "ml"})
    assert batch["execution"] == "auto"  # resolved once validation knows every line's provider
    done = wait_for_batch(api, batch["id"], timeout=30)
    assert done["status"] == "completed", done
    assert done["execution"] == "native"
    assert done["request_counts"].items() >= {"total": 4, "completed": 3, "failed": 1}.items()
    new = [x for x in b_batches(up) if x["id"] not in before]
    # OpenAI batches take one model each: one provider batch per model on B, each carrying our ids
    assert len(new) == 2 and {x["metadata"]["aistats_batch_id"] for x in new} == {batch["id"]}
    by_model = {n["model"]: n for n in done["native_batches"]}
    assert set(by_model) == {"mock/echo", "mock/reject"}
    assert by_model["mock/echo"]["request_counts"].items() >= {"total": 3, "completed": 3, "failed": 0}.items()
    assert by_model["mock/reject"]["request_counts"].items() >= {"total": 1, "completed": 0, "failed": 1}.items()
    assert {n["status"] for n in done["native_batches"]} == {"completed"}
    assert {n["id"] for n in done["native_batches"]} == {x["id"] for x in new}
    assert done["native_batch_id"] == done["native_batches"][0]["id"]
    out = lines_of(api, done["output_file_id"])
    err = lines_of(api, done["error_file_id"])
    assert [x["custom_id"] for x in out] == ["q/1 ünïcode", "q2", "q3"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello there"
    assert out[0]["provider"] == "openai" and out[0]["response"]["request_id"].startswith("G-")
    assert [x["custom_id"] for x in err] == ["bad"]
    assert err[0]["response"]["status_code"] == 400
    assert err[0]["response"]["body"]["error"]["code"] == "mock_rejected"
    plans = {(p["model"], p["dimension"]): p for p in done["pricing_lines"]}
    assert {p["pricing_plan"] for p in done["pricing_lines"]} == {"batch"}
    inp = plans[("mock/echo", "input_text_tokens")]
    assert inp["unit_price_usd"].startswith("1.0")  # the batch price (standard is 2.00)
    usage_in = sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in out)
    usage_out = sum(x["response"]["body"]["usage"]["completion_tokens"] for x in out)
    assert inp["quantity"] == usage_in
    assert done["billing"]["cost_nanos"] == usage_in * 1000 + usage_out * 4000
    # Once the results are ours, the provider's copies are deleted (the input we uploaded, its output and
    # error files) and so are our intermediate copies; the provider batches themselves stay, as on OpenAI.
    for provider_batch in (up.get(f"/batches/{x['id']}").json() for x in new):
        assert provider_batch["status"] == "completed"
        for ref in ("input_file_id", "output_file_id", "error_file_id"):
            if provider_batch[ref]:
                assert up.get(f"/files/{provider_batch[ref]}").status_code == 404, (ref, provider_batch)
    assert (a.data_dir / "blobs" / "files").is_dir()
    native_blobs = a.data_dir / "blobs" / "native"
    assert not native_blobs.exists() or not [p for p in native_blobs.rglob("*") if p.is_file()]


def test_a_part_over_the_providers_limits_runs_as_several_provider_batches(stack: Stack, tmp_path: Path) -> None:
    """OpenAI takes at most 50,000 lines (200 MB) per batch: a gateway told the limit is 3 lines sends a 7-line
    part as three provider batches and merges their results into one output file in input order."""
    config = a_config(stack.b.base_url).replace("[native]\n", "[native]\nopenai_max_lines = 3\n")
    a2 = Gateway(tmp_path / "a2", config=config)
    try:
        api, up = a2.client(), stack.b.client()
        rows = [chat_line(f"s{i}", f"split {i}") for i in range(7)]
        before = {x["id"] for x in b_batches(up)}
        done = wait_for_batch(api, create(api, rows, execution="native")["id"], timeout=30)
        assert done["status"] == "completed" and (
            done["request_counts"].items() >= {"total": 7, "completed": 7, "failed": 0}.items())
        new = [x for x in b_batches(up) if x["id"] not in before]
        assert sorted(x["request_counts"]["total"] for x in new) == [1, 3, 3]
        assert {x["metadata"]["aistats_batch_id"] for x in new} == {done["id"]}
        assert sorted(n["request_counts"]["total"] for n in done["native_batches"]) == [1, 3, 3]
        out = lines_of(api, done["output_file_id"])
        assert [x["custom_id"] for x in out] == [r["custom_id"] for r in rows]
        assert [x["response"]["body"]["choices"][0]["message"]["content"] for x in out] == \
            [f"echo: split {i}" for i in range(7)]
    finally:
        a2.stop()


def test_progress_of_a_running_provider_batch_reaches_webhooks_and_the_stream(stack: Stack, tmp_path: Path) -> None:
    """Lines of a provider batch settle here only when it ends; meanwhile the provider's counts move the batch's
    progress: `batch.progress` webhooks (each 10 % bucket once) and `job.updated` frames on the WebSocket."""
    receiver = Receiver(tmp_path / "rx.log")
    try:
        api = stack.a.client()
        rows = [chat_line(f"g{i}", f"slow {i}", model="mock/slow") for i in range(10)]  # B: 250 ms each, one at a time
        batch = create(api, rows, execution="native",
                       webhook={"url": receiver.url, "events": ["batch.progress", "batch.completed"]})
        seen: list[int] = []
        with connect(batch["websocket_url"] + "?interval_ms=1000",
                     additional_headers={"Authorization": f"Bearer {stack.a.api_key}"}, open_timeout=10) as ws:
            while True:
                frame = json.loads(ws.recv(timeout=30))
                if frame["type"] in ("job.snapshot", "job.updated"):
                    seen.append(frame["data"]["request_counts"]["completed"])
                    if frame["data"]["status"] == "completed":
                        break
        assert any(0 < n < 10 for n in seen), seen  # the provider's progress, before its batch ended
        assert seen == sorted(seen) and seen[-1] == 10
        deadline = time.monotonic() + 15
        while not any('"batch.completed"' in d["body"] for d in receiver.received()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        bodies = [json.loads(d["body"]) for d in receiver.received()]
        keys = [b["delivery"]["key"] for b in bodies if b["type"] == "batch.progress"]
        assert len(keys) == len(set(keys)) >= 3, keys  # each bucket once, several while B ran
        progress = [b["data"] for b in bodies if b["type"] == "batch.progress"]
        assert all(0 < d["request_counts"]["completed"] < 10 and d["status"] == "in_progress" for d in progress)
    finally:
        receiver.stop()


def test_a_native_batch_is_held_and_estimated_at_the_batch_price(stack: Stack, tmp_path: Path) -> None:
    """The providers run native batches at half price: a limited workspace whose credit covers that, but not
    the standard price, may run the batch natively (and is refused managed), and estimates say so."""
    a4 = Gateway(tmp_path / "a4", config=a_config(stack.b.base_url))
    try:
        api = a4.client()
        rows = [chat_line(f"p{i}", "a prompt of a few words " * 20) for i in range(50)]
        native = api.post("/batches", json={"endpoint": ENDPOINT, "requests": rows, "execution": "native",
                                            "dry_run": True}).json()
        managed = api.post("/batches", json={"endpoint": ENDPOINT, "requests": rows, "execution": "managed",
                                             "dry_run": True}).json()
        assert 0 < native["estimated_nanos"] and 1.9 < managed["estimated_nanos"] / native["estimated_nanos"] <= 2.0
        between = (native["estimated_nanos"] + managed["estimated_nanos"]) // 2
        subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "credits", "grant", "--usd",
                        f"{between / 1e9:.9f}"], env=a4.env, check=True, capture_output=True)
        refused = api.post("/batches", json={"endpoint": ENDPOINT, "requests": rows, "execution": "managed"})
        assert refused.status_code == 402, refused.text
        accepted = api.post("/batches", json={"endpoint": ENDPOINT, "requests": rows, "execution": "native"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["billing"]["reserved_nanos"] == native["estimated_nanos"]
        done = wait_for_batch(api, accepted.json()["id"], timeout=30)
        assert done["status"] == "completed" and done["billing"]["cost_nanos"] <= native["estimated_nanos"]
        assert api.get("/credits").json()["held_nanos"] == 0
    finally:
        a4.stop()


def test_execution_is_chosen_per_batch(stack: Stack) -> None:
    a, b = stack.a, stack.b
    api, up = a.client(), b.client()
    before = len(b_batches(up))
    managed = create(api, [chat_line("m1", "x")], execution="managed")
    assert managed["execution"] == "managed"
    short = create(api, [chat_line("s1", "x")], completion_window="2h")  # auto needs a 24h window
    assert short["execution"] == "managed"
    for batch in (managed, short):
        done = wait_for_batch(api, batch["id"])
        assert done["status"] == "completed" and done["native_batch_id"] is None
    # managed lines went to B as plain requests: still no new batch there
    assert len(b_batches(up)) == before
    refused = api.post("/batches", json={"endpoint": ENDPOINT, "execution": "native",
                                         "requests": [chat_line("p1", "x", model="plain-model")]})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "execution" and "plain-model" in error["message"] and "'plain'" in error["message"]
    bad = api.post("/batches", json={"endpoint": ENDPOINT, "execution": "fast", "requests": [chat_line("x", "y")]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "execution"


def test_cancel_cancels_the_provider_batch_and_keeps_what_it_finished(stack: Stack) -> None:
    a, b = stack.a, stack.b
    api, up = a.client(), b.client()
    rows = [chat_line(f"c{i}", f"slow {i}", model="mock/slow") for i in range(40)]  # 10 s unless cancelled
    batch = create(api, rows, execution="native")
    native_id = wait_native_id(api, batch["id"])["native_batch_id"]
    wait_provider_completed(up, native_id, 2)
    cancelling = api.post(f"/batches/{batch['id']}/cancel").json()
    assert cancelling["status"] == "cancelling"
    done = wait_for_batch(api, batch["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert up.get(f"/batches/{native_id}").json()["status"] == "cancelled"
    out, err = lines_of(api, done["output_file_id"]), lines_of(api, done["error_file_id"])
    assert 2 <= len(out) < 40
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    assert sorted(x["custom_id"] for x in out + err) == sorted(r["custom_id"] for r in rows)
    assert done["request_counts"].items() >= {"total": 40, "completed": len(out), "failed": len(err)}.items()


def test_provider_side_expiry_keeps_finished_lines(stack: Stack) -> None:
    api, up = stack.a.client(), stack.c.client()
    rows = [chat_line(f"e{i}", f"slow {i}", model="mock/slow") for i in range(20)]
    # routed to C, which gets A's own window (under 24h, so only an explicit `native` runs natively)
    batch = create(api, rows, execution="native", completion_window="1h", provider={"only": ["clocked"]})
    native_id = wait_native_id(api, batch["id"])["native_batch_id"]
    wait_provider_completed(up, native_id, 2)
    stack.clock.advance(3601)  # C's copy of the window runs out (A's own clock has not moved)
    done = wait_for_batch(api, batch["id"], timeout=30)
    assert done["status"] == "expired", (done, up.get(f"/batches/{native_id}").json())
    out, err = lines_of(api, done["output_file_id"]), lines_of(api, done["error_file_id"])
    assert 2 <= len(out) < 20 and {x["error"]["code"] for x in err} == {"batch_expired"}
    assert sorted(x["custom_id"] for x in out + err) == sorted(r["custom_id"] for r in rows)
    assert done["native_batches"][0]["status"] == "expired" and done["native_batches"][0]["provider"] == "clocked"


def test_provider_side_expiry_is_not_overtaken_by_the_housekeeper(stack: Stack, tmp_path: Path) -> None:
    """Regression (seen in CI): every line of a native batch is settled a moment before its runner finalizes it
    with the provider's outcome; a housekeeper sweep in that moment used to finalize it `completed` because all
    lines were settled. Here the runner stalls 1.5 s in that moment (the sweep runs every 0.2 s)."""
    a3 = Gateway(tmp_path / "a3", config=a_config(stack.b.base_url, stack.c.base_url, stack.c.api_key),
                 env={"AISTATS_FAILPOINTS": "native_before_finish~1.5"})
    try:
        api, up = a3.client(), stack.c.client()
        rows = [chat_line(f"h{i}", f"slow {i}", model="mock/slow") for i in range(20)]
        batch = create(api, rows, execution="native", completion_window="1h", provider={"only": ["clocked"]})
        native_id = wait_native_id(api, batch["id"])["native_batch_id"]
        wait_provider_completed(up, native_id, 1)
        stack.clock.advance(3601)
        done = wait_for_batch(api, batch["id"], timeout=30)
        assert up.get(f"/batches/{native_id}").json()["status"] == "expired"
        assert done["status"] == "expired", done
        err = lines_of(api, done["error_file_id"])
        assert err and {x["error"]["code"] for x in err} == {"batch_expired"}
    finally:
        a3.stop()


def test_restarts_and_crashes_never_lose_or_duplicate_a_provider_batch(tmp_path: Path) -> None:
    """A dies between B's create and storing the id of its second provider batch (the first one's id is
    stored); restarted, A reattaches the first by native_batch_id and finds the second by listing B's batches.
    Then B is killed while A polls, and restarted: A waits it out. Each provider batch exists exactly once."""
    b_port = free_port()
    config = B_CONFIG.replace("slow_latency_ms = 250", "slow_latency_ms = 600")  # B's batch outlives A's restart
    b = Gateway(tmp_path / "b", api_key=B_KEY, config=config, port=b_port)
    a = Gateway(tmp_path / "a", config=a_config(b.base_url), env={"AISTATS_FAILPOINTS": "native_after_create:2"})
    try:
        api = a.client()
        rows = [chat_line(f"r{i}", f"slow {i}", model="mock/slow") for i in range(14)] + \
            [chat_line(f"f{i}", f"fast {i}") for i in range(3)]
        batch = create(api, rows)
        deadline = time.monotonic() + 20
        while a.proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert a.proc.returncode == 86  # the failpoint fired: B has both batches, A stored only one id
        a.stop()
        on_b = [x for x in b_batches(b.client()) if (x["metadata"] or {}).get("aistats_batch_id") == batch["id"]]
        assert len(on_b) == 2
        a = Gateway(tmp_path / "a", config=a_config(b.base_url))
        api = a.client()
        deadline = time.monotonic() + 15
        while not all(n["id"] for n in api.get(f"/batches/{batch['id']}").json()["native_batches"] or [{"id": None}]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        b.stop(signal.SIGKILL)  # B dies while A polls it
        time.sleep(1.0)
        assert api.get(f"/batches/{batch['id']}").json()["status"] == "in_progress"
        b = Gateway(tmp_path / "b", api_key=B_KEY, config=config, port=b_port)
        done = wait_for_batch(api, batch["id"], timeout=40)
        assert done["status"] == "completed", done
        assert done["request_counts"].items() >= {"total": 17, "completed": 17, "failed": 0}.items()
        on_b_after = [x for x in b_batches(b.client()) if (x["metadata"] or {}).get("aistats_batch_id") == batch["id"]]
        assert sorted(x["id"] for x in on_b_after) == sorted(x["id"] for x in on_b)  # never re-created
        assert sorted(n["id"] for n in done["native_batches"]) == sorted(x["id"] for x in on_b)
        out = lines_of(api, done["output_file_id"])
        assert [x["custom_id"] for x in out] == [r["custom_id"] for r in rows]
    finally:
        a.stop()
        b.stop()
