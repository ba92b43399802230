"""Create-time field rules, the state machine table and the retry policy (all pure)."""

from __future__ import annotations

import pytest

from aistats_gateway.domain import transitions
from aistats_gateway.domain.batch import (
    BatchStatus,
    RequestCounts,
    normalize_endpoint,
    parse_completion_window,
    parse_endpoint,
    parse_expires_after,
    parse_metadata,
    parse_webhook,
)
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.executor.retry import RetryPolicy


@pytest.mark.parametrize("spelling", ["responses", "/responses", "/v1/responses", "v1/responses/"])
def test_endpoint_spellings(spelling: str) -> None:
    assert normalize_endpoint(spelling) == "/v1/responses"


def test_unknown_endpoint() -> None:
    assert normalize_endpoint("/v1/images/generations") is None


@pytest.mark.parametrize(("value", "code"), [(None, "missing_required_parameter"), ("  ", "missing_required_parameter"),
                                             (1, "invalid_type"), (["/v1/responses"], "invalid_type"),
                                             ("/v1/nope", "invalid_endpoint")])
def test_bad_endpoints_say_what_is_wrong(value: object, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_endpoint(value)
    assert (err.value.code, err.value.param) == (code, "endpoint")


@pytest.mark.parametrize(("window", "seconds"), [(None, 86400), ("24h", 86400), ("90m", 5400), ("168h", 604800)])
def test_windows(window: str | None, seconds: int) -> None:
    assert parse_completion_window(window).seconds == seconds


@pytest.mark.parametrize("window", ["0h", "169h", "1d", "abc", 24, "١٢h", "²h", "1.5h", "-1h"])
def test_bad_windows_name_the_field(window: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_completion_window(window)
    assert err.value.param == "completion_window"


@pytest.mark.parametrize("seconds", ["٣٦٠٠", "3600²", "²", "abc", 3600.5, True, None])
def test_expires_after_seconds_are_ascii_integers(seconds: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_expires_after({"anchor": "created_at", "seconds": seconds}, "expires_after")
    assert err.value.param == "expires_after.seconds"
    assert parse_expires_after({"anchor": "created_at", "seconds": " 3600"}, "expires_after") == 3600


def test_metadata_rules() -> None:
    assert parse_metadata({"a": "b"}) == {"a": "b"}
    with pytest.raises(InvalidRequest):
        parse_metadata({str(i): "v" for i in range(17)})
    with pytest.raises(InvalidRequest) as err:
        parse_metadata({"k": "v" * 513})
    assert err.value.param == "metadata.k"
    with pytest.raises(InvalidRequest):
        parse_metadata({"k" * 65: "v"})
    with pytest.raises(InvalidRequest):
        parse_metadata({"k": 3})


def test_webhook_events_normalized_and_secret_kept_out_of_sight() -> None:
    hook = parse_webhook({"url": "https://example.com/h", "events": ["job.completed", "batch.progress", "nope"]})
    assert hook is not None and hook["events"] == ["batch.completed", "batch.progress"]
    assert parse_webhook({"url": "http://localhost:9/h"}, allow_local_http=True) is not None
    with pytest.raises(InvalidRequest) as err:  # local targets only when the setting says so
        parse_webhook({"url": "http://localhost:9/h"})
    assert err.value.param == "webhook.url"
    with pytest.raises(InvalidRequest) as err:
        parse_webhook({"url": "http://example.com/h"})
    assert err.value.param == "webhook.url"
    with pytest.raises(InvalidRequest) as err:
        parse_webhook({"url": "https://example.com/h", "events": ["nope"]})
    assert err.value.param == "webhook.events"
    for padded in (" s3cret", "s3cret\n", "   "):
        with pytest.raises(InvalidRequest) as err:
            parse_webhook({"url": "https://example.com/h", "secret": padded})
        assert err.value.param == "webhook.secret"


def test_state_machine_allows_only_the_drawn_moves() -> None:
    S = BatchStatus
    assert transitions.check(S.VALIDATING, S.IN_PROGRESS) == "in_progress_at"
    assert transitions.check(S.CANCELLING, S.CANCELLED) == "cancelled_at"
    for terminal in (S.COMPLETED, S.FAILED, S.EXPIRED, S.CANCELLED):
        for target in S:
            with pytest.raises(transitions.IllegalTransition):
                transitions.check(terminal, target)
    with pytest.raises(transitions.IllegalTransition):
        transitions.check(S.IN_PROGRESS, S.COMPLETED)  # must pass through finalizing


def test_progress_reaches_100_only_when_all_settled() -> None:
    assert RequestCounts(1000, 999, 0).progress == 99
    assert RequestCounts(1000, 990, 10).progress == 100
    assert RequestCounts(0, 0, 0).progress == 0


def test_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=3, base=1.0, cap=8.0, max_throttles=2)
    assert not policy.decide(status=400, attempts=1, throttles=0, retry_after=None, jitter=0.5).retry
    first = policy.decide(status=500, attempts=1, throttles=0, retry_after=None, jitter=0.0)
    assert first.retry and first.delay == 0.5  # base * 2^0 * (0.5 + 0)
    assert policy.decide(status=503, attempts=2, throttles=0, retry_after=None, jitter=0.999).delay <= 2.0
    assert not policy.decide(status=500, attempts=3, throttles=0, retry_after=None, jitter=0.5).retry
    throttled = policy.decide(status=429, attempts=3, throttles=1, retry_after=1.5, jitter=0.0)
    assert throttled.retry and not throttled.counts_attempt and throttled.delay == 1.5
    assert not policy.decide(status=429, attempts=0, throttles=2, retry_after=None, jitter=0.0).retry
    assert policy.decide(status=None, attempts=1, throttles=0, retry_after=None, jitter=0.0).retry
    assert policy.decide(status=500, attempts=9, throttles=0, retry_after=None, jitter=1.0).retry is False
    capped = RetryPolicy(max_attempts=50, base=1.0, cap=8.0).decide(
        status=500, attempts=20, throttles=0, retry_after=None, jitter=0.999)
    assert capped.delay <= 8.0


def test_windows_with_many_digits_are_refused_and_spellings_are_stored_canonical() -> None:
    for window in ("9" * 5000 + "h", "9" * 13 + "m"):  # int() refuses over 4,300 digits: this was a 500
        with pytest.raises(InvalidRequest) as err:
            parse_completion_window(window)
        assert err.value.param == "completion_window" and len(err.value.message) < 300
    assert parse_completion_window(" 0024 h ").seconds == 86400 and parse_completion_window(" 0024 h ").text == "24h"
    assert parse_completion_window("1440m").text == "1440m" and parse_completion_window(None).text == "24h"
    with pytest.raises(InvalidRequest) as err:
        parse_expires_after({"anchor": "created_at", "seconds": "9" * 5000}, "expires_after")
    assert err.value.param == "expires_after.seconds"


def test_endpoints_are_bounded_and_long_values_are_quoted_short() -> None:
    for endpoint in ("/v1/responses" + "/" * 200, " " * 100 + "responses", "x" * 100_000):
        with pytest.raises(InvalidRequest) as err:
            parse_endpoint(endpoint)
        assert err.value.code == "invalid_endpoint" and len(err.value.message) < 400
    with pytest.raises(InvalidRequest) as err:
        parse_webhook({"url": "https://example.com/" + "a" * 100_000})
    assert len(err.value.message) < 600
