"""GET /v1/batches/{id}/results: every settled line so far, while the batch runs, with a resume cursor
and follow mode; the union equals the output and error files."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Gateway, chat_line, wait_for_batch


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("results") / "data",
                config="[executor]\nconcurrency = 4\n[mock]\nslow_latency_ms = 100\n")  # 300 slow lines: 7.5 s
    yield g
    g.stop()


def lines_of(resp: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(x) for x in resp.text.splitlines() if x]


def test_partial_results_resume_and_follow(gw: Gateway) -> None:
    api = gw.client()
    rows = [chat_line(f"r{i}", f"q{i}", model="mock/slow") for i in range(300)]
    rows[7] = chat_line("r7", "no", model="mock/reject")
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}).json()
    deadline = time.monotonic() + 20
    while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 40:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    early = api.get(f"/batches/{batch['id']}/results")
    assert early.status_code == 200 and early.headers["content-type"].startswith("application/x-ndjson")
    partial = lines_of(early)
    assert 40 <= len(partial) < 300  # results before the end
    resumed = api.get(f"/batches/{batch['id']}/results", params={"after": partial[-1]["custom_id"],
                                                                  "follow": "true"}, timeout=60)
    rest = lines_of(resumed)
    everything = partial + rest
    assert sorted(str(x["custom_id"]) for x in everything) == sorted(r["custom_id"] for r in rows)
    done = wait_for_batch(api, batch["id"])
    out = lines_of(api.get(f"/files/{done['output_file_id']}/content"))
    err = lines_of(api.get(f"/files/{done['error_file_id']}/content"))
    assert {json.dumps(x, sort_keys=True) for x in out + err} == {json.dumps(x, sort_keys=True) for x in everything}
    assert [x["custom_id"] for x in err] == ["r7"]


def test_cursor_errors_and_isolation(gw: Gateway) -> None:
    api = gw.client()
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                       "requests": [chat_line("a", "x"), chat_line("b", "y")]}).json()
    wait_for_batch(api, batch["id"])
    bad = api.get(f"/batches/{batch['id']}/results", params={"after": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
    assert [x["custom_id"] for x in lines_of(api.get(f"/batches/{batch['id']}/results", params={"after": "a"}))] \
        in (["b"], [])
    other = gw.client(gw.new_key("results-other"))
    assert other.get(f"/batches/{batch['id']}/results").status_code == 404


def test_cancelled_lines_appear_in_the_stream(gw: Gateway) -> None:
    api = gw.client()
    rows = [chat_line(f"c{i}", "x", model="mock/slow") for i in range(400)]
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}).json()
    api.post(f"/batches/{batch['id']}/cancel")
    followed = lines_of(api.get(f"/batches/{batch['id']}/results", params={"follow": "true"}, timeout=60))
    assert sorted(str(x["custom_id"]) for x in followed) == sorted(r["custom_id"] for r in rows)
    assert any(x["error"] and x["error"]["code"] == "batch_cancelled" for x in followed)  # type: ignore[index]
