"""The official `openai` SDK, unchanged, against the real gateway over loopback HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from tests.harness import Gateway, chat_line, jsonl


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=gateway.api_key, base_url=gateway.base_url, max_retries=0)


def test_thousand_line_batch_every_custom_id_exactly_once(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl([chat_line(f"req-{i}", f"question {i}", max_tokens=50) for i in range(1000)]))
    with path.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.filename == "requests.jsonl"
    assert uploaded.bytes == path.stat().st_size
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "sdk-test"})
    assert batch.status == "validating" and batch.metadata == {"run": "sdk-test"}
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (1000, 1000, 0)
    assert batch.error_file_id is None and batch.output_file_id
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    extra = batch.model_extra or {}
    assert extra["progress"] == 100 and extra["lifecycle_status"] == "completed"
    assert extra["request_id"].startswith("G-") and extra["provider"] == "mock"
    output = client.files.content(batch.output_file_id).text
    lines = [json.loads(line) for line in output.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(1000))
    first = lines[0]
    assert first["response"]["status_code"] == 200 and first["error"] is None
    assert first["id"].startswith("batch_req_")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "echo: question 0"
    usage = batch.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)


def test_progress_moves_while_running_then_list_and_cancel(client: openai.OpenAI, tmp_path: Path) -> None:
    data = jsonl([chat_line(f"s-{i}", "slow", model="mock/slow") for i in range(600)])
    uploaded = client.files.create(file=("slow.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="chat/completions", completion_window="1h")
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while len({p for p in seen if 0 < p < 100}) < 2:
        assert time.monotonic() < deadline, seen
        current = client.batches.retrieve(batch.id)
        seen.append((current.model_extra or {})["progress"])
        time.sleep(0.05)
    assert current.endpoint == "chat/completions"  # the caller's spelling is echoed
    assert current.status == "in_progress"
    assert seen == sorted(seen), "progress never goes backwards"

    listed = client.batches.list(limit=1)
    assert listed.data[0].id == batch.id
    ids = [b.id for b in client.batches.list(limit=1)]  # auto-pagination across pages of one
    assert batch.id in ids and len(ids) == len(set(ids)) >= 2

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    final = cancelling
    deadline = time.monotonic() + 30
    while final.status != "cancelled":
        assert time.monotonic() < deadline, final
        time.sleep(0.05)
        final = client.batches.retrieve(final.id)
    counts = final.request_counts
    assert counts is not None and counts.total == 600 and counts.completed + counts.failed == 600
    assert 0 < counts.completed < 600
    assert final.error_file_id is not None and final.output_file_id is not None
    out = [json.loads(x) for x in client.files.content(final.output_file_id).text.splitlines()]
    err = [json.loads(x) for x in client.files.content(final.error_file_id).text.splitlines()]
    assert len(out) == counts.completed and len(err) == counts.failed
    assert {e["error"]["code"] for e in err} == {"batch_cancelled"}
    ids_seen = [x["custom_id"] for x in out + err]
    assert sorted(ids_seen) == sorted(f"s-{i}" for i in range(600))
    assert (final.model_extra or {})["cancel_url"] is None


def test_files_api_through_the_sdk(client: openai.OpenAI) -> None:
    f = client.files.create(file=("x.jsonl", jsonl([chat_line("a", "b")])), purpose="batch")
    assert client.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in client.files.list(purpose="batch")]
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(f.id)
    assert err.value.status_code == 404


def test_sdk_sees_openai_style_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id="file-nope", endpoint="/v1/images", completion_window="24h")
    assert bad.value.code == "invalid_endpoint" and bad.value.param == "endpoint"
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    assert missing.value.code == "file_not_found_or_not_owned"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=str(client.base_url), max_retries=0).batches.list()
