"""The connection and upload limits' decisions, without a server (the behaviour over sockets is in
tests/e2e/test_http_limits.py)."""

from __future__ import annotations

import pytest

from aistats_gateway.api.json_upload import _utf8_cut
from aistats_gateway.api.limits import UploadSlots
from aistats_gateway.errors import ServiceUnavailable
from aistats_gateway.http_guard import header_room


def test_header_room_feeds_everything_under_the_limit_and_only_the_rest_over_it() -> None:
    assert header_room(100, 0, 100) is None
    assert header_room(100, 40, 80) == 60
    assert header_room(100, 100, 1) == 0


def test_upload_slots_refuse_one_more_and_free_on_exit() -> None:
    slots = UploadSlots(1)
    with slots.hold():
        with pytest.raises(ServiceUnavailable) as refused:
            with slots.hold():
                pass
        assert refused.value.headers["Retry-After"] == "5" and "max_concurrent_uploads = 1" in refused.value.message
    with slots.hold():
        assert slots.active == 1
    assert slots.active == 0


@pytest.mark.parametrize(("text", "cut"), [("abc", 3), ("ab€", 5), ("ab😀", 6), ("aé", 3)])
def test_a_utf8_sequence_cut_short_is_held_back(text: str, cut: int) -> None:
    raw = text.encode()
    for end in range(1, len(raw) + 1):
        kept = _utf8_cut(raw, 0, end)
        raw[:kept].decode()  # never a broken sequence
        assert end - kept < 4
    assert _utf8_cut(raw, 0, len(raw)) == cut
