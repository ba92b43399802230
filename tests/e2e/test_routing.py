"""Routing with fallback through real processes: a provider that is down (nothing listens on its port)
and a working one serving the same models. Lines fall back and say who served them; the circuit
keeps later lines off the dead provider; `allow_fallbacks: false` and `order` are honoured; each
model gets its own lane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, Upstream, free_port, jsonl, wait_for_batch


def config(upstream: Upstream) -> str:
    return f"""
[executor]
max_attempts = 3
backoff_base_seconds = 0.02
backoff_max_seconds = 0.05
connect_timeout_seconds = 1

[[providers]]
name = "down"
kind = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
api_key = "sk-down"
models = ["gpt-*"]

[[providers]]
name = "backup"
kind = "openai"
base_url = "{upstream.base_url}"
api_key = "sk-backup"
models = ["gpt-*"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("routing")
    upstream = Upstream(root / "upstream.log")
    gw = Gateway(root / "data", config=config(upstream))
    yield gw, upstream
    gw.stop()
    upstream.stop()


def lines(prefix: str, n: int, models: tuple[str, ...] = ("gpt-4o-mini",)) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": models[i % len(models)], "messages": [{"role": "user", "content": f"hi {i}"}],
                      "x_fault": {"key": f"{prefix}-{i}", "plan": []}}} for i in range(n)]


def run(client: httpx.Client, rows: list[dict[str, Any]], **extra: Any) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                                   list[dict[str, Any]]]:
    file_id = client.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    created = client.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h", **extra})
    assert created.status_code == 200, created.text
    batch = wait_for_batch(client, created.json()["id"])
    out = [json.loads(x) for x in client.get(f"/files/{batch['output_file_id']}/content").text.splitlines()] \
        if batch["output_file_id"] else []
    err = [json.loads(x) for x in client.get(f"/files/{batch['error_file_id']}/content").text.splitlines()] \
        if batch["error_file_id"] else []
    return batch, out, err


def attempts(client: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/batches/{batch_id}/requests", params={"limit": 1000, "view": "attempts"})
    assert page.status_code == 200, page.text
    assert not page.json()["has_more"]
    return list(page.json()["data"])


def test_lines_fall_back_to_the_working_provider_and_say_so(stack: Any, tmp_path: Path) -> None:
    gw, upstream = stack
    with gw.client() as client:
        batch, out, err = run(client, lines("fb", 40))
        assert batch["status"] == "completed", batch
        assert batch["request_counts"].items() >= {"total": 40, "completed": 40, "failed": 0}.items()
        assert err == []
        assert sorted(line["custom_id"] for line in out) == sorted(f"fb-{i}" for i in range(40))
        assert {line["provider"] for line in out} == {"backup"}
        ledger = upstream.ledger()
        assert all(ledger[f"fb-{i}"] == 1 for i in range(40))  # the working provider saw each line once
        log = attempts(client, batch["id"])
        down = [row for row in log if row["provider"] == "down"]
        assert down, "the first lines must have tried the dead provider"
        assert all(row["error_code"] == "upstream_connection" for row in down)
        # Its circuit opened after a few consecutive failures: most lines never tried it, and none more
        # than its attempt budget (3).
        assert len(down) < 40
        per_line: dict[str, int] = {}
        for row in down:
            per_line[row["custom_id"]] = per_line.get(row["custom_id"], 0) + 1
        assert max(per_line.values()) <= 3

        # The circuit is open now: a second batch goes straight to the backup.
        again, _, _ = run(client, lines("fb2", 10))
        assert again["status"] == "completed"
        assert {row["provider"] for row in attempts(client, again["id"])} == {"backup"}


def test_no_fallback_when_the_batch_forbids_it(stack: Any) -> None:
    gw, _ = stack
    with gw.client() as client:
        batch, out, err = run(client, lines("nofb", 6), provider={"allow_fallbacks": False})
        assert batch["request_counts"].items() >= {"total": 6, "completed": 0, "failed": 6}.items()
        assert out == []
        assert {line["error"]["code"] for line in err} == {"upstream_connection"}
        assert {row["provider"] for row in attempts(client, batch["id"])} == {"down"}


def test_order_preference_picks_the_provider(stack: Any) -> None:
    gw, _ = stack
    with gw.client() as client:
        batch, out, _ = run(client, lines("ord", 8), provider={"order": ["backup", "down"]})
        assert batch["request_counts"]["completed"] == 8
        assert {row["provider"] for row in attempts(client, batch["id"])} == {"backup"}
        assert {line["provider"] for line in out} == {"backup"}


def test_mixed_models_each_get_their_own_lane(stack: Any) -> None:
    gw, _ = stack
    with gw.client() as client:
        batch, out, _ = run(client, lines("mix", 12, ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano")),
                            provider={"order": ["backup"]})
        assert batch["request_counts"]["completed"] == 12
        models = {json.loads(json.dumps(line["response"]["body"]))["model"] for line in out}
        assert models == {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano"}
        metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
        for model in ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano"):
            assert f'aistats_lane_concurrency_limit{{lane="backup/{model}"}}' in metrics
