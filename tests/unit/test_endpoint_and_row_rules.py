"""Pure rules of registered webhook endpoints (domain/webhook_endpoints.py), of the events a batch naming one
gets (domain/events.py), of the signatures a delivery carries during a rotation (webhooks/signer.py, and our
SDK's verifier), and of request rows (domain/request_rows.py)."""

from __future__ import annotations

import re

import orjson
import pytest

from aistats import verify_webhook
from aistats_gateway.domain import request_rows as rows
from aistats_gateway.domain import webhook_endpoints as rules
from aistats_gateway.domain.events import status_change, status_change_key, wants
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.webhooks import signer


def test_secrets_events_and_overlap() -> None:
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", rules.new_secret())
    assert rules.new_secret() != rules.new_secret()
    assert rules.parse_events(["Job.Completed", "canceled", "batch.completed", "job.completed"], "events") == \
        ["job.completed", "job.cancelled", "batch.completed"]
    with pytest.raises(InvalidRequest) as bad:
        rules.parse_events(["batch.completed", "nope"], "events")
    assert bad.value.param == "events[1]"
    assert rules.batch_events(["job.completed", "video.failed", "batch.completed", "batch.status_changed"]) == \
        ["batch.completed", "batch.status_changed"]
    assert rules.parse_create({"url": "https://h.example.com/x"}, allow_local=False)["events"] == \
        list(rules.DEFAULT_EVENTS)
    assert rules.parse_overlap({}) == 86400 and rules.parse_overlap({"overlap_seconds": 0}) == 0
    for bad_value in (-1, True, 1.5, rules.MAX_OVERLAP_SECONDS + 1):
        with pytest.raises(InvalidRequest):
            rules.parse_overlap({"overlap_seconds": bad_value})
    assert rules.signing_secrets("new", "old", 100, 99.9) == ["new", "old"]
    assert rules.signing_secrets("new", "old", 100, 100) == ["new"]
    assert rules.signing_secrets("new", None, None, 0) == ["new"]


def test_a_batch_naming_an_endpoint_gets_its_events_unless_it_gave_its_own() -> None:
    assert wants({"endpoint_id": "we_1", "events": []}, "batch.completed", ["batch.completed"])
    assert not wants({"endpoint_id": "we_1", "events": []}, "batch.created", ["batch.completed"])
    assert wants({"endpoint_id": "we_1", "events": ["batch.created"]}, "batch.created", ["batch.completed"])
    assert not wants({"endpoint_id": "we_1", "events": ["batch.created"]}, "batch.completed", ["batch.completed"])
    assert not wants(None, "batch.completed", ["batch.completed"])
    key = status_change_key("validating", "in_progress")
    assert status_change("batch.status_changed", key) == {"previous_status": "validating", "status": "in_progress"}
    assert status_change("batch.progress", "batch.progress:50") is None


def test_both_secrets_sign_and_either_verifies() -> None:
    body = b'{"id":"evt_1"}'
    headers = signer.headers(secrets=["new", "old"], timestamp=1000, body=body, event_id="evt_1",
                             event_type="batch.completed", delivery_key="batch.completed", attempt=1, max_attempts=4)
    assert headers["x-phaseo-signature"] == signer.sign("new", 1000, body)  # what the SDKs' verifiers read
    assert headers["x-ai-stats-signatures"] == f"{signer.sign('new', 1000, body)},{signer.sign('old', 1000, body)}"
    for secret in ("new", "old"):
        assert verify_webhook(secret, body, headers, now=1000)
        assert signer.verify(secret, 1000, body, headers["x-phaseo-signatures"], now=1000)
    assert not verify_webhook("other", body, headers, now=1000)
    unsigned = signer.headers(secrets=[], timestamp=1000, body=body, event_id="e", event_type="t", delivery_key="k",
                              attempt=1, max_attempts=1)
    assert "x-ai-stats-signature" not in unsigned and "x-phaseo-signatures" not in unsigned


def line(status: int, error_code: str | None = None, result: bytes | None = None) -> rows.Line:
    return rows.Line("batch_1", 3, 2, "c", "m", "p", status, error_code, result, 0, None, None, None, None)


def test_row_status_filters_and_bounded_bodies() -> None:
    assert [rows.row_status(s, c) for s, c in ((rows.PENDING, None), (rows.LEASED, None), (rows.SUCCEEDED, None),
                                                (rows.FAILED, "upstream_error"), (rows.FAILED, "batch_cancelled"),
                                                (rows.FAILED, "batch_expired"))] == list(rows.STATUSES)
    assert rows.parse_filter("success") == ("status", "completed") and rows.parse_filter("404") == ("code", 404)
    assert rows.parse_filter(None) is None and rows.parse_filter("error") == ("error", None)
    for bad in ("²00", "٤٠٤", "4040", "99", "", "validating"):
        with pytest.raises(InvalidRequest):
            rows.parse_filter(bad)
    budget = rows.Budget(left=15_000)
    big = {"text": "x" * (rows.BODY_CAP + 1)}
    cut = budget.fit(big)
    assert cut["truncated"] is True and cut["bytes"] > rows.BODY_CAP and len(cut["preview"]) == rows.PREVIEW_CHARS
    small = {"text": "y" * 6000}
    assert budget.fit(small) == small and budget.fit(small) == small
    assert budget.fit(small)["truncated"] is True  # the page budget is spent
    answer = orjson.dumps({"response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 1}}}, "error": None})
    done = rows.render(line(rows.SUCCEEDED, result=answer), endpoint="/v1/chat/completions", native_batch_id=None,
                       session_id=None, created_at=5, input_mode="file", budget=rows.Budget())
    assert (done["status"], done["response_status"], done["usage"], done["request_index"]) == \
        ("completed", 200, {"prompt_tokens": 1}, 2)
    halted = rows.render(line(rows.FAILED, "batch_expired"), endpoint="/v1/chat/completions", native_batch_id=None,
                         session_id=None, created_at=5, input_mode="file", budget=rows.Budget())
    assert halted["status"] == "expired" and halted["error_body"]["code"] == "batch_expired"


def test_a_batch_names_an_endpoint_by_id_or_webhook_object() -> None:
    from aistats_gateway.domain.batch import parse_webhook_choice

    assert parse_webhook_choice(None, "we_1") == {"endpoint_id": "we_1", "events": []}
    assert parse_webhook_choice({"endpointId": "we_2", "events": ["job.completed", "video.failed"]}, "we_1") == \
        {"endpoint_id": "we_2", "events": ["batch.completed"]}  # the object wins, as on the AI Stats server
    inline = parse_webhook_choice({"url": "https://h.example.com/x", "secret": "s"}, None)
    assert inline is not None and inline["url"] == "https://h.example.com/x"
    assert parse_webhook_choice(None, None) is None
    for webhook, endpoint_id, param in (
            ({"url": "https://h.example.com/x"}, "we_1", "webhook_endpoint_id"),
            ({"endpoint_id": "we_1", "url": "https://h.example.com/x"}, None, "webhook.url"),
            ({"endpoint_id": ""}, None, "webhook.endpoint_id"),
            ({"endpoint_id": "we_1", "events": ["video.failed"]}, None, "webhook.events"),
            ({"endpoint_id": "we_1", "events": ["nope"]}, None, "webhook.events[0]"),
            (None, 5, "webhook_endpoint_id")):
        with pytest.raises(InvalidRequest) as bad:
            parse_webhook_choice(webhook, endpoint_id)
        assert bad.value.param == param, (webhook, endpoint_id)
