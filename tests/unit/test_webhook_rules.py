"""Webhook signing (shared test vector), the SSRF guard (table of hostile URLs), progress buckets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest

from aistats_gateway.domain.batch import RequestCounts
from aistats_gateway.domain.events import progress_bucket, progress_crossed
from aistats_gateway.domain.urlguard import UnsafeTarget, check_url, resolve_checked
from aistats_gateway.webhooks import signer

# A fixed vector: anyone implementing the verifier can check against these exact values.
VECTOR_BODY = b'{"id":"evt_1","type":"batch.completed"}'
VECTOR_SIGNATURE = "a1d8192bc67218dd78aefe63691e9fe4c1174e3d9e89e786069756620eae511d"


def test_signature_is_hex_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"whsec_test", b"1700000000." + VECTOR_BODY, hashlib.sha256).hexdigest()
    got = signer.sign("whsec_test", 1700000000, VECTOR_BODY)
    assert got == expected == VECTOR_SIGNATURE
    assert signer.verify("whsec_test", 1700000000, VECTOR_BODY, got, now=1700000100)
    assert not signer.verify("whsec_test", 1700000000, b"tampered", got, now=1700000100)
    assert not signer.verify("other", 1700000000, VECTOR_BODY, got, now=1700000100)
    assert not signer.verify("whsec_test", 1700000000, VECTOR_BODY, got, now=1700001000)


def test_headers_are_sent_under_both_prefixes() -> None:
    headers = signer.headers(secrets=["s"], timestamp=5, body=b"{}", event_id="evt_1", event_type="batch.completed",
                             delivery_key="batch.completed", attempt=2, max_attempts=4)
    for prefix in ("x-ai-stats-", "x-phaseo-"):
        assert headers[prefix + "signature"] == signer.sign("s", 5, b"{}")
        assert headers[prefix + "event-id"] == "evt_1" and headers[prefix + "attempt"] == "2"
        assert headers[prefix + "max-attempts"] == "4" and headers[prefix + "timestamp"] == "5"
    assert "x-ai-stats-signature" not in signer.headers(secrets=[], timestamp=5, body=b"{}", event_id="e",
                                                        event_type="t", delivery_key="k", attempt=1, max_attempts=1)


HOSTILE = [
    "http://example.com/hook",                  # plain http to a public host
    "https://10.0.0.5/hook",                    # private
    "https://172.16.3.4/hook",                  # private
    "https://192.168.1.1/hook",                 # private
    "https://127.0.0.1/hook",                   # loopback over https (local exception is http-dev only... and off)
    "https://[::1]/hook",                       # IPv6 loopback
    "https://0.0.0.0/hook",                     # wildcard
    "https://[::]/hook",                        # IPv6 unspecified
    "https://169.254.169.254/latest/meta-data", # cloud metadata
    "https://[fd00:ec2::254]/",                 # AWS IPv6 metadata
    "https://100.100.100.200/",                 # Alibaba metadata
    "https://100.64.0.1/hook",                  # CGNAT
    "https://[::ffff:127.0.0.1]/hook",          # IPv4-mapped loopback
    "https://[::ffff:10.0.0.1]/hook",           # IPv4-mapped private
    "https://[64:ff9b::a00:1]/hook",            # NAT64 of 10.0.0.1
    "https://[2002:a00:1::]/hook",              # 6to4 of 10.0.0.1
    "https://[fe80::1]/hook",                   # link-local
    "https://[fc00::1]/hook",                   # unique local
    "https://224.0.0.1/hook",                   # multicast
    "https://2130706433/hook",                  # decimal 127.0.0.1
    "https://0x7f000001/hook",                  # hex 127.0.0.1
    "https://127.1/hook",                       # short form
    "https://0177.0.0.1/hook",                  # octal
    "https://user:pass@example.com/hook",       # credentials
    "ftp://example.com/hook",                   # scheme
    "https://metadata.internal/",               # internal names
    "https://printer.local/",
    "https://240.0.0.1/",                       # reserved
    "https://192.0.2.10/",                      # documentation range
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url, allow_local=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/h", "http://localhost:9000/h", "http://[::1]:9000/h"])
def test_local_development_exception_is_a_setting(url: str) -> None:
    check_url(url, allow_local=True)
    with pytest.raises(UnsafeTarget):
        check_url(url, allow_local=False)


MALFORMED = [
    "https://[::1/hook",                        # unbalanced bracket: urlsplit raises ValueError
    "https://[zz]/hook",                        # a bracketed host that is no IP address
    "https://[v1.x]/hook",                      # IPvFuture: nothing to connect to
    "https://exa\x00mple.com/hook",             # NUL (socket.inet_aton raises ValueError on it)
    "https://exa mple.com/hook",                # whitespace
    "https://example.com/a\r\nb",               # control characters
    "https://a..b/hook",                        # empty label: IDNA cannot encode it
    "https://" + "a" * 64 + ".com/hook",        # label over 63 characters
    "https://exa%mple.com/hook",                # not a DNS name
    "https://-bad-.example/hook",               # label starting or ending with '-'
    "https://foo.localhost./hook",              # local-only names with the root dot
    "https://localhost./hook",
    "https://example.com/" + "a" * 3000,        # longer than MAX_URL_CHARS
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused_with_a_reason_not_an_exception(url: str) -> None:
    with pytest.raises(UnsafeTarget) as info:
        check_url(url, allow_local=False)
    assert str(info.value)


@pytest.mark.parametrize("url", ["https://éxample.com/hook", "https://hooks.example.com./x", "https://a_b.example.com/x",
                                 "https://example.com/caf%C3%A9?q=é"])
def test_unusual_but_valid_urls_pass(url: str) -> None:
    check_url(url, allow_local=False)


def test_any_delivery_error_is_recorded_as_a_failed_attempt() -> None:
    """An error no handler expected (here the resolver's UnicodeError for a host stored before create checked
    it) is an attempt like any other: recorded and retried, never an event claimed forever."""
    from types import SimpleNamespace

    from aistats_gateway.clock import FakeClock
    from aistats_gateway.config import WebhookConfig
    from aistats_gateway.storage.outbox import Event
    from aistats_gateway.webhooks.deliverer import Deliverer

    recorded: list[dict[str, object]] = []

    class Outbox:
        async def record_attempt(self, event: Event, **fields: object) -> str:
            recorded.append(fields)
            return "retry_scheduled"

    async def render(_record: object) -> dict[str, object]:
        return {}

    async def broken_resolver(host: str, port: int) -> list[str]:
        raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label empty or too long)")

    deliverer = Deliverer(WebhookConfig(), Outbox(), FakeClock(), render, allow_local=False,  # type: ignore[arg-type]
                          resolve=broken_resolver)
    snapshot = SimpleNamespace(webhook={"url": "https://hooks.example.com/x", "secret": None})
    event = Event("evt_1", "batch_1", "batch.completed", "batch.completed", snapshot, 1, 4, 0)  # type: ignore[arg-type]
    asyncio.run(deliverer._attempt(event))
    assert len(recorded) == 1 and recorded[0]["delivered"] is False
    assert "UnicodeError" in str(recorded[0]["error"]) and recorded[0]["next_attempt_at"] is not None


def test_public_https_is_allowed() -> None:
    assert check_url("https://hooks.example.com:8443/x", allow_local=False) == ("https", "hooks.example.com", 8443)


def test_every_resolved_address_is_checked() -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one public, one private: refuse the whole target

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    with pytest.raises(UnsafeTarget, match=r"evil\.example") as info:
        asyncio.run(resolve_checked("https://evil.example/h", rebinding, allow_local=False))
    # the stored message does not map internal DNS; the cause (for the operator's log) names the address
    assert "10.0.0.7" not in str(info.value) and "10.0.0.7" in str(info.value.__cause__)
    assert asyncio.run(resolve_checked("https://ok.example/h", public, allow_local=False)).addresses == [
        "93.184.216.34"]

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with pytest.raises(UnsafeTarget):  # a public name resolving to loopback is not the local exception
        asyncio.run(resolve_checked("https://sneaky.example/h", to_loopback, allow_local=True))


def test_progress_buckets() -> None:
    assert progress_bucket(RequestCounts(100, 0, 0)) is None
    assert progress_bucket(RequestCounts(100, 3, 0)) == 5
    assert progress_bucket(RequestCounts(100, 37, 2)) == 30
    assert progress_bucket(RequestCounts(100, 99, 0)) == 90
    assert progress_bucket(RequestCounts(100, 100, 0)) is None
    assert progress_crossed(RequestCounts(100, 0, 0), RequestCounts(100, 2, 0)) == 5
    assert progress_crossed(RequestCounts(100, 2, 0), RequestCounts(100, 4, 0)) is None
    assert progress_crossed(RequestCounts(100, 4, 0), RequestCounts(100, 55, 0)) == 50
    assert progress_crossed(RequestCounts(100, 55, 0), RequestCounts(100, 100, 0)) is None


def test_sdk_verifier_accepts_the_server_signature_and_the_shared_vector() -> None:
    from aistats import compute_signature, verify_webhook

    assert compute_signature("whsec_test", 1700000000, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = signer.headers(secrets=["whsec_test"], timestamp=1700000000, body=VECTOR_BODY, event_id="evt_1",
                             event_type="batch.completed", delivery_key="batch.completed", attempt=1, max_attempts=4)
    assert verify_webhook("whsec_test", VECTOR_BODY, headers, now=1700000010)
    phaseo_only = {k: v for k, v in headers.items() if k.startswith("x-phaseo-")}
    assert verify_webhook("whsec_test", VECTOR_BODY.decode(), phaseo_only, now=1700000010)
    assert not verify_webhook("whsec_test", VECTOR_BODY + b" ", headers, now=1700000010)
    assert not verify_webhook("whsec_test", VECTOR_BODY, headers, now=1700009999)
    assert not verify_webhook("whsec_test", VECTOR_BODY, {}, now=1700000010)


# Unicode spellings of loopback (issue 14, item 14): IDNA/NFKC maps them to the ASCII host a client connects to.
UNICODE_LOOPBACK = [
    "https://１２７.０.０.１/hook",                # fullwidth digits and full stops
    "https://127。0。0。1/hook",                   # ideographic full stops
    "https://ⓛocalhost/hook",                      # circled letter
    "https://ＬＯＣＡＬＨＯＳＴ/hook",              # fullwidth letters
    "https://127.0.0\u200b.1/hook",                # a zero-width space IDNA deletes
    "https://１０.０.０.５/hook",                   # fullwidth private address
    "https://[::1]/hook",
    "https://127.0.0.1./hook",                     # a literal with the root dot
    "https://ⓜetadata.internal/",                  # local-only names in Unicode
]


@pytest.mark.parametrize("url", UNICODE_LOOPBACK)
def test_unicode_spellings_of_local_hosts_are_refused_at_create(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url, allow_local=False)


def test_the_host_checked_is_the_host_connected_to() -> None:
    """With local targets allowed, a Unicode spelling of localhost is localhost: delivery connects to the
    checked ASCII host (never a second reading of the URL), and the target is local (answers not shown)."""
    async def resolve(host: str, port: int) -> list[str]:
        assert host == "localhost"
        return ["127.0.0.1"]

    target = asyncio.run(resolve_checked("https://ⓛocalhost:8443/a?b=é", resolve, allow_local=True))
    assert (target.host, target.port, target.addresses, target.local) == ("localhost", 8443, ["127.0.0.1"], True)
    assert str(target.request_url("https://ⓛocalhost:8443/a?b=é")) == "https://localhost:8443/a?b=%C3%A9"
    idn = asyncio.run(resolve_checked("https://éxample.com/h", _public, allow_local=False))
    assert idn.host == "xn--xample-9ua.com" and idn.local is False
    assert idn.request_url("https://éxample.com/h").raw_host == "xn--xample-9ua.com"
    literal = asyncio.run(resolve_checked("https://１.１.１.１/h", _public, allow_local=False))
    assert literal.host == "1.1.1.1" and str(literal.request_url("https://１.１.１.１/h")) == "https://1.1.1.1/h"


async def _public(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


def test_a_name_resolving_to_loopback_or_private_space_is_refused_at_delivery() -> None:
    for addresses in (["127.0.0.1"], ["10.1.2.3"], ["::1"], ["::ffff:127.0.0.1"], ["93.184.216.34", "169.254.169.254"]):
        async def resolve(host: str, port: int, addresses: list[str] = addresses) -> list[str]:
            return addresses

        for allow_local in (False, True):
            with pytest.raises(UnsafeTarget, match="resolves to an address webhooks may not reach"):
                asyncio.run(resolve_checked("https://rebind.example/h", resolve, allow_local=allow_local))


def test_local_targets_are_a_setting_off_by_default() -> None:
    from aistats_gateway.config import Settings, WebhookConfig

    assert WebhookConfig().allow_local is False
    settings = Settings.load({"AISTATS_DATA_DIR": "/tmp/x", "AISTATS_HOST": "127.0.0.1"})
    assert settings.webhooks.allow_local is False  # also on a loopback bind


def test_a_local_targets_answers_are_never_shown() -> None:
    """A real loopback HTTP service answering with a secret: the attempt records neither its body, nor its
    status, nor an error that tells refused / timeout / status apart."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace

    from aistats_gateway.clock import FakeClock
    from aistats_gateway.config import WebhookConfig
    from aistats_gateway.storage.outbox import Event
    from aistats_gateway.webhooks.deliverer import LOCAL_FAILURE, Deliverer

    class Admin(BaseHTTPRequestHandler):
        status = 200

        def do_POST(self) -> None:
            self.send_response(self.status)
            self.end_headers()
            self.wfile.write(b'{"admin_token": "tok_SECRET"}')

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    closed_port = closed.server_address[1]
    closed.server_close()  # nothing listens there: connection refused
    recorded: list[dict[str, object]] = []

    class Outbox:
        async def record_attempt(self, event: Event, **fields: object) -> str:
            recorded.append(fields)
            return "scheduled_retry"

    async def render(_record: object) -> dict[str, object]:
        return {}

    def attempt(url: str) -> dict[str, object]:
        deliverer = Deliverer(WebhookConfig(timeout_seconds=5), Outbox(), FakeClock(), render,  # type: ignore[arg-type]
                              allow_local=True)
        snapshot = SimpleNamespace(webhook={"url": url, "secret": None})
        event = Event("evt_1", "batch_1", "batch.completed", "batch.completed", snapshot, 1, 4, 0)  # type: ignore[arg-type]
        asyncio.run(deliverer._attempt(event))
        return recorded[-1]

    try:
        port = server.server_address[1]
        ok = attempt(f"http://127.0.0.1:{port}/admin")
        assert ok["delivered"] is True and ok["body_preview"] is None and ok["response_status"] is None
        Admin.status = 404
        not_found = attempt(f"http://localhost:{port}/admin")
        refused = attempt(f"http://127.0.0.1:{closed_port}/admin")
        for failed in (not_found, refused):
            assert failed["delivered"] is False and failed["body_preview"] is None
            assert failed["response_status"] is None and failed["error"] == LOCAL_FAILURE
        assert "tok_SECRET" not in repr(recorded)
    finally:
        server.shutdown()
        server.server_close()
