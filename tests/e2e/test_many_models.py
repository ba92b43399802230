"""Thousands of distinct model names through a provider with `models = ["*"]` (issue #14, item 8): every line is
served, the lanes they made are retired once idle, and `/metrics` stays bounded (it was 40 MB for 5,000 names),
behind a bearer token when one is configured."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.e2e.test_metrics_logs import sample
from tests.harness import Gateway, Upstream, chat_line, jsonl, wait_for_batch

MODELS = 2000
TOKEN = "metrics-token-0123456789"


def test_thousands_of_model_names_are_served_then_their_lanes_retire_and_metrics_stay_bounded(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log")
    config = ("[executor]\nlane_idle_seconds = 0.5\nexpiry_check_seconds = 0.2\n"
              f'[metrics]\ntoken = "{TOKEN}"\n')
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"}, config=config)
    try:
        api = gw.client(timeout=120)
        rows = [chat_line(f"q{i}", "hi", model=f"model-{i:05d}") for i in range(MODELS)]
        file_id = api.post("/files", files={"file": ("m.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
        created = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"})
        assert created.status_code == 200, created.text
        batch = wait_for_batch(api, created.json()["id"], timeout=600, every=1.0)  # a poll prices every model
        assert batch["status"] == "completed", batch
        assert batch["request_counts"].items() >= {"total": MODELS, "completed": MODELS, "failed": 0}.items()
        output = api.get(f"/files/{batch['output_file_id']}/content").content
        served = {}
        for raw in output.splitlines():
            out = json.loads(raw)
            served[out["custom_id"]] = out["response"]["body"]["model"]
        assert served == {f"q{i}": f"model-{i:05d}" for i in range(MODELS)}  # each line, to its own model

        url = gw.base_url.removesuffix("/v1") + "/metrics"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        text = httpx.get(url, headers=auth, timeout=60).text
        assert len(text) < 400_000, f"/metrics is {len(text):,} bytes after {MODELS} model names"
        # Lines of models past the label budget (100 by default) are counted, under "other".
        assert sample(text, "aistats_batch_lines_total", model="other", outcome="succeeded") == MODELS - 100
        deadline = time.monotonic() + 60
        while (lanes := sample(text, "aistats_executor_lanes")) > 0:
            assert time.monotonic() < deadline, f"{lanes:.0f} lanes still alive"
            time.sleep(0.2)
            text = httpx.get(url, headers=auth, timeout=60).text

        refused = httpx.get(url, timeout=60)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=60).status_code == 401
    finally:
        gw.stop()
        upstream.stop()
