"""Recover (issue 17) end to end through HTTP, on SQLite and on PostgreSQL: re-running the lines that did not
succeed (`/retry`, chains), the merged results of a chain, the error summary, idempotent creates (also racing,
and through the official openai SDK)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import backends
from tests.harness import Gateway, chat_line, jsonl, wait_for_batch

CONFIG = "[executor]\nconcurrency = 2\n[mock]\nslow_latency_ms = 400\n"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env: dict[str, str] = {}
    url = None
    if request.param == "postgresql":
        if not backends.pg_available():
            pytest.skip(backends.PG_SKIP)
        url = backends.create_database()
        env["AISTATS_DATABASE_URL"] = url
    g = Gateway(tmp_path_factory.mktemp(f"recover-{request.param}") / "data", config=CONFIG, env=env)
    try:
        yield g
    finally:
        g.stop()
        if url is not None:
            backends.drop_database(url)


def upload(api: httpx.Client, data: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}, headers=headers)


def create(api: httpx.Client, file_id: str, key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                      "completion_window": "24h", **extra}, headers=headers)


def ndjson(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [json.loads(x) for x in resp.text.splitlines() if x]


def test_retry_reruns_only_the_failed_lines_and_chains(gw: Gateway) -> None:
    api = gw.client()
    rows = [chat_line(f"r{i}", f"question {i}", model="mock/reject" if i % 2 else "mock/echo") for i in range(8)]
    data = jsonl(rows)
    file_id = upload(api, data).json()["id"]
    root = create(api, file_id, metadata={"team": "a"}, session_id="s-1").json()
    done = wait_for_batch(api, root["id"])
    assert done["request_counts"].items() >= {"total": 8, "completed": 4, "failed": 4}.items()
    assert done["error_summary"] == [{"code": "mock_rejected", "status_code": 400, "count": 4, "example": {
        "custom_id": "r1", "message": "mock/reject rejects every request (use mock/echo for answers)."}}]
    assert done["retries"] == [] and done["parent_batch_id"] is None

    retry = api.post(f"/batches/{root['id']}/retry")
    assert retry.status_code == 200, retry.text
    first = retry.json()
    assert first["parent_batch_id"] == root["id"] and first["id"] != root["id"]
    assert (first["endpoint"], first["completion_window"], first["metadata"], first["session_id"]) == (
        "/v1/chat/completions", "24h", {"team": "a"}, "s-1")
    # its input holds exactly the failed lines, byte for byte as the original input has them
    original = data.splitlines(keepends=True)
    assert api.get(f"/files/{first['input_file_id']}/content").content == b"".join(original[1::2])
    first = wait_for_batch(api, first["id"])
    assert first["request_counts"]["total"] == 4
    # only those lines went upstream again (the request log of the retry)
    sent = api.get(f"/batches/{first['id']}/requests", params={"limit": 100}).json()["data"]
    assert sorted(r["custom_id"] for r in sent) == ["r1", "r3", "r5", "r7"]
    assert api.get(f"/batches/{root['id']}").json()["retries"] == [first["id"]]

    # a retry of a retry, through the singular alias, narrowed by code and custom_id
    second = gw.client().post(f"{gw.base_url.removesuffix('/v1')}/v1/batch/{first['id']}/retry",
                              json={"error_codes": ["mock_rejected"], "custom_ids": ["r3", "r7"]})
    assert second.status_code == 200, second.text
    second_id = second.json()["id"]
    assert second.json()["parent_batch_id"] == first["id"]
    wait_for_batch(api, second_id)
    assert api.get(f"/files/{second.json()['input_file_id']}/content").content == original[3] + original[7]

    # merged, from any batch of the chain: every custom_id of the root's input once, in input order
    for member in (root["id"], first["id"], second_id):
        merged = ndjson(api.get(f"/batches/{member}/results", params={"merged": "true"}))
        assert [m["custom_id"] for m in merged] == [f"r{i}" for i in range(8)]
        assert [m["response"]["status_code"] for m in merged] == [200, 400] * 4

    # refusals, each naming what was wrong
    nothing = api.post(f"/batches/{root['id']}/retry", json={"error_codes": ["server_error"]})
    assert nothing.status_code == 400 and nothing.json()["error"]["code"] == "nothing_to_retry"
    unknown = api.post(f"/batches/{root['id']}/retry", json={"custom_ids": ["r1", "zz"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_custom_id"
    bad = api.post(f"/batches/{root['id']}/retry", json={"statuses": ["succeeded"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "statuses"
    slow = create(api, upload(api, jsonl([chat_line("s0", "x", model="mock/slow")] * 1)).json()["id"]).json()
    running = api.post(f"/batches/{slow['id']}/retry")
    assert running.status_code == 409 and running.json()["error"]["code"] == "batch_not_terminal"
    wait_for_batch(api, slow["id"])


def test_merged_results_take_the_latest_success(gw: Gateway) -> None:
    """Lines cancelled in the root succeed in its retry: merged results show the retry's answers for them."""
    api = gw.client()
    rows = [chat_line(f"m{i}", f"q{i}", model="mock/slow") for i in range(12)]
    root = create(api, upload(api, jsonl(rows)).json()["id"]).json()
    wait_for_batch(api, root["id"], until=("in_progress",))
    api.post(f"/batches/{root['id']}/cancel")
    root = wait_for_batch(api, root["id"])
    assert root["status"] == "cancelled" and root["request_counts"]["failed"] > 0
    assert any(e["code"] == "batch_cancelled" for e in root["error_summary"])
    retry = api.post(f"/batches/{root['id']}/retry", json={"statuses": ["cancelled"]})
    assert retry.status_code == 200, retry.text
    assert wait_for_batch(api, retry.json()["id"])["status"] == "completed"
    merged = ndjson(api.get(f"/batches/{root['id']}/results", params={"merged": "true"}))
    assert [m["custom_id"] for m in merged] == [f"m{i}" for i in range(12)]
    assert all(m["response"] and m["response"]["status_code"] == 200 for m in merged)


def test_idempotent_creates(gw: Gateway) -> None:
    api = gw.client()
    data = jsonl([chat_line("i0", "hello")])
    key = f"file-{uuid.uuid4()}"
    first = upload(api, data, key)
    again = upload(api, data, key)
    assert again.json()["id"] == first.json()["id"] and again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    reused = upload(api, jsonl([chat_line("i1", "other")]), key)
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"

    file_id = first.json()["id"]
    key = f"batch-{uuid.uuid4()}"
    batch = create(api, file_id, key)
    replay = create(api, file_id, key)
    assert replay.status_code == 200 and replay.json()["id"] == batch.json()["id"]
    assert replay.headers.get("Idempotent-Replayed") == "true"
    other = create(api, file_id, key, metadata={"x": "y"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # keys are per workspace: another workspace's key of the same name is its own
    other_ws = gw.client(api_key=gw.new_key("ws-other"))
    mine = create(other_ws, upload(other_ws, data).json()["id"], key)
    assert mine.status_code == 200 and mine.json()["id"] != batch.json()["id"]
    wait_for_batch(api, batch.json()["id"])

    # the retry endpoint too
    key = f"retry-{uuid.uuid4()}"
    failing = create(api, upload(api, jsonl([chat_line("f0", "x", model="mock/reject")])).json()["id"]).json()
    wait_for_batch(api, failing["id"])
    r1 = api.post(f"/batches/{failing['id']}/retry", headers={"Idempotency-Key": key})
    r2 = api.post(f"/batches/{failing['id']}/retry", headers={"Idempotency-Key": key})
    assert r1.status_code == r2.status_code == 200 and r1.json()["id"] == r2.json()["id"]
    assert r2.headers.get("Idempotent-Replayed") == "true"
    bad = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                     "completion_window": "24h"}, headers={"Idempotency-Key": ""})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_twenty_racing_creates_with_one_key_make_one_batch(gw: Gateway) -> None:
    api = gw.client()
    file_id = upload(api, jsonl([chat_line("race", "hi")])).json()["id"]
    key = f"race-{uuid.uuid4()}"
    barrier = threading.Barrier(20)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with gw.client(timeout=60) as client:
            barrier.wait(30)
            resp = create(client, file_id, key)
        with lock:
            answers.append(resp)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert sum(1 for a in answers if a.headers.get("Idempotent-Replayed") == "true") == 19
    listed = api.get("/batches", params={"limit": 100}).json()["data"]
    assert sum(1 for b in listed if b["input_file_id"] == file_id) == 1
    wait_for_batch(api, ids.pop())


def test_openai_sdk_sends_the_key_it_is_given(gw: Gateway, tmp_path: Path) -> None:
    """The official SDK does not send Idempotency-Key by itself; given one (extra_headers), its creates replay."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key=gw.api_key, base_url=gw.base_url, max_retries=0)
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([chat_line("o0", "hi")]))
    key = str(uuid.uuid4())
    f1 = client.files.create(file=path.open("rb"), purpose="batch", extra_headers={"Idempotency-Key": key})
    f2 = client.files.create(file=path.open("rb"), purpose="batch", extra_headers={"Idempotency-Key": key})
    assert f1.id == f2.id
    key = str(uuid.uuid4())
    b1 = client.batches.create(input_file_id=f1.id, endpoint="/v1/chat/completions", completion_window="24h",
                               extra_headers={"Idempotency-Key": key})
    b2 = client.batches.create(input_file_id=f1.id, endpoint="/v1/chat/completions", completion_window="24h",
                               extra_headers={"Idempotency-Key": key})
    assert b1.id == b2.id
    deadline = time.monotonic() + 60
    while client.batches.retrieve(b1.id).status not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
