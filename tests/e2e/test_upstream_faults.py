"""A real OpenAI-compatible upstream process that scripts faults per line: the gateway retries what is
retryable (5xx, 429 with Retry-After, resets, bad bodies, hangs), settles 4xx at once, and accounts for
every line exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway, Upstream, jsonl, wait_for_batch

PLANS: dict[str, tuple[int, list[Any], dict[str, Any]]] = {
    # name: (how many lines, plan, extra fault fields)
    "ok": (40, [], {}),
    "flaky500": (15, [500, 502], {}),
    "throttled": (10, [429], {"retry_after": 0.3}),
    "throttled_no_header": (5, [429, 429], {}),
    "rejected": (10, [400], {}),
    "exhausted": (4, [500, 500, 500, 500, 500], {}),
    "reset": (5, ["reset"], {}),
    "badjson": (3, ["badjson"], {}),
    "truncated": (2, ["truncated"], {}),
    "hang": (2, ["hang"], {}),
    "big": (2, ["big:3000000"], {}),  # a 3 MB answer arrives whole (read in many chunks)
    "huge": (1, ["big:9000000", "big:9000000", "big:9000000", "big:9000000"], {}),  # over the cap: error
    "quota": (2, ["quota", "quota"], {}),  # out of credit: a 429 that is final, not pacing
}
CONFIG = """
[executor]
max_attempts = 4
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2
request_timeout_seconds = 1.5
max_response_bytes = 8000000
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("faults")
    upstream = Upstream(root / "upstream.log")
    gw = Gateway(root / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-upstream"},
                 config=CONFIG)
    yield gw, upstream
    gw.stop()
    upstream.stop()


def lines() -> list[dict[str, Any]]:
    out = []
    for name, (count, plan, extra) in PLANS.items():
        for i in range(count):
            key = f"{name}-{i}"
            model = "openai/gpt-4o-mini" if i % 2 else "gpt-4o-mini"
            out.append({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": model, "messages": [{"role": "user", "content": key}],
                                 "x_fault": {"key": key, "plan": plan, **extra}}})
    return out


def test_faulty_upstream_batch(stack: Any) -> None:
    gw, upstream = stack
    api = gw.client()
    file_id = api.post("/files", files={"file": ("f.jsonl", jsonl(lines()))}, data={"purpose": "batch"}).json()["id"]
    batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()
    done = wait_for_batch(api, batch["id"], timeout=90)
    assert done["status"] == "completed", done
    assert done["provider"] == "openai" and done["model"] is None  # two spellings of the model name
    out = [json.loads(x) for x in api.get(f"/files/{done['output_file_id']}/content").text.splitlines()]
    err = [json.loads(x) for x in api.get(f"/files/{done['error_file_id']}/content").text.splitlines()]
    total = sum(c for c, _, _ in PLANS.values())
    assert sorted(x["custom_id"] for x in out + err) == sorted(line["custom_id"] for line in lines())
    assert done["request_counts"].items() >= {"total": total, "completed": len(out), "failed": len(err)}.items()

    groups = {x["custom_id"].rsplit("-", 1)[0] for x in err}
    assert groups == {"rejected", "exhausted", "huge", "quota"}
    quota = [x for x in err if x["custom_id"].startswith("quota")]
    assert all(x["response"]["status_code"] == 429 and x["provider"] == "openai" for x in quota)
    assert all(x["response"]["body"]["error"]["code"] == "insufficient_quota" for x in quota)
    huge = next(x for x in err if x["custom_id"].startswith("huge"))
    assert huge["error"]["code"] == "upstream_too_large" and huge["response"] is None
    big = [x for x in out if x["custom_id"].startswith("big")]
    assert len(big) == 2 and all(len(x["response"]["body"]["padding"]) == 3_000_000 for x in big)
    rejected = [x for x in err if x["custom_id"].startswith("rejected")]
    assert all(x["response"]["status_code"] == 400 and x["error"] is None for x in rejected)
    assert all("scripted fault 400" in x["response"]["body"]["error"]["message"] for x in rejected)
    exhausted = [x for x in err if x["custom_id"].startswith("exhausted")]
    assert all(x["response"]["status_code"] == 500 for x in exhausted)

    ledger = upstream.ledger()
    expected_attempts = {"ok": 1, "flaky500": 3, "throttled": 2, "throttled_no_header": 3, "rejected": 1,
                         "exhausted": 4, "reset": 2, "badjson": 2, "truncated": 2, "hang": 2, "big": 1, "huge": 4,
                         "quota": 1}
    for name, (count, _, _) in PLANS.items():
        for i in range(count):
            assert ledger[f"{name}-{i}"] == expected_attempts[name], (name, i, ledger[f"{name}-{i}"])
    # the `openai/` routing prefix is dropped before the upstream call
    assert {x["response"]["body"]["model"] for x in out} == {"gpt-4o-mini"}
    assert all(x["response"]["status_code"] == 200 for x in out)


def test_unreachable_upstream_ends_in_the_error_file(tmp_path: Path) -> None:
    from tests.harness import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": dead}, config=CONFIG)
    try:
        api = gw.client()
        rows = [{"custom_id": f"u{i}", "method": "POST", "url": "/v1/embeddings",
                 "body": {"model": "text-embedding-3-small", "input": "x"}} for i in range(3)]
        done = wait_for_batch(api, api.post("/batches", json={"endpoint": "embeddings", "requests": rows}).json()["id"])
        assert done["status"] == "completed" and done["request_counts"]["failed"] == 3
        err = [json.loads(x) for x in api.get(f"/files/{done['error_file_id']}/content").text.splitlines()]
        assert {e["error"]["code"] for e in err} == {"upstream_connection"}
        assert all("after 4 attempt(s)" in e["error"]["message"] for e in err)
    finally:
        gw.stop()
