"""Native execution against Anthropic Message Batches, for real: the gateway runs its batches as Message
Batches on the fake Anthropic process (testing/anthropic_batches.py, its state kept in a file so a killed fake
comes back with its batches).

Covers completion with lines translated both ways, custom_ids Anthropic cannot take (sent as `<job id>-<n>`
and mapped back), lines failing before (translation) and at the provider (errored), batch-plan pricing, an
ambiguous create (the fake stores it but answers 500) found again by listing instead of sent twice, a lost
create next to another gateway's batch just like it (only the batch its results prove is taken), cancel,
expiry on the provider's side, the fake killed while the gateway polls, and the gateway killed while the
provider batch runs (reattached by native_batch_id)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistats_gateway.clock import FakeClock
from tests.harness import Gateway, InProcessGateway, Proc, free_port, wait_for_batch

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test"
BATCH_INPUT, BATCH_OUTPUT = 1500, 7500  # claude-sonnet-4-5 batch plan, nanos per token (prices.toml by hand)


class FakeAnthropic(Proc):
    def __init__(self, root: Path, port: int, *, create_faults: int = 0) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        super().__init__([sys.executable, "-m", "aistats_gateway.testing.anthropic_upstream", "--port", str(port),
                          "--api-key", KEY, "--batch-request-ms", "100", "--state-file", str(root / "fake.json"),
                          "--create-faults", str(create_faults)], dict(os.environ), root / "fake.log",
                         f"{self.url}/_stats")

    def batches(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_batches").json())


def config(fake_url: str) -> str:
    return f"""
[executor]
expiry_check_seconds = 0.2

[native]
poll_interval_seconds = 0.2
reconcile_grace_seconds = 1
refresh_on_get_seconds = 0

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{fake_url}"
api_key = "{KEY}"
models = ["claude-*"]
batch_api = true
"""


@dataclass
class Stack:
    root: Path
    gw: Gateway
    fake: FakeAnthropic


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("native_anthropic")
    fake = FakeAnthropic(root, free_port(), create_faults=1)  # the first create is ambiguous
    s = Stack(root, Gateway(root / "data", config=config(fake.url)), fake)
    yield s
    s.gw.stop()
    s.fake.stop()


def chat(cid: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 50, **extra}}


def create(api: httpx.Client, rows: list[dict[str, Any]], endpoint: str = "/v1/chat/completions",
           **extra: Any) -> dict[str, Any]:
    answer = api.post("/batches", json={"endpoint": endpoint, "requests": rows, **extra})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def files(api: httpx.Client, done: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    def read(file_id: str | None) -> dict[str, Any]:
        lines = [json.loads(x) for x in api.get(f"/files/{file_id}/content").text.splitlines()] if file_id else []
        return {x["custom_id"]: x for x in lines}
    return read(done["output_file_id"]), read(done["error_file_id"])


def wait_native(api: httpx.Client, batch_id: str, fake: FakeAnthropic, done_at_least: int) -> str:
    deadline = time.monotonic() + 15
    while True:
        native_id = api.get(f"/batches/{batch_id}").json()["native_batch_id"]
        if native_id:
            counts = next(b for b in fake.batches() if b["id"] == native_id)["request_counts"]
            if counts["succeeded"] + counts["errored"] >= done_at_least:
                return str(native_id)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_completion_with_translation_id_mapping_failures_and_an_ambiguous_create(stack: Stack) -> None:
    api = stack.gw.client()
    rows = [chat("plain", "hello claude"), chat("not/an id ü", "mapped back"), chat("x" * 80, "long id"),
            chat("too-hot", "no", temperature=1.7),  # fails translation: never sent
            {**chat("assistant-first", "x"), "body": {"model": MODEL, "max_tokens": 50,  # fails at Anthropic
                                                      "messages": [{"role": "assistant", "content": "I speak"}]}}]
    batch = create(api, rows)
    done = wait_for_batch(api, batch["id"], timeout=30)
    assert done["status"] == "completed" and done["execution"] == "native", done
    assert done["request_counts"].items() >= {"total": 5, "completed": 3, "failed": 2}.items()
    # the first create was answered 500 but stored: found again by listing, never sent twice
    assert [b["id"] for b in stack.fake.batches()] == [done["native_batch_id"]]
    assert stack.fake.batches()[0]["deleted"]  # deleted at Anthropic once its results were stored here
    assert done["native_batches"][0]["request_counts"].items() >= {"total": 4, "completed": 3, "failed": 1}.items()
    out, err = files(api, done)
    assert set(out) == {"plain", "not/an id ü", "x" * 80}  # the user's own ids, restored from <job id>-<n>
    body = out["not/an id ü"]["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "echo: mapped back"
    assert err["too-hot"]["response"]["status_code"] == 400
    assert err["too-hot"]["response"]["body"]["error"]["param"] == "temperature"
    upstream = err["assistant-first"]["response"]
    assert upstream["status_code"] == 400 and upstream["body"]["error"]["type"] == "invalid_request_error"
    assert "alternate" in upstream["body"]["error"]["message"]
    lines = {p["dimension"]: p for p in done["pricing_lines"]}
    assert {p["pricing_plan"] for p in done["pricing_lines"]} == {"batch"}
    prompt = sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in out.values())
    completion = sum(x["response"]["body"]["usage"]["completion_tokens"] for x in out.values())
    assert lines["input_text_tokens"]["quantity"] == prompt and lines["output_text_tokens"]["quantity"] == completion
    assert done["billing"]["cost_nanos"] == prompt * BATCH_INPUT + completion * BATCH_OUTPUT


def test_messages_lines_pass_through(stack: Stack) -> None:
    api = stack.gw.client()
    rows = [{"custom_id": "m1", "method": "POST", "url": "/v1/messages",
             "body": {"model": MODEL, "max_tokens": 30, "messages": [{"role": "user", "content": "raw"}]}},
            {"custom_id": "m2", "method": "POST", "url": "/v1/messages",
             "body": {"model": MODEL, "max_tokens": 30, "temperature": 1.5,
                      "messages": [{"role": "user", "content": "too hot"}]}}]
    done = wait_for_batch(api, create(api, rows, endpoint="/v1/messages")["id"], timeout=30)
    out, err = files(api, done)
    assert out["m1"]["response"]["body"]["type"] == "message"
    assert out["m1"]["response"]["body"]["content"] == [{"type": "text", "text": "echo: raw"}]
    assert err["m2"]["response"]["status_code"] == 400
    assert err["m2"]["response"]["body"]["error"]["type"] == "invalid_request_error"  # Anthropic's own error


def test_cancel_and_provider_expiry(stack: Stack) -> None:
    api = stack.gw.client()
    # 80 lines at 100 ms each: far more than the fake finishes before the cancel and the expiry reach it
    cancel_rows = [chat(f"c{i}", f"cancel {i}") for i in range(80)]
    expire_rows = [chat(f"e{i}", f"expire {i}") for i in range(80)]
    cancelled = create(api, cancel_rows)
    expiring = create(api, expire_rows)
    wait_native(api, cancelled["id"], stack.fake, 2)
    expiring_id = wait_native(api, expiring["id"], stack.fake, 2)
    assert api.post(f"/batches/{cancelled['id']}/cancel").json()["status"] == "cancelling"
    httpx.post(f"{stack.fake.url}/_batches/{expiring_id}/expire")
    for batch, rows, status, code in ((cancelled, cancel_rows, "cancelled", "batch_cancelled"),
                                      (expiring, expire_rows, "expired", "batch_expired")):
        done = wait_for_batch(api, batch["id"], timeout=30)
        assert done["status"] == status
        out, err = files(api, done)
        assert 2 <= len(out) < 80 and {x["error"]["code"] for x in err.values()} == {code}
        assert sorted([*out, *err]) == sorted(r["custom_id"] for r in rows)


def test_restarts_of_either_side_lose_nothing(stack: Stack) -> None:
    api = stack.gw.client()
    rows = [chat(f"r{i}", f"restart {i}") for i in range(40)]
    batch = create(api, rows)
    wait_native(api, batch["id"], stack.fake, 1)
    stack.fake.stop(signal.SIGKILL)  # the fake dies while the gateway polls it ...
    time.sleep(0.5)
    stack.gw.stop(signal.SIGKILL)  # ... and then the gateway dies too, while the Message Batch exists
    stack.gw = Gateway(stack.root / "data", config=config(stack.fake.url))
    api = stack.gw.client()
    time.sleep(0.5)
    assert api.get(f"/batches/{batch['id']}").json()["status"] == "in_progress"  # it cannot end without them
    stack.fake = FakeAnthropic(stack.root, stack.fake.port)  # same port, same state file
    done = wait_for_batch(api, batch["id"], timeout=30)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 40
    assert sum(1 for b in stack.fake.batches() if b["request_counts"]["succeeded"] == 40) == 1  # reattached
    out, _err = files(api, done)
    assert sorted(out) == sorted(r["custom_id"] for r in rows)


def test_our_own_window_running_out_cancels_the_provider_batch(stack: Stack) -> None:
    """Anthropic has no window parameter: when OUR completion_window ends first, the gateway cancels the
    Message Batch, keeps what it finished, and the rest is `batch_expired` (not `batch_cancelled`)."""
    clock = FakeClock(start=time.time())
    gw = InProcessGateway(stack.root / "clocked", clock, executor={"expiry_check_seconds": 0.05},
                          native={"poll_interval_seconds": 0.1, "refresh_on_get_seconds": 0},
                          providers=[{"name": "anthropic", "kind": "anthropic", "base_url": stack.fake.url,
                                      "api_key": KEY, "models": ["claude-*"], "batch_api": True}])
    try:
        api = gw.client()
        rows = [chat(f"w{i}", f"window {i}") for i in range(80)]
        batch = create(api, rows, execution="native", completion_window="1h")
        native_id = wait_native(api, batch["id"], stack.fake, 2)
        clock.advance(3601)
        done = wait_for_batch(api, batch["id"], timeout=30)
        assert done["status"] == "expired"
        out, err = files(api, done)
        assert 2 <= len(out) < 80 and {x["error"]["code"] for x in err.values()} == {"batch_expired"}
        assert sorted([*out, *err]) == sorted(r["custom_id"] for r in rows)
        fake_view = next(b for b in stack.fake.batches() if b["id"] == native_id)
        assert fake_view["cancel_initiated_at"] is not None and fake_view["request_counts"]["canceled"] == len(err)
    finally:
        gw.stop()


def test_a_lost_create_never_adopts_another_clients_batch(tmp_path: Path) -> None:
    """Issue 14 (2): two gateways share one Anthropic key, and Message Batches carry no metadata. B's batch of
    the same size exists when A's create is lost after Anthropic stored it (A dies right there). Restarted, A
    must take only the batch its results prove to be its own, never B's: each tenant gets its own answers,
    A deletes only its own batch at the provider, and nothing is sent twice."""
    fake = FakeAnthropic(tmp_path, free_port())
    keep = config(fake.url).replace("refresh_on_get_seconds = 0", "refresh_on_get_seconds = 0\n"
                                    "delete_provider_files = false")  # B's batch stays: A must not delete it
    b = Gateway(tmp_path / "b", config=keep)
    a = Gateway(tmp_path / "a", config=config(fake.url), env={"AISTATS_FAILPOINTS": "native_after_create"})
    try:
        def rows(who: str) -> list[dict[str, Any]]:  # the same custom_ids in both tenants' files; 30 lines
            return [chat(f"q{i}", f"{who} {i}") for i in range(30)]  # run 3 s: B's still runs as A looks
        b_api = b.client()
        b_batch = create(b_api, rows("from-b"))
        b_native = wait_native(b_api, b_batch["id"], fake, 0)  # B's Message Batch is there first
        a_batch = create(a.client(), rows("from-a"))
        deadline = time.monotonic() + 20
        while a.proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert a.proc.returncode == 86  # Anthropic stored A's batch; A never learnt its id
        a.stop()
        lost = [x["id"] for x in fake.batches() if x["id"] != b_native]
        assert len(lost) == 1
        a = Gateway(tmp_path / "a", config=config(fake.url))
        a_done = wait_for_batch(a.client(), a_batch["id"], timeout=40)
        b_done = wait_for_batch(b_api, b_batch["id"], timeout=40)
        for api, done, who in ((a.client(), a_done, "from-a"), (b_api, b_done, "from-b")):
            assert done["status"] == "completed", done
            assert done["request_counts"].items() >= {"total": 30, "completed": 30, "failed": 0}.items()
            out, _err = files(api, done)
            assert {cid: x["response"]["body"]["choices"][0]["message"]["content"] for cid, x in out.items()} == \
                {f"q{i}": f"echo: {who} {i}" for i in range(30)}
        assert a_done["native_batch_id"] == lost[0] and b_done["native_batch_id"] == b_native
        view = {x["id"]: x for x in fake.batches()}
        assert sorted(view) == sorted([b_native, lost[0]])  # A's create was never sent twice
        assert not view[b_native]["deleted"]  # A never deleted B's batch
        assert view[lost[0]]["deleted"]  # A's own, proven by its results, is deleted once collected
    finally:
        a.stop()
        b.stop()
        fake.stop()
