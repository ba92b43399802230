"""The rules of issue 17 as plain functions: what a failed line failed with, which lines a retry takes, when an
Idempotency-Key answers again, and which outcome a chain's merged results show."""

from __future__ import annotations

import orjson
import pytest

from aistats_gateway.domain.failures import failure_of
from aistats_gateway.domain.idempotency import IdempotencyKey, StoredKey, json_fingerprint, parse_key, replay_of
from aistats_gateway.domain.jsonl import error_line, upstream_error_line
from aistats_gateway.domain.retry import parse_retry
from aistats_gateway.errors import Conflict, InvalidRequest
from aistats_gateway.services.results import merged_pick
from aistats_gateway.storage.items import ItemResult
from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_SUCCEEDED


def test_failure_of_each_kind_of_error_line() -> None:
    openai = orjson.dumps({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})
    anthropic = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    f = failure_of(upstream_error_line("r", "a", 429, "G", openai), None)
    assert (f.code, f.status_code, f.message, f.custom_id, f.outcome) == (
        "rate_limit_exceeded", 429, "slow down", "a", "failed")
    assert failure_of(upstream_error_line("r", "b", 529, "G", anthropic), None).code == "overloaded_error"
    assert failure_of(upstream_error_line("r", "c", 502, "G", b"<html>bad gateway"), None).code == "server_error"
    assert failure_of(upstream_error_line("r", "c", 418, "G", b"{}"), None).code == "http_418"
    timeout = failure_of(error_line("r", "d", "upstream_timeout", "no answer"), None)
    assert (timeout.code, timeout.status_code, timeout.message) == ("upstream_timeout", None, "no answer")
    assert failure_of(None, "batch_expired").outcome == "expired"
    assert failure_of(None, "batch_cancelled").outcome == "cancelled"
    assert failure_of(b"not json", None).code == "request_failed"
    long = orjson.dumps({"error": {"code": "x" * 300, "message": "m" * 3000}})
    assert len(failure_of(upstream_error_line("r", "e", 400, "G", long), None).code) == 64


def test_retry_filter() -> None:
    rejected = failure_of(upstream_error_line("r", "a", 400, "G", orjson.dumps({"error": {"code": "bad"}})), None)
    cancelled = failure_of(None, "batch_cancelled")
    default = parse_retry({})
    assert default.matches("a", rejected) and default.matches("b", cancelled)
    only = parse_retry({"statuses": ["cancelled"], "custom_ids": ["b"]})
    assert not only.matches("a", rejected) and only.matches("b", cancelled) and not only.matches("c", cancelled)
    assert parse_retry({"error_codes": ["bad"]}).matches("a", rejected)
    for body, param in (({"statuses": ["succeeded"]}, "statuses"), ({"statuses": []}, "statuses"),
                        ({"error_codes": "bad"}, "error_codes"), ({"custom_ids": [1]}, "custom_ids[0]"),
                        ({"status": ["failed"]}, "status")):
        with pytest.raises(InvalidRequest) as exc:
            parse_retry(body)
        assert exc.value.param == param


def test_idempotency_rules() -> None:
    assert parse_key(None) is None and parse_key("k-1") == "k-1"
    for bad in ("", "x" * 256, "é", "a\nb"):
        with pytest.raises(InvalidRequest):
            parse_key(bad)
    assert json_fingerprint("r", {"a": 1, "b": 2}) == json_fingerprint("r", {"b": 2, "a": 1})
    assert json_fingerprint("r", {"a": 1}) != json_fingerprint("s", {"a": 1})
    key = IdempotencyKey("k", json_fingerprint("r", {"a": 1}), "batch")
    stored = StoredKey(key.fingerprint, "batch", "batch_1", 1000)
    assert replay_of(None, key, 1000) is None
    assert replay_of(stored, key, 1000 + 3600) == "batch_1"
    assert replay_of(stored, key, 1000 + 24 * 3600) is None  # past the TTL: the key creates anew
    with pytest.raises(Conflict) as exc:
        replay_of(stored, IdempotencyKey("k", json_fingerprint("r", {"a": 2}), "batch"), 1001)
    assert exc.value.code == "idempotency_key_reused"


def test_merged_pick_prefers_the_latest_success_else_the_latest_outcome() -> None:
    ok = ItemResult(1, "a", ITEM_SUCCEEDED, b"ok", None)
    ok2 = ItemResult(1, "a", ITEM_SUCCEEDED, b"ok2", None)
    bad = ItemResult(1, "a", ITEM_FAILED, b"bad", None)
    bad2 = ItemResult(1, "a", ITEM_FAILED, b"bad2", None)
    assert merged_pick([(0, bad), (1, ok), (2, bad2)]) is ok
    assert merged_pick([(0, ok), (2, ok2), (1, bad)]) is ok2
    assert merged_pick([(0, bad), (1, bad2)]) is bad2
    assert merged_pick([]) is None
