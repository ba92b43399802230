"""Key rules as plain functions: what is shown of a key, what a revoke argument may be, when a stream
re-checks its key."""

from __future__ import annotations

from aistats_gateway.api.stream import AUTH_RECHECK_SECONDS, wait_seconds
from aistats_gateway.domain.keys import hash_key, key_prefix, new_key
from aistats_gateway.services.keys import key_lookup, masked


def test_prefixes_tell_generated_keys_apart_and_never_give_a_static_key_away() -> None:
    key = new_key()
    assert key_prefix(key) == key[:19] and key_prefix(key).startswith("sk-aistats-")
    assert len({key_prefix(new_key()) for _ in range(1000)}) == 1000
    assert key_prefix("sk-test-default") == "sk-test" and key_prefix("ab") == "a"


def test_a_revoke_argument_is_an_id_a_key_or_a_hash_and_is_repeated_only_in_part() -> None:
    digest = hash_key("k")
    assert key_lookup("key_01") == ("key_01", [hash_key("key_01")])
    assert key_lookup(digest) == (digest, [hash_key(digest), digest])
    assert masked("key_01ABC") == "key_01ABC"
    secret = new_key()
    assert masked(secret) == secret[:19] + "…"


def test_an_idle_stream_still_wakes_for_its_key_check() -> None:
    assert wait_seconds(10.0, None, 10.0 + AUTH_RECHECK_SECONDS) == AUTH_RECHECK_SECONDS
    assert wait_seconds(10.0, 10.5, 12.0) == 0.5
    assert abs(wait_seconds(10.0, 11.0, 10.2) - 0.2) < 1e-9
    assert wait_seconds(13.0, 11.0, 12.0) == 0.0
