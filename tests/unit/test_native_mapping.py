"""Pure parts of native execution: the execution-mode rule, provider batch objects → our view, result lines →
outcomes (both providers), Anthropic input translation and custom_id rules, and the configuration checks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aistats_gateway.config import ConfigError, Settings
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.native import choose_execution
from aistats_gateway.executor.native_settle import _as_halted, provider_custom_id
from aistats_gateway.providers import native_anthropic, native_openai
from aistats_gateway.providers.native_anthropic import AnthropicBatches
from aistats_gateway.providers.native_base import CANCELLED, COMPLETED, EXPIRED, FAILED, Outcome
from aistats_gateway.providers.native_openai import OpenAIBatches
from aistats_gateway.storage.native_jobs import JobItem, NativeJob

DAY = 86400
ANTHROPIC = AnthropicBatches("anthropic", "http://127.0.0.1:1/v1", "k", timeout_seconds=1)
OPENAI = OpenAIBatches("openai", "http://127.0.0.1:1/v1", "k", timeout_seconds=1)


def item(body: dict[str, Any], line: int = 3, custom_id: str = "c") -> JobItem:
    return JobItem(line, custom_id, str(body.get("model", "claude-sonnet-4-5")), orjson.dumps(body))


@pytest.mark.parametrize(("requested", "window", "providers", "expected"), [
    (None, DAY, ["openai"], "managed"),  # rows from before execution existed
    ("managed", DAY, ["openai"], "managed"),
    ("auto", DAY, ["openai"], "native"),
    ("auto", DAY, ["openai", "anthropic"], "native"),
    ("auto", DAY - 60, ["openai"], "managed"),  # under the providers' 24h window
    ("auto", 7 * DAY, ["openai", "vllm"], "managed"),  # one provider without a batch API
    ("auto", DAY, [], "managed"),
    ("native", 3600, ["openai"], "native"),  # explicit: any window
    ("native", DAY, ["vllm"], "managed"),  # its provider lost batch_api since create
])
def test_execution_rule(requested: str | None, window: int, providers: list[str], expected: str) -> None:
    assert choose_execution(requested, window, providers, {"openai", "anthropic"}) == expected


def test_openai_batch_objects() -> None:
    running = native_openai.remote({"id": "batch_1", "status": "finalizing", "metadata": {"aistats_native_job": "nj"},
                                    "request_counts": {"total": 3, "completed": 2, "failed": 0}})
    assert running.ended_as is None and running.counts == {"total": 3, "completed": 2, "failed": 0}
    assert running.tags == {"aistats_native_job": "nj"}
    for status, ended in (("completed", COMPLETED), ("expired", EXPIRED), ("cancelled", CANCELLED),
                          ("failed", FAILED), ("cancelling", None), ("validating", None)):
        found = native_openai.remote({"id": "b", "status": status, "output_file_id": "file-o", "error_file_id": None,
                                      "errors": {"data": [{"message": "bad line 3"}]}})
        assert found.ended_as == ended
        assert found.result_refs == ["file-o"] and found.error == "bad line 3"


def test_anthropic_batch_objects() -> None:
    counts = {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0}
    ended = native_anthropic.remote({"id": "m", "processing_status": "ended", "request_counts": counts,
                                     "results_url": "http://x/results", "created_at": "2026-01-01T00:00:00Z"})
    assert ended.ended_as == COMPLETED and ended.counts == {"total": 4, "completed": 3, "failed": 1}
    assert ended.result_refs == ["http://x/results"] and ended.created_at == 1767225600.0
    expired = native_anthropic.remote({"id": "m", "processing_status": "ended",
                                       "request_counts": {**counts, "expired": 2}})
    assert expired.ended_as == EXPIRED and expired.counts["failed"] == 3
    cancelled = native_anthropic.remote({"id": "m", "processing_status": "ended", "request_counts": counts,
                                         "cancel_initiated_at": "2026-01-01T00:00:00Z"})
    assert cancelled.ended_as == CANCELLED
    running = native_anthropic.remote({"id": "m", "processing_status": "canceling", "request_counts": counts})
    assert running.ended_as is None


def test_anthropic_results_become_openai_lines() -> None:
    chat = item({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 5}}
    ok = ANTHROPIC.outcome("/v1/chat/completions", chat, {"custom_id": "c", "result": {"type": "succeeded",
                                                                                          "message": message}})
    body = orjson.loads(ok.body or b"")
    assert ok.status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "hello" and body["usage"]["prompt_tokens"] == 15
    assert ok.input_tokens == 15 and ok.output_tokens == 2 and ok.usage is not None
    assert ok.usage["cache_read_input_tokens"] == 5  # pricing reads Anthropic's own usage shape
    raw = ANTHROPIC.outcome("/v1/messages", chat, {"result": {"type": "succeeded", "message": message}})
    assert orjson.loads(raw.body or b"")["content"] == message["content"]
    errored = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                     "message": "max_tokens: Field required"}}}
    bad = ANTHROPIC.outcome("/v1/chat/completions", chat, {"result": errored})
    assert bad.status == 400 and orjson.loads(bad.body or b"")["error"]["message"] == "max_tokens: Field required"
    native_error = ANTHROPIC.outcome("/v1/messages", chat, {"result": errored})
    assert orjson.loads(native_error.body or b"")["error"]["type"] == "invalid_request_error"
    overloaded = {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error",
                                                                        "message": "busy"}}}
    assert ANTHROPIC.outcome("/v1/messages", chat, {"result": overloaded}).status == 529
    for kind, code in (("canceled", "batch_cancelled"), ("expired", "batch_expired"),
                       ("weird", "native_invalid_result")):
        gone = ANTHROPIC.outcome("/v1/chat/completions", chat, {"result": {"type": kind}})
        assert gone.status is None and gone.error_code == code and not gone.succeeded


def test_anthropic_input_lines() -> None:
    chat = {"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "system", "content": "terse"},
                                                                 {"role": "user", "content": "hi"}],
            "x_fault": {"plan": [500]}}
    line = ANTHROPIC.input_line("/v1/chat/completions", "line-3", "claude-sonnet-4-5", item(chat))
    assert isinstance(line, bytes)
    sent = orjson.loads(line)
    assert sent["custom_id"] == "line-3" and sent["params"]["model"] == "claude-sonnet-4-5"
    assert sent["params"]["system"] == [{"type": "text", "text": "terse"}] and "x_fault" not in sent["params"]
    assert sent["params"]["max_tokens"] == 4096
    hot = ANTHROPIC.input_line("/v1/chat/completions", "c", "claude-sonnet-4-5", item({**chat, "temperature": 1.5}))
    assert isinstance(hot, Outcome) and hot.status == 400
    assert orjson.loads(hot.body or b"")["error"]["param"] == "temperature"
    embed = ANTHROPIC.input_line("/v1/embeddings", "c", "claude-sonnet-4-5", item({"input": "x"}))
    assert isinstance(embed, Outcome) and embed.status == 400


def test_custom_id_rules_and_mapping() -> None:
    assert ANTHROPIC.custom_id_fits("ok_ID-9") and ANTHROPIC.custom_id_fits("a" * 64)
    for bad in ("a" * 65, "", "with space", "slash/", "ünï"):
        assert not ANTHROPIC.custom_id_fits(bad)
    assert OPENAI.custom_id_fits("anything / goes ü")
    job = NativeJob(id="nj", batch_id="b", provider="p", model="*", kind="anthropic", state="running",
                    idempotency_key="k", id_scheme="line", lines=1, input_key=None, provider_file_id=None,
                    native_batch_id=None, provider_status=None, request_counts=None, result_keys=None,
                    create_attempts=0, create_attempted_at=None, cancel_sent_at=None, last_polled_at=None,
                    error=None, created_at=0.0, updated_at=0.0)
    assert provider_custom_id(job, JobItem(12, "not/ok", "m", b"")) == "line-12"


def test_openai_result_lines() -> None:
    body = {"id": "chatcmpl-1", "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    ok = OPENAI.outcome("/v1/chat/completions", item({}), {"response": {"status_code": 200, "body": body}})
    assert ok.succeeded and ok.input_tokens == 7 and ok.output_tokens == 3 and orjson.loads(ok.body or b"") == body
    refused = OPENAI.outcome("/v1/chat/completions", item({}), {"response": {"status_code": 400,
                                                                              "body": {"error": {"code": "x"}}}})
    assert refused.status == 400 and not refused.succeeded
    expired = OPENAI.outcome("/v1/chat/completions", item({}),
                             {"response": None, "error": {"code": "batch_expired", "message": "late"}})
    assert expired.error_code == "batch_expired" and expired.error_message == "late"


def test_lines_cancelled_because_our_window_ran_out_are_expired() -> None:
    cancelled = Outcome(None, None, error_code="batch_cancelled", error_message="x")
    assert _as_halted(cancelled, BatchStatus.EXPIRED).error_code == "batch_expired"
    assert _as_halted(cancelled, BatchStatus.CANCELLED).error_code == "batch_cancelled"
    assert _as_halted(cancelled, None) is cancelled


def test_batch_api_config(tmp_path: Any) -> None:
    env = {"AISTATS_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="batch_api"):
        Settings.load(env, providers=[{"name": "m2", "kind": "mock", "batch_api": True}])
    settings = Settings.load(env, providers=[{"name": "oa", "kind": "openai", "batch_api": True}],
                             native={"poll_interval_seconds": 0.5})
    assert settings.providers[0].batch_api and settings.native.poll_interval_seconds == 0.5
    config = tmp_path / "c.toml"
    config.write_text("[native]\nreconcile_grace_seconds = 7\n")
    assert Settings.load({**env, "AISTATS_CONFIG": str(config)}).native.reconcile_grace_seconds == 7


def test_runs_cut_parts_at_the_providers_line_and_byte_limits() -> None:
    from aistats_gateway.storage.native_jobs import _runs

    sizes = [(line, 100) for line in range(1, 11)]
    assert _runs(sizes, 0, 0) == [(1, 10, 10)]  # no limits: one run
    assert _runs(sizes, 4, 0) == [(1, 4, 4), (5, 8, 4), (9, 10, 2)]
    assert _runs(sizes, 0, 350) == [(1, 3, 3), (4, 6, 3), (7, 9, 3), (10, 10, 1)]
    assert _runs(sizes, 2, 350) == [(1, 2, 2), (3, 4, 2), (5, 6, 2), (7, 8, 2), (9, 10, 2)]
    # gaps in line numbers (lines that failed or were settled before) and a line bigger than the byte limit
    assert _runs([(2, 100), (5, 900), (9, 100), (12, 100)], 0, 300) == [(2, 2, 1), (5, 5, 1), (9, 12, 2)]
    assert _runs([], 5, 500) == []
