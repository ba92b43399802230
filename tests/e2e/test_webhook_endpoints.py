"""Registered webhook endpoints (`/v1/webhook-endpoints`) over real HTTP against a gateway process and a real
receiver process: every operation, camelCase records, tenancy (another workspace's endpoint is a 404), bad
input named, the signed test delivery (a local target's answer never shown), the secret rotation's overlap
window (a receiver holding only the old secret or only the new one verifies every delivery inside it, only
the new one after it), and batches that name an endpoint: deliveries go to its URL, signed with its secrets,
`batch.status_changed` carries the change, and a disabled or deleted endpoint gets nothing more."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from aistats import verify_webhook
from aistats_gateway.webhooks.deliverer import LOCAL_FAILURE
from tests.harness import Gateway, Receiver, chat_line, wait_for_batch

SECRET = re.compile(r"^whsec_[A-Za-z0-9_-]{43}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
FAST = """
[webhooks]
allow_local = true
retry_schedule_seconds = [0.3, 0.5]
poll_interval_seconds = 0.1
timeout_seconds = 2
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


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    receiver = Receiver(tmp_path / "rx.log")
    gw = Gateway(tmp_path / "data", config=FAST)
    try:
        yield gw, receiver
    finally:
        gw.stop()
        receiver.stop()


def test_every_operation_camel_case_records_and_tenancy(stack: Any) -> None:
    gw, receiver = stack
    api = gw.client()
    created = api.post("/webhook-endpoints", json={"url": receiver.url, "events": ["Batch.Completed", "job.failed",
                                                                                   "canceled"]})
    assert created.status_code == 201, created.text
    ep = created.json()
    assert SECRET.match(ep["signing_secret"]) and ep["hasSecret"] is True
    assert ep["name"] == "Async webhooks" and ep["status"] == "active" and ep["url"] == receiver.url
    assert ep["events"] == ["batch.completed", "job.failed", "job.cancelled"]
    assert ISO.match(ep["createdAt"]) and ISO.match(ep["updatedAt"]) and ep["deletedAt"] is None
    assert ep["workspaceId"] and ep["createdBy"] is None
    eid = ep["id"]

    got = api.get(f"/webhook-endpoints/{eid}").json()
    assert "signing_secret" not in got and got["id"] == eid and got["events"] == ep["events"]
    default = api.post("/webhook-endpoints", json={"url": receiver.url, "name": "second"}).json()
    assert default["events"] == ["batch.completed", "batch.failed", "batch.cancelled", "batch.expired"]
    listed = api.get("/webhook-endpoints").json()
    assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [default["id"], eid]  # newest first
    assert all("signing_secret" not in e for e in listed["data"])
    assert [e["id"] for e in api.get("/webhook-endpoints", params={"limit": 1, "offset": 1}).json()["data"]] == [eid]

    patched = api.patch(f"/webhook-endpoints/{eid}", json={"name": "renamed", "status": "disabled",
                                                           "events": ["batch.expired"]})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["status"], patched.json()["events"]) == \
        ("renamed", "disabled", ["batch.expired"])

    rotated = api.post(f"/webhook-endpoints/{eid}/rotate-secret")
    assert rotated.status_code == 200 and SECRET.match(rotated.json()["signing_secret"])
    assert rotated.json()["signing_secret"] != ep["signing_secret"]
    assert ISO.match(rotated.json()["previousSecretExpiresAt"])

    # another workspace sees none of it: every operation on the endpoint is a 404
    other = gw.client(gw.new_key("hooks-other"))
    assert other.get("/webhook-endpoints").json()["data"] == []
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate-secret"), ("POST", "/test")):
        answer = other.request(method, f"/webhook-endpoints/{eid}{path}", json={"name": "x"} if method == "PATCH"
                               else None)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert api.get(f"/webhook-endpoints/{eid}").json()["name"] == "renamed"  # untouched

    deleted = api.delete(f"/webhook-endpoints/{eid}")
    assert deleted.json() == {"id": eid, "object": "webhook_endpoint", "deleted": True}
    assert api.get(f"/webhook-endpoints/{eid}").status_code == 404
    assert api.delete(f"/webhook-endpoints/{eid}").status_code == 404
    assert [e["id"] for e in api.get("/webhook-endpoints").json()["data"]] == [default["id"]]
    with_deleted = api.get("/webhook-endpoints", params={"include_deleted": "true"}).json()["data"]
    gone = next(e for e in with_deleted if e["id"] == eid)
    assert gone["status"] == "deleted" and ISO.match(gone["deletedAt"])


@pytest.mark.parametrize(("method", "path", "body", "param"), [
    ("POST", "", {}, "url"),
    ("POST", "", {"url": "ftp://example.com/x"}, "url"),
    ("POST", "", {"url": "https://10.0.0.1/x"}, "url"),
    ("POST", "", {"url": "https://hooks.example.com/x", "events": ["batch.exploded"]}, "events[0]"),
    ("POST", "", {"url": "https://hooks.example.com/x", "events": "batch.completed"}, "events"),
    ("POST", "", {"url": "https://hooks.example.com/x", "name": ""}, "name"),
    ("POST", "", {"url": "https://hooks.example.com/x", "name": "n" * 121}, "name"),
    ("POST", "", {"url": "https://hooks.example.com/x", "secret": "mine"}, "secret"),
    ("PATCH", "/{id}", {"status": "deleted"}, "status"),
    ("PATCH", "/{id}", {}, "body"),
    ("PATCH", "/{id}", {"url": "http://169.254.169.254/latest"}, "url"),
    ("POST", "/{id}/rotate-secret", {"overlap_seconds": -1}, "overlap_seconds"),
    ("POST", "/{id}/rotate-secret", {"overlap_seconds": 10**9}, "overlap_seconds"),
    ("POST", "/{id}/rotate-secret", {"overlap_seconds": "1h"}, "overlap_seconds"),
])
def test_bad_input_is_a_400_naming_the_field(tmp_path: Path, method: str, path: str, body: dict[str, Any],
                                             param: str) -> None:
    gw = Gateway(tmp_path / "data")
    try:
        api = gw.client()
        eid = api.post("/webhook-endpoints", json={"url": "https://hooks.example.com/x"}).json()["id"]
        answer = api.request(method, "/webhook-endpoints" + path.replace("{id}", eid), json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param, answer.text
        assert api.post("/webhook-endpoints", content=b"[1]").status_code == 400
    finally:
        gw.stop()


def test_test_delivery_is_signed_and_a_local_answer_is_not_shown(stack: Any, tmp_path: Path) -> None:
    gw, receiver = stack
    api = gw.client()
    ep = api.post("/webhook-endpoints", json={"url": receiver.url}).json()
    answer = api.post(f"/webhook-endpoints/{ep['id']}/test")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"] is True and result["event_id"].startswith("evt_") and result["error"] is None
    assert result["status_code"] is None and result["response_body_preview"] is None  # a local target
    [delivery] = receiver.received()
    body = json.loads(delivery["body"])
    assert body["id"] == result["event_id"] and body["type"] == "webhook_endpoint.test"
    assert delivery["headers"]["x-phaseo-event-id"] == result["event_id"]
    assert verify_webhook(ep["signing_secret"], delivery["body"], delivery["headers"])
    assert ep["signing_secret"] not in delivery["body"]

    # a local target that fails says only that it failed (no status, no body, no distinguishing error)
    down = api.post("/webhook-endpoints", json={"url": "http://127.0.0.1:9/nothing-listens"}).json()
    failed = api.post(f"/webhook-endpoints/{down['id']}/test").json()
    assert failed["ok"] is False and failed["error"] == LOCAL_FAILURE
    assert failed["status_code"] is None and failed["response_body_preview"] is None
    bad_status = Receiver(tmp_path / "rx500.log", status=500)
    try:
        ep500 = api.post("/webhook-endpoints", json={"url": bad_status.url}).json()
        refused = api.post(f"/webhook-endpoints/{ep500['id']}/test").json()
        assert refused == {**refused, "ok": False, "error": LOCAL_FAILURE, "status_code": None,
                           "response_body_preview": None}
    finally:
        bad_status.stop()
    # a host that does not resolve to a public address is refused before anything is sent
    nowhere = api.post("/webhook-endpoints", json={"url": "https://no-such-host.invalid/h"}).json()
    refused = api.post(f"/webhook-endpoints/{nowhere['id']}/test").json()
    assert refused["ok"] is False and refused["status_code"] is None and refused["error"]


def test_rotation_overlap_both_secrets_verify_inside_the_window_only_the_new_after(stack: Any) -> None:
    gw, receiver = stack
    api = gw.client()
    ep = api.post("/webhook-endpoints", json={"url": receiver.url}).json()
    old = ep["signing_secret"]
    new = api.post(f"/webhook-endpoints/{ep['id']}/rotate-secret", json={"overlap_seconds": 4}).json()
    assert new["previousSecretExpiresAt"] is not None
    inside = [api.post(f"/webhook-endpoints/{ep['id']}/test").json() for _ in range(3)]
    assert all(r["ok"] for r in inside)
    deliveries = receiver.received()
    assert len(deliveries) == 3
    for d in deliveries:  # a receiver that knows only the old secret, and one that knows only the new one
        assert verify_webhook(old, d["body"], d["headers"]) and verify_webhook(new["signing_secret"], d["body"],
                                                                                d["headers"])
        # the one signature the SDKs' own verifiers read is the current secret's
        phaseo = {k: v for k, v in d["headers"].items() if k != "x-phaseo-signatures" and not k.startswith("x-ai")}
        assert verify_webhook(new["signing_secret"], d["body"], phaseo)
    time.sleep(4.5)
    after = api.post(f"/webhook-endpoints/{ep['id']}/test").json()
    assert after["ok"]
    last = receiver.received()[-1]
    assert verify_webhook(new["signing_secret"], last["body"], last["headers"])
    assert not verify_webhook(old, last["body"], last["headers"])
    assert api.get(f"/webhook-endpoints/{ep['id']}").json()["previousSecretExpiresAt"] is not None
    # overlap 0: the old secret stops at once
    newest = api.post(f"/webhook-endpoints/{ep['id']}/rotate-secret", json={"overlap_seconds": 0}).json()
    assert newest["previousSecretExpiresAt"] is None
    assert api.post(f"/webhook-endpoints/{ep['id']}/test").json()["ok"]
    d = receiver.received()[-1]
    assert verify_webhook(newest["signing_secret"], d["body"], d["headers"])
    assert not verify_webhook(new["signing_secret"], d["body"], d["headers"])


def test_a_batch_naming_an_endpoint(stack: Any) -> None:
    gw, receiver = stack
    api = gw.client()
    ep = api.post("/webhook-endpoints", json={"url": receiver.url, "events": ["batch.completed",
                                                                              "batch.status_changed"]}).json()
    old = ep["signing_secret"]
    new = api.post(f"/webhook-endpoints/{ep['id']}/rotate-secret").json()["signing_secret"]
    created = api.post("/batches", json={"endpoint": "/v1/chat/completions", "webhook_endpoint_id": ep["id"],
                                         "requests": [chat_line("a", "x"), chat_line("b", "y")]})
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["webhook"]["endpoint_id"] == ep["id"] and batch["webhook"]["url"] is None
    assert batch["webhook"]["has_secret"] is True
    wait_for_batch(api, batch["id"])
    got = wait_until(lambda: (r := receiver.received()) and any('"batch.completed"' in d["body"] for d in r) and r)
    bodies = [json.loads(d["body"]) for d in got]
    changes = [b["status_change"] for b in bodies if b["type"] == "batch.status_changed"]
    assert {"previous_status": "validating", "status": "in_progress"} in changes
    assert changes[-1]["status"] == "completed" or {"previous_status": "finalizing", "status": "completed"} in changes
    assert all(b["type"] in ("batch.completed", "batch.status_changed") for b in bodies)
    for d in got:
        assert verify_webhook(old, d["body"], d["headers"]) and verify_webhook(new, d["body"], d["headers"])

    # the `webhook` object form, with the batch's own events; a disabled endpoint gets nothing more
    receiver_count = len(receiver.received())
    api.patch(f"/webhook-endpoints/{ep['id']}", json={"status": "disabled"})
    refused = api.post("/batches", json={"endpoint": "/v1/chat/completions", "webhook": {"endpoint_id": ep["id"]},
                                         "requests": [chat_line("c", "z")]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "webhook_endpoint_inactive"
    api.patch(f"/webhook-endpoints/{ep['id']}", json={"status": "active"})
    second = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                        "webhook": {"endpoint_id": ep["id"], "events": ["job.completed"]},
                                        "requests": [chat_line("c", "z", model="mock/slow")]}).json()
    api.delete(f"/webhook-endpoints/{ep['id']}")
    wait_for_batch(api, second["id"])
    time.sleep(1.0)
    assert len(receiver.received()) == receiver_count  # deleted before its batch ended: nothing sent

    # another workspace's endpoint cannot be named
    other_ep = gw.client(gw.new_key("hooks-batch-other")).post("/webhook-endpoints", json={"url": receiver.url}).json()
    foreign = api.post("/batches", json={"endpoint": "/v1/chat/completions", "webhook_endpoint_id": other_ep["id"],
                                         "requests": [chat_line("d", "w")]})
    assert foreign.status_code == 404 and foreign.json()["error"]["param"] == "webhook_endpoint_id"


def test_a_queued_retry_stops_once_its_endpoint_is_deleted(tmp_path: Path) -> None:
    """The deliverer reads the endpoint at every attempt: a retry due after the endpoint was deleted is not sent,
    and the event fails for good saying why."""
    receiver = Receiver(tmp_path / "rx.log", status=500)
    gw = Gateway(tmp_path / "data", config=FAST.replace("[0.3, 0.5]", "[3.0, 3.0]"))
    try:
        api = gw.client()
        ep = api.post("/webhook-endpoints", json={"url": receiver.url}).json()
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "webhook_endpoint_id": ep["id"],
                                           "requests": [chat_line("a", "x")]}).json()
        wait_for_batch(api, batch["id"])
        wait_until(lambda: api.get(f"/batches/{batch['id']}").json()["webhook"]["delivery"]["total_attempts"] == 1)
        assert api.delete(f"/webhook-endpoints/{ep['id']}").status_code == 200
        state = wait_until(lambda: (s := api.get(f"/batches/{batch['id']}").json()["webhook"])["delivery"][
            "failed_events"] == 1 and s)
        assert state["delivery"]["total_attempts"] == 2
        assert state["attempts"][0]["status"] == "failed_permanently"
        assert "is deleted" in state["attempts"][0]["error_message"]
        assert len(receiver.received()) == 1  # only the first attempt reached the receiver
    finally:
        gw.stop()
        receiver.stop()
