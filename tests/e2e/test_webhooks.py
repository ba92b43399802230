"""Signed webhook deliveries to a real receiver process: events, progress buckets, retries across a
receiver outage and a gateway restart, permanent failure, the delivery state on the batch object, local
targets only when allowed (and their answers never shown), and fair delivery slots across workspaces."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aistats_gateway.webhooks.deliverer import LOCAL_FAILURE
from aistats_gateway.webhooks.signer import verify
from tests.harness import Gateway, Receiver, chat_line, free_port, wait_for_batch

SECRET = "whsec_e2e"
FAST = """
[webhooks]
allow_local = true
retry_schedule_seconds = [0.3, 0.5, 1.0, 1.0, 1.0, 1.0]
poll_interval_seconds = 0.1
restart_spread_seconds = 0.5
timeout_seconds = 2
[executor]
concurrency = 4
[mock]
slow_latency_ms = 20
"""


def wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        time.sleep(0.1)


def test_signed_events_and_progress_buckets(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "rx.log", secret=SECRET)
    gw = Gateway(tmp_path / "data", config=FAST)
    try:
        api = gw.client()
        rows = [chat_line(f"p{i}", "x", model="mock/slow") for i in range(400)]
        hook = {"url": receiver.url, "secret": SECRET,
                "events": ["batch.created", "job.progress", "batch.completed"]}
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows,
                                           "webhook": hook}).json()
        done = wait_for_batch(api, batch["id"])
        got = wait_until(lambda: [d for d in receiver.received() if '"batch.completed"' in d["body"]] and
                         receiver.received())
        bodies = [json.loads(d["body"]) for d in got]
        types = [b["type"] for b in bodies]
        assert types.count("batch.created") == 1 and types.count("batch.completed") == 1
        keys = [b["delivery"]["key"] for b in bodies if b["type"] == "batch.progress"]
        assert len(keys) == len(set(keys)) >= 3, keys  # each bucket once
        buckets = sorted(int(k.split(":")[1]) for k in keys)
        assert all(5 <= b <= 95 for b in buckets)
        for delivery, body in zip(got, bodies, strict=True):
            headers = delivery["headers"]
            assert delivery["verified"] is True
            for prefix in ("x-ai-stats-", "x-phaseo-"):
                assert headers[prefix + "event-id"] == body["id"] and headers[prefix + "event-type"] == body["type"]
                assert headers[prefix + "delivery-key"] == body["delivery"]["key"]
                assert headers[prefix + "attempt"] == "1" and headers[prefix + "max-attempts"] == "7"
                assert verify(SECRET, int(headers[prefix + "timestamp"]), delivery["body"].encode(),
                              headers[prefix + "signature"], now=time.time())
            assert body["id"].startswith("evt_") and body["data"]["id"] == batch["id"]
            assert "secret" not in body["data"]["webhook"] and SECRET not in delivery["body"]
        completed = next(b for b in bodies if b["type"] == "batch.completed")
        assert completed["data"]["status"] == "completed" and completed["data"]["progress"] == 100
        state = wait_until(lambda: (s := api.get(f"/batches/{batch['id']}").json()["webhook"])["delivery"][
            "delivered_events"] == len(bodies) and s)
        assert state["delivery"]["last_attempt_status"] == "delivered" and state["has_secret"] is True
        assert len(state["attempts"]) == min(10, len(bodies))
        # the receiver answered "ok", but a local service's answers are never shown to the workspace
        assert all(a["response_body_preview"] is None and a["response_status"] is None for a in state["attempts"])
        assert state["delivery"]["last_response_status"] is None
        assert done["status"] == "completed"
    finally:
        gw.stop()
        receiver.stop()


def test_receiver_outage_and_gateway_restart_lose_nothing(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/batch"
    gw = Gateway(tmp_path / "data", config=FAST)
    api = gw.client()
    hook = {"url": url, "secret": SECRET, "events": ["batch.created", "batch.completed"]}
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "webhook": hook,
                                       "requests": [chat_line("a", "x"), chat_line("b", "y")]}).json()
    wait_for_batch(api, batch["id"])
    failing = wait_until(lambda: (s := api.get(f"/batches/{batch['id']}").json()["webhook"])["delivery"][
        "total_attempts"] >= 2 and s)
    assert failing["delivery"]["delivered_events"] == 0
    assert failing["attempts"][0]["status"] == "scheduled_retry" and failing["attempts"][0]["error_message"]
    gw.stop()  # the gateway goes down with events still pending
    receiver = Receiver(tmp_path / "rx.log", port=port, secret=SECRET)
    gw = Gateway(tmp_path / "data", config=FAST)
    try:
        api = gw.client()
        state = wait_until(lambda: (s := api.get(f"/batches/{batch['id']}").json()["webhook"])["delivery"][
            "delivered_events"] == 2 and s)
        received = receiver.received()
        unique = {json.loads(d["body"])["id"]: json.loads(d["body"])["type"] for d in received}
        assert sorted(unique.values()) == ["batch.completed", "batch.created"]
        assert all(d["verified"] for d in received)
        assert all(int(d["headers"]["x-ai-stats-attempt"]) >= 2 for d in received)
        assert state["delivery"]["pending_events"] == 0
    finally:
        gw.stop()
        receiver.stop()


def test_permanent_failure_and_no_redirects(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "rx.log", status=302)
    config = FAST.replace("[0.3, 0.5, 1.0, 1.0, 1.0, 1.0]", "[0.2, 0.2]")
    gw = Gateway(tmp_path / "data", config=config)
    try:
        api = gw.client()
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("a", "x")],
                                           "webhook": {"url": receiver.url}}).json()
        wait_for_batch(api, batch["id"])
        state = wait_until(lambda: (s := api.get(f"/batches/{batch['id']}").json()["webhook"])["delivery"][
            "failed_events"] == 1 and s)
        assert state["delivery"]["total_attempts"] == 3 and state["delivery"]["delivered_events"] == 0
        assert [a["status"] for a in state["attempts"]] == ["failed_permanently", "scheduled_retry",
                                                            "scheduled_retry"]
        # a local target's status is not shown (the receiver answered 302): one message for every failure
        assert state["attempts"][0]["response_status"] is None
        assert state["attempts"][0]["error_message"] == LOCAL_FAILURE
        assert len(receiver.received()) == 3  # the redirect target was never followed
        assert "x-ai-stats-signature" not in receiver.received()[0]["headers"]  # no secret, no signature
    finally:
        gw.stop()
        receiver.stop()


def test_local_webhooks_refused_unless_the_setting_allows_them(tmp_path: Path) -> None:
    """Off by default even though the gateway binds to loopback; Unicode spellings of loopback are the same
    hosts (IDNA/NFKC) and refused too, with a 400 naming webhook.url and why."""
    urls = ["http://127.0.0.1:9/h", "https://127.0.0.1:9/h", "http://localhost:9/h", "https://[::1]:9/h",
            "https://１２７.０.０.１/h", "https://127。0。0。1/h", "https://ⓛocalhost/h", "https://ＬＯＣＡＬＨＯＳＴ./h"]
    for config in ("", "[webhooks]\nallow_local = false\n"):
        gw = Gateway(tmp_path / f"data{len(config)}", config=config)
        try:
            api = gw.client()
            for url in urls:
                resp = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                                  "requests": [chat_line("a", "x")], "webhook": {"url": url}})
                error = resp.json()["error"]
                assert resp.status_code == 400 and error["param"] == "webhook.url", (url, resp.text)
                assert "loopback" in error["message"] or "local" in error["message"], (url, error)
        finally:
            gw.stop()


def test_a_black_holed_target_does_not_delay_another_workspaces_webhooks(tmp_path: Path) -> None:
    """Workspace A points 40 batches at a receiver that accepts and never answers; workspace B's
    batch.completed still arrives at once: A's target gets at most its share of the delivery slots."""
    hole = Receiver(tmp_path / "hole.log", hang=True)
    ok = Receiver(tmp_path / "ok.log")
    config = "[webhooks]\nallow_local = true\ntimeout_seconds = 20\npoll_interval_seconds = 0.2\n"
    gw = Gateway(tmp_path / "data", config=config)
    try:
        a, b = gw.client(gw.new_key("ws-a")), gw.client(gw.new_key("ws-b"))
        batches = [a.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("a", "x")],
                                            "webhook": {"url": hole.url}}).json()["id"] for _ in range(40)]
        for batch_id in batches:
            wait_for_batch(a, batch_id)
        wait_until(lambda: hole.received())  # A's deliveries are hanging in the black hole
        batch = b.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("b", "y")],
                                         "webhook": {"url": ok.url}}).json()
        wait_for_batch(b, batch["id"])
        got = wait_until(lambda: [d for d in ok.received() if '"batch.completed"' in d["body"]], timeout=15)
        assert json.loads(got[0]["body"])["data"]["id"] == batch["id"]
        assert len(hole.received()) == 2  # per target: 2 in flight, the rest wait (or rest) meanwhile
    finally:
        hole.stop()  # drops the hanging connections, so the gateway stops at once
        ok.stop()
        gw.stop()
