"""The CLI's and the start banner's rules as plain values (issue 18, items 3 to 5): the rate over a
sliding window, the ETA, the errors list's "and N more", the /v1 hint, the stream's re-open delay, the
boxed key and the ready line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistats import Batch
from aistats._stream import stream_retry_delay
from aistats_gateway import banner
from aistats_gateway.cli.batch import base_url_hint, duration, error_lines, write_atomically
from aistats_gateway.cli.live import RateMeter, eta, rate_text
from aistats_gateway.config import Settings


def test_rate_counts_only_what_was_seen_settle() -> None:
    meter = RateMeter(window=10)
    meter.observe(100.0, 5000)  # 5,000 lines had settled before watching began
    assert meter.rate() is None
    meter.observe(100.5, 5060)
    assert meter.rate() is None  # half a second is too short to say
    for i in range(2, 30):
        meter.observe(100 + i * 0.5, 5000 + 120 * i // 2)  # 120 lines/s
    assert meter.rate() == pytest.approx(120, rel=0.02)


def test_rate_follows_a_change_of_pace_within_the_window() -> None:
    meter = RateMeter(window=10)
    for t in range(0, 21):
        meter.observe(float(t), 100 * t)  # 100/s for 20 s
    for t in range(21, 41):
        meter.observe(float(t), 2000 + 10 * (t - 20))  # then 10/s
    assert meter.rate() == pytest.approx(10, rel=0.01)
    meter.observe(41.0, 3)  # counts going back (another batch): start over
    assert meter.rate() is None


def test_eta_and_rate_text() -> None:
    assert eta(0, None) == "0:00:00"
    assert eta(100, None) == "-:--:--" and eta(100, 0.0) == "-:--:--"
    assert eta(7200, 2.0) == "1:00:00" and eta(90, 1.0) == "0:01:30"
    assert rate_text(None) == "" and rate_text(1234.4) == "1,234/s" and rate_text(2.25) == "2.2/s"


def test_errors_list_says_how_many_more() -> None:
    errors = [{"line": i, "code": "model_not_found", "message": "add a [[providers]] entry"} for i in range(1, 51)]
    lines = error_lines(errors)
    assert len(lines) == 11 and lines[0] == "line 1: model_not_found add a [[providers]] entry"
    assert lines[-1].startswith("… and 40 more")
    assert error_lines(errors[:10])[-1].startswith("line 10:")
    assert error_lines([{"code": "empty_file", "message": "no lines"}]) == ["empty_file no lines"]


def test_base_url_hint_only_for_a_404_without_v1() -> None:
    assert base_url_hint("http://127.0.0.1:8787", 404) == "hint: the base URL usually ends in /v1, e.g. " \
                                                         "http://127.0.0.1:8787/v1"
    assert base_url_hint("http://127.0.0.1:8787/v1/", 404) is None
    assert base_url_hint("http://127.0.0.1:8787", 401) is None


def test_duration_ended_or_running() -> None:
    ended = Batch({"created_at": 1000, "in_progress_at": 1002, "completed_at": 1002 + 3725})
    assert duration(ended, now=99999) == "1:02:05"
    running = Batch({"created_at": 1000, "in_progress_at": None})
    assert duration(running, now=1065) == "0:01:05 so far"


def test_stream_is_reopened_at_once_then_less_often() -> None:
    assert [stream_retry_delay(n) for n in range(1, 8)] == [0, 1, 2, 4, 8, 15, 15]


def test_write_atomically_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def broken() -> object:
        yield "new line\n"
        raise ConnectionError("lost")

    with pytest.raises(ConnectionError):
        write_atomically(target, broken())  # type: ignore[arg-type]
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    assert write_atomically(target, iter(["a\n", "b\n"])) == 2 and target.read_text() == "a\nb\n"


def test_banner_urls_and_boxed_key() -> None:
    settings = Settings.load({"AISTATS_HOST": "0.0.0.0", "AISTATS_PORT": "9000"})
    ready = banner.ready(settings, "sk-aistats-abc")
    assert ready.splitlines()[-1] == ("ready: API http://127.0.0.1:9000/v1 · dashboard http://127.0.0.1:9000/ui/ · "
                                      "health http://127.0.0.1:9000/v1/health")
    box = ready.splitlines()[1:-1]
    assert box[0].startswith("╔") and box[-1].startswith("╚") and len({len(line) for line in box}) == 1
    assert any(line.strip("║ ") == "sk-aistats-abc" for line in box)
    assert banner.ready(settings, None).startswith("ready: ")
