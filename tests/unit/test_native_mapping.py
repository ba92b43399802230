"""Pure parts of native execution: the execution-mode rule, provider batch objects → our view, result lines →
outcomes (both providers), Anthropic input translation, the custom_id schemes, what proves a lost Anthropic
create ours and what a job does after one, and the configuration checks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aistats_gateway.config import ConfigError, Settings
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.native import ADOPT, GIVE_UP, RECREATE, WAIT, after_lost_create
from aistats_gateway.executor.native_settle import _as_halted, provider_custom_id
from aistats_gateway.providers import native_anthropic, native_openai
from aistats_gateway.providers.native_anthropic import AnthropicBatches
from aistats_gateway.providers.native_base import CANCELLED, COMPLETED, EXPIRED, FAILED, Outcome, RemoteBatch, Search
from aistats_gateway.providers.native_openai import OpenAIBatches
from aistats_gateway.settings_check import check_settings
from aistats_gateway.storage.native_jobs import JobItem, NativeJob

ANTHROPIC = AnthropicBatches("anthropic", "http://127.0.0.1:1/v1", "k", timeout_seconds=1)
OPENAI = OpenAIBatches("openai", "http://127.0.0.1:1/v1", "k", timeout_seconds=1)


def item(body: dict[str, Any], line: int = 3, custom_id: str = "c") -> JobItem:
    return JobItem(line, custom_id, str(body.get("model", "claude-sonnet-4-5")), orjson.dumps(body))


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


def job_of(scheme: str, **over: Any) -> NativeJob:
    values: dict[str, Any] = dict(
        id="nj_01JDQ3Z8M4W5X6Y7Z8A9B0C1D2", batch_id="b", provider="p", model="*", kind="anthropic",
        state="creating", idempotency_key="k", id_scheme=scheme, lines=3, input_key=None, provider_file_id=None,
        native_batch_id=None, provider_status=None, request_counts=None, result_keys=None, create_attempts=1,
        create_attempted_at=1000.0, cancel_sent_at=None, last_polled_at=None, error=None, created_at=900.0,
        updated_at=0.0)
    return NativeJob(**{**values, **over})


def test_custom_id_schemes_and_mapping() -> None:
    assert ANTHROPIC.id_scheme == "job" and OPENAI.id_scheme == "verbatim"
    user = JobItem(12, "not/ok ü", "m", b"")
    assert provider_custom_id(job_of("verbatim"), user) == "not/ok ü"
    assert provider_custom_id(job_of("line"), user) == "line-12"  # Anthropic jobs built before `job`
    job = job_of("job")
    sent = provider_custom_id(job, JobItem(10**12, "x" * 500, "m", b""))
    assert sent == f"{job.id}-{10**12}" and native_anthropic.CUSTOM_ID.match(sent)  # fits whatever the user's id


def remote_batch(created_at: float | None, total: int = 3, batch_id: str = "msgbatch_1",
                 ended: bool = True) -> RemoteBatch:
    return RemoteBatch(batch_id, "ended" if ended else "in_progress", COMPLETED if ended else None,
                       {"total": total, "completed": total, "failed": 0}, created_at=created_at)


def test_a_lost_anthropic_create_is_only_a_candidate_by_count_and_time() -> None:
    job = job_of("job")  # planned at 900, last create attempt at 1000, 3 lines
    skew = native_anthropic.SKEW_SECONDS
    assert native_anthropic.is_candidate(remote_batch(950.0), job, set())
    assert native_anthropic.is_candidate(remote_batch(900.0 - skew), job, set())
    assert native_anthropic.is_candidate(remote_batch(1000.0 + skew), job, set())
    assert not native_anthropic.is_candidate(remote_batch(899.0 - skew), job, set())  # made before the job
    assert not native_anthropic.is_candidate(remote_batch(1001.0 + skew), job, set())  # after its last attempt
    assert not native_anthropic.is_candidate(remote_batch(950.0, total=4), job, set())
    assert not native_anthropic.is_candidate(remote_batch(950.0), job, {"msgbatch_1"})  # another job's
    assert not native_anthropic.is_candidate(remote_batch(None), job, set())


def test_only_results_with_exactly_the_jobs_custom_ids_prove_a_batch_ours() -> None:
    ours = ["nj_A-1", "nj_A-2", "nj_A-3"]

    def proven(ids: list[str | None]) -> bool:
        proof = native_anthropic.Proof(ours)
        for cid in ids:
            if not proof.add(cid):
                break
        return proof.proven

    assert proven(["nj_A-3", "nj_A-1", "nj_A-2"])  # in any order
    assert not proven(["q1", "q2", "q3"])  # another client's batch of the same size
    assert not proven(["nj_A-1", "nj_A-2"])  # one missing
    assert not proven(["nj_A-1", "nj_A-2", "nj_A-3", "nj_B-4"])  # one more
    assert not proven(["nj_A-1", "nj_A-1", "nj_A-2", "nj_A-3"])  # one twice
    assert not proven(["nj_A-1", None, "nj_A-2", "nj_A-3"])  # a line without a custom_id
    assert not native_anthropic.Proof([]).proven
    early = native_anthropic.Proof(ours)
    assert not early.add("q1") and not early.add("nj_A-1")  # broken at the first foreign id, for good


def test_after_a_lost_create() -> None:
    found, running, nothing = Search(found=remote_batch(950.0)), Search(pending=1), Search()
    assert after_lost_create(found, 0.0, 60.0, False) == ADOPT  # proven: taken at once, halted or not
    assert after_lost_create(found, 99.0, 60.0, True) == ADOPT
    assert after_lost_create(nothing, 10.0, 60.0, False) == WAIT  # the provider may still be making it
    assert after_lost_create(running, 10.0, 60.0, True) == WAIT
    assert after_lost_create(running, 61.0, 60.0, False) == WAIT  # may be ours: only its results can tell
    assert after_lost_create(running, 61.0, 60.0, True) == GIVE_UP  # cancelled: nothing ours to cancel or take
    assert after_lost_create(nothing, 61.0, 60.0, True) == GIVE_UP
    assert after_lost_create(nothing, 61.0, 60.0, False) == RECREATE


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
        check_settings(Settings.load(env, providers=[{"name": "m2", "kind": "mock", "batch_api": True}]))
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
