"""The request log (`view=attempts`): every upstream attempt recorded, findable from an output line's request_id,
filterable; batches filterable by session_id."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Gateway, Upstream, jsonl, wait_for_batch


def test_every_attempt_is_logged(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log")
    config = "[executor]\nbackoff_base_seconds = 0.05\nbackoff_max_seconds = 0.1\n"
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"}, config=config)
    try:
        api = gw.client()
        rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}],
                          "x_fault": {"key": f"r{i}", "plan": [500] if i < 3 else ([400] if i == 3 else [])}}}
                for i in range(10)]
        file_id = api.post("/files", files={"file": ("r.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "session_id": "sess-log"}).json()
        done = wait_for_batch(api, batch["id"])
        log = api.get(f"/batches/{batch['id']}/requests", params={"limit": 100, "view": "attempts"}).json()
        assert len(log["data"]) == 13 and not log["has_more"]  # 10 lines + 3 retried after a 500
        assert {e["session_id"] for e in log["data"]} == {"sess-log"}
        assert sorted(e["status_code"] for e in log["data"]).count(500) == 3
        errors = api.get(f"/batches/{batch['id']}/requests",
                         params={"status": "error", "view": "attempts"}).json()["data"]
        assert sorted(e["status_code"] for e in errors) == [400, 500, 500, 500]
        assert [e["custom_id"] for e in api.get(f"/batches/{batch['id']}/requests",
                                                 params={"status": "400", "view": "attempts"}).json()["data"]] == ["r3"]
        page = api.get(f"/batches/{batch['id']}/requests", params={"limit": 5, "offset": 10, "view": "attempts"}).json()
        assert len(page["data"]) == 3
        out = [json.loads(x) for x in api.get(f"/files/{done['output_file_id']}/content").text.splitlines()]
        gen = api.get(f"/generations/{out[0]['response']['request_id']}").json()
        assert gen["custom_id"] == out[0]["custom_id"] and gen["status_code"] == 200
        assert gen["usage"]["input_tokens"] == out[0]["response"]["body"]["usage"]["prompt_tokens"]
        assert gen["provider"] == "openai" and gen["latency_ms"] >= 0
        other = gw.client(gw.new_key("log-other"))
        assert other.get(f"/generations/{gen['id']}").status_code == 404
        assert other.get(f"/batches/{batch['id']}/requests").status_code == 404
        assert api.get("/batches", params={"session_id": "sess-log"}).json()["data"][0]["id"] == batch["id"]
        assert api.get("/batches", params={"session_id": "nope"}).json()["data"] == []
        assert api.get(f"/batches/{batch['id']}/requests", params={"status": "weird"}).status_code == 400
    finally:
        gw.stop()
        upstream.stop()
