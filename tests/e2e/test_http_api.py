"""Plain HTTP against the running gateway: uploads, validation rules, errors, isolation, limits."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, chat_line, jsonl, wait_for_batch


@pytest.fixture(scope="module")
def api(gateway: Gateway) -> httpx.Client:
    return gateway.client()


def upload(api: httpx.Client, data: bytes, name: str = "in.jsonl") -> str:
    resp = api.post("/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": "batch"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("endpoint", "/v1/chat/completions")
    resp = api.post("/batches", json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def run_file(api: httpx.Client, data: bytes) -> dict[str, Any]:
    batch = create(api, input_file_id=upload(api, data))
    return wait_for_batch(api, batch["id"])


def test_batch_object_carries_every_contract_field(api: httpx.Client) -> None:
    batch = create(api, input_file_id=upload(api, jsonl([chat_line("a", "hi")])), session_id="agent-run-42",
                   metadata={"k": "v"}, webhook={"url": "https://example.com/hook", "secret": "s3cret"})
    for field in ("id", "object", "endpoint", "status", "errors", "input_file_id", "output_file_id", "error_file_id",
                  "completion_window", "created_at", "in_progress_at", "expires_at", "finalizing_at",
                  "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts",
                  "metadata", "usage", "model", "request_id", "provider", "session_id", "webhook", "progress",
                  "lifecycle_status", "polling_url", "cancel_url", "websocket_url", "pricing_lines", "billing"):
        assert field in batch, field
    assert batch["id"].startswith("batch_") and batch["request_id"].startswith("G-")
    assert batch["expires_at"] - batch["created_at"] == 86400
    assert batch["session_id"] == "agent-run-42"
    assert batch["webhook"]["has_secret"] is True and "secret" not in batch["webhook"]
    assert "s3cret" not in json.dumps(batch)
    assert batch["polling_url"].endswith(f"/v1/batches/{batch['id']}")
    assert batch["websocket_url"] == batch["polling_url"].replace("http://", "ws://").replace(
        "/v1/batches/", "/v1/async/batch/") + "/ws"
    done = wait_for_batch(api, batch["id"])
    assert done["lifecycle_status"] == "completed" and done["cancel_url"] is None
    assert {(p["model"], p["dimension"], p["line_nanos"], p["pricing_plan"]) for p in done["pricing_lines"]} == {
        ("mock/echo", "input_text_tokens", 0, "standard"), ("mock/echo", "output_text_tokens", 0, "standard"),
        ("mock/echo", "requests", 0, "standard")}
    billing = done["billing"]
    assert {k: billing[k] for k in ("billed", "charged", "reason")} == {"billed": True, "charged": False,
                                                                         "reason": "zero_cost"}
    assert billing["cost_usd"] == "0.000000000" and billing["state"] == "settled"


def test_json_upload_with_text_and_data_url(api: httpx.Client) -> None:
    text = jsonl([chat_line("j1", "one")]).decode()
    as_text = api.post("/files", json={"purpose": "batch", "file": text})
    assert as_text.status_code == 200, as_text.text
    data_url = "data:application/jsonl;base64," + base64.b64encode(text.encode()).decode()
    as_url = api.post("/files", json={"purpose": "batch", "file": data_url})
    assert as_url.status_code == 200 and as_url.json()["bytes"] == len(text.encode())
    assert api.get(f"/files/{as_url.json()['id']}/content").content == text.encode()
    done = wait_for_batch(api, create(api, input_file_id=as_url.json()["id"])["id"])
    assert done["status"] == "completed"


def test_inline_requests_mixed_models_and_endpoint_spellings(api: httpx.Client) -> None:
    rows = [chat_line("e1", "hi"), chat_line("r1", "no", model="mock/reject")]
    done = wait_for_batch(api, create(api, endpoint="chat/completions", requests=rows)["id"])
    assert done["status"] == "completed" and (
        done["request_counts"].items() >= {"total": 2, "completed": 1, "failed": 1}.items())
    assert done["model"] is None  # mixed models
    errors = [json.loads(x) for x in api.get(f"/files/{done['error_file_id']}/content").text.splitlines()]
    assert errors[0]["custom_id"] == "r1" and errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["code"] == "mock_rejected"


@pytest.mark.parametrize(
    ("lines", "code", "line", "param"),
    [
        ([b'{"custom_id": "a"', None], "invalid_json_line", 1, None),
        ([chat_line("a", "x"), chat_line("a", "y")], "duplicate_custom_id", 2, "custom_id"),
        ([chat_line("a", "x"), {**chat_line("b", "x"), "url": "/v1/embeddings"}], "url_mismatch", 2, "url"),
        ([{**chat_line("a", "x"), "method": "GET"}], "invalid_method", 1, "method"),
        ([chat_line("a", "x"), chat_line("b", "x", stream=True)], "invalid_value", 2, "body.stream"),
        ([{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}],
         "missing_required_parameter", 1, "body.model"),
        ([chat_line("a", "x", model="no-such-model")], "model_not_found", 1, "body.model"),
        ([], "empty_file", None, None),
    ],
    ids=["bad-json", "duplicate", "wrong-url", "wrong-method", "stream", "no-model", "unroutable", "empty"],
)
def test_each_validation_rule_fails_the_batch_with_code_and_line(
    api: httpx.Client, lines: list[Any], code: str, line: int | None, param: str | None
) -> None:
    raw = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines if x is not None)
    done = run_file(api, raw)
    assert done["status"] == "failed" and done["failed_at"]
    errors = done["errors"]["data"]
    assert errors[0]["code"] == code and errors[0]["line"] == line and errors[0]["param"] == param
    assert errors[0]["message"]
    assert done["request_counts"]["total"] == 0 and done["output_file_id"] is None


def test_over_the_line_limit(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "data", config="[limits]\nmax_batch_lines = 5\nmax_file_bytes = 2000\n")
    try:
        api = gw.client()
        done = run_file(api, jsonl([chat_line(str(i), "x") for i in range(6)]))
        assert done["status"] == "failed"
        assert done["errors"]["data"][0]["code"] == "too_many_tasks" and done["errors"]["data"][0]["line"] == 6
        big = api.post("/files", files={"file": ("big.jsonl", b"x" * 5000)}, data={"purpose": "batch"})
        assert big.status_code == 413 and big.json()["error"]["type"] == "payload_too_large"
        assert "2,000" in big.json()["error"]["message"]
        # the streamed cut-off (no Content-Length) is enforced too
        chunked = api.post("/files", json={"purpose": "batch", "file": "y" * 5000})
        assert chunked.status_code == 413
        assert api.get("/files").json()["data"] == [
            f for f in api.get("/files").json()["data"] if f["filename"] != "big.jsonl"]
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"endpoint": "/v1/chat/completions"}, 400, "input_file_id"),
        ({"input_file_id": "file-x"}, 400, "endpoint"),
        ({"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "9d"}, 400,
         "completion_window"),
        ({"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "metadata": {"a": 1}}, 400, "metadata.a"),
        ({"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "webhook": {"url": "ftp://x"}}, 400,
         "webhook.url"),
        ({"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "bogus": 1}, 400, "bogus"),
        ({"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}, 404, "input_file_id"),
    ],
)
def test_bad_create_bodies_get_clear_errors(api: httpx.Client, body: dict[str, Any], status: int,
                                            param: str) -> None:
    resp = api.post("/batches", json=body)
    assert resp.status_code == status
    payload = resp.json()
    assert payload["error"]["param"] == param and payload["error"]["message"]
    assert payload["status_code"] == status and payload["request_id"].startswith("G-")
    assert resp.headers["x-request-id"] == payload["request_id"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/batches", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ("POST", "/batches", {"content": b"[1,2]", "headers": {"content-type": "application/json"}}, 400),
        ("POST", "/files", {"content": b"x", "headers": {"content-type": "text/plain"}}, 400),
        ("POST", "/files", {"json": {"purpose": "nope", "file": "x"}}, 400),
        ("POST", "/files", {"json": {"purpose": "batch"}}, 400),
        ("POST", "/files", {"json": {"purpose": "batch", "file": "data:x;base64,@@@"}}, 400),
        ("POST", "/files",
         {"content": b"--zz\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400),
        ("GET", "/batches?limit=0", {}, 400),
        ("GET", "/batches?status=bogus", {}, 400),
        ("GET", "/nope", {}, 404),
        ("DELETE", "/batches", {}, 405),
    ],
)
def test_bad_input_never_answers_500(api: httpx.Client, method: str, path: str, kwargs: dict[str, Any],
                                     status: int) -> None:
    resp = api.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["message"]


def test_auth_is_required(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.base_url}/batches").status_code == 401
    resp = httpx.get(f"{gateway.base_url}/batches", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{gateway.base_url}/health").json()["status"] == "ok"


def test_models_lists_the_mock_models(api: httpx.Client) -> None:
    ids = [m["id"] for m in api.get("/models").json()["data"]]
    assert {"mock/echo", "mock/slow", "mock/reject"} <= set(ids)


def test_another_workspace_sees_nothing(gateway: Gateway, api: httpx.Client) -> None:
    other = gateway.client(gateway.new_key("team-b"))
    file_id = upload(api, jsonl([chat_line("a", "x")]))
    done = wait_for_batch(api, create(api, input_file_id=file_id)["id"])
    checks = [
        other.get(f"/files/{file_id}"), other.get(f"/files/{file_id}/content"), other.delete(f"/files/{file_id}"),
        other.get(f"/files/{done['output_file_id']}/content"), other.get(f"/batches/{done['id']}"),
        other.post(f"/batches/{done['id']}/cancel"),
        other.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}),
    ]
    missing = [other.get("/files/file-doesnotexist"), other.get("/batches/batch_doesnotexist")]
    assert [r.status_code for r in checks] == [404] * len(checks)
    # a foreign object is indistinguishable from a missing one (same code; only the echoed id differs)
    assert checks[0].json()["error"]["code"] == missing[0].json()["error"]["code"]
    assert checks[4].json()["error"]["code"] == missing[1].json()["error"]["code"] == "batch_not_found_or_not_owned"
    assert done["id"] not in [b["id"] for b in other.get("/batches").json()["data"]]
    assert file_id not in [f["id"] for f in other.get("/files").json()["data"]]
    assert api.get(f"/files/{file_id}").status_code == 200  # still there for its owner


def test_cancel_a_finished_batch_is_a_conflict(api: httpx.Client) -> None:
    done = run_file(api, jsonl([chat_line("a", "x")]))
    resp = api.post(f"/batches/{done['id']}/cancel")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "batch_not_cancellable"
