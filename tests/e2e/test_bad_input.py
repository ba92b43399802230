"""Malformed input at every route of a real gateway process: nothing a client sends may answer 5xx, hang, crash
the ingest or leave half-created work behind, and every rejection is the error envelope with a message (and the
`param` at fault where one field is).

Hand-written cases per route, then a seeded generator (`Fuzz`, no third-party library) throwing a few hundred
random malformed bodies, query strings, ids and input lines at each. After each test the gateway must still be
healthy, have logged no internal error, and hold exactly the batches and files the accepted requests created
(each test runs in its own workspace, so the list endpoints show only its objects). A PostgreSQL gateway gets
the inputs SQLite is lenient about (NUL characters, out-of-range integers); it skips without a server.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.backends import PG_SKIP, pg_available, pg_database
from tests.harness import MOCK_PRICES, Gateway, InProcessGateway, chat_line, jsonl

SEED = 20261129
TERMINAL = ("completed", "failed", "cancelled", "expired")
# mock/echo gets prices so estimates and credit holds are exercised with real (and absurd) numbers.
CONFIG = """
[limits]
max_file_bytes = 12000000

[[providers]]                   # any model under wild/ routes here (nothing is ever sent: validation refuses)
name = "wild"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "none"
models = ["wild/*"]
""" + MOCK_PRICES
VALID_LINE = chat_line("ok", "hi")


# ------------------------------------------------------------------------------------------------ the gateways


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("bad_input") / "data", config=CONFIG)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def pg_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if not pg_available():
        pytest.skip(PG_SKIP)
    with pg_database() as url:
        gateway = Gateway(tmp_path_factory.mktemp("bad_input_pg") / "data", config=CONFIG,
                          env={"AISTATS_DATABASE_URL": url})
        yield gateway
        gateway.stop()


MINT = """
import json, sys
from aistats_gateway.cli.main import _with_store
from aistats_gateway.services.keys import create_key

async def mint(store):
    return [await create_key(store.workspaces, f"fuzz-{i}") for i in range(int(sys.argv[1]))]

print(json.dumps(_with_store(mint)))
"""


class Keys:
    """API keys of fresh workspaces, minted in one process per gateway (`keys create` costs ~1 s a key)."""

    def __init__(self) -> None:
        self._left: dict[int, list[str]] = {}

    def take(self, gateway: Gateway) -> str:
        left = self._left.setdefault(id(gateway), [])
        if not left:
            out = subprocess.run([sys.executable, "-c", MINT, "40"], env=gateway.env, check=True, capture_output=True,
                                 text=True)
            left.extend(json.loads(out.stdout.strip().splitlines()[-1]))
        return left.pop()


KEYS = Keys()


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client of a fresh workspace (its lists hold only what this test created), checked after the test; on
    the SQLite gateway, or on each database for tests marked with `BOTH_DATABASES`."""
    backend = getattr(request, "param", "sqlite")
    yield from _checked_client(request.getfixturevalue("gw" if backend == "sqlite" else "pg_gw"), request)


# For the inputs that reach storage (ids, cursors, filters, stored fields): SQLite is lenient where PostgreSQL
# is not (NUL, VARCHAR lengths, 64-bit integers).
BOTH_DATABASES = pytest.mark.parametrize("api", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def pg_api(pg_gw: Gateway, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    yield from _checked_client(pg_gw, request)


def _checked_client(gateway: Gateway, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    key = KEYS.take(gateway)
    log_start = gateway.log.stat().st_size if gateway.log.exists() else 0
    with gateway.client(key) as client:
        client.headers["x-test"] = request.node.name[:60]
        yield client
        assert client.get("/health").json()["status"] == "ok"
    errors = internal_errors(gateway.log, log_start)
    assert not errors, "the gateway logged internal errors:\n" + "\n\n".join(errors)


def internal_errors(log: Path, start: int) -> list[str]:
    """Error records the gateway logged since `start` (JSON log lines): unhandled exceptions, failed jobs."""
    out: list[str] = []
    with log.open("rb") as fh:
        fh.seek(start)
        for raw in fh:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("level") not in ("error", "critical"):
                continue
            if record.get("message") == "ASGI callable returned without completing handshake.":
                continue  # uvicorn's websockets-sansio logs this for every denial response (a refused WebSocket)
            out.append(f"{record.get('message')}\n{str(record.get('exception', ''))[-1500:]}")
    return out


# ------------------------------------------------------------------------------------------------ assertions


def envelope(resp: httpx.Response) -> dict[str, Any]:
    """The error object of a rejection, after checking the envelope of API.md."""
    where = f"{resp.request.method} {str(resp.request.url)[:200]} -> {resp.status_code}: {resp.text[:400]}"
    assert 400 <= resp.status_code < 500, where
    body = resp.json()
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"].strip(), where
    assert error["type"] and error["code"], where
    assert "param" in error, where
    # Says what was wrong without echoing a huge value back (or storing it in a batch's errors).
    assert len(error["message"]) <= 1000 and len(str(error["param"])) <= 200, where
    assert body["status_code"] == resp.status_code and str(body["request_id"]).startswith("G-"), where
    return dict(error)


def rejected(resp: httpx.Response, status: int | None = None, param: Any = ..., code: str | None = None
             ) -> dict[str, Any]:
    error = envelope(resp)
    where = f"{resp.request.method} {str(resp.request.url)[:200]}: {resp.text[:400]}"
    if status is not None:
        assert resp.status_code == status, where
    if param is not ...:
        assert error["param"] == param, where
    if code is not None:
        assert error["code"] == code, where
    return error


def answered(resp: httpx.Response) -> None:
    """Any answer but a 5xx; a 4xx must be the envelope."""
    assert resp.status_code < 500, f"{resp.request.method} {str(resp.request.url)[:200]} -> {resp.status_code}: " \
                                   f"{resp.text[:400]}"
    if resp.status_code >= 400:
        envelope(resp)


def ids_of(api: httpx.Client, path: str) -> set[str]:
    found: set[str] = set()
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if after:
            params["after"] = after
        page = api.get(path, params=params).json()
        found |= {item["id"] for item in page["data"]}
        if not page["has_more"]:
            return found
        after = page["last_id"]


def inventory(api: httpx.Client) -> tuple[set[str], set[str]]:
    return ids_of(api, "/batches"), ids_of(api, "/files")


def upload(api: httpx.Client, data: bytes, name: str = "in.jsonl") -> str:
    resp = api.post("/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": "batch"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def wait_terminal(api: httpx.Client, batch_ids: list[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every batch reaches a terminal status (an ingest that crashed would keep one `validating` forever)."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while True:
        for batch_id in batch_ids:
            if batch_id not in done:
                batch = api.get(f"/batches/{batch_id}").json()
                if batch["status"] in TERMINAL:
                    done[batch_id] = batch
        if len(done) == len(batch_ids):
            return done
        stuck = {b: api.get(f"/batches/{b}").json()["status"] for b in batch_ids if b not in done}
        assert time.monotonic() < deadline, f"batches not terminal after {timeout}s: {stuck}"
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ the generator


class Fuzz:
    """Seeded random malformed values: JSON of every type and shape, nasty strings, byte-level mutations."""

    STRINGS = ("", " ", "\t\n", "x", "null", "true", "0", "-1", "1e999", "NaN", "24h", "0h", "-1h", "1.5h",
               "999999h", "batch", "/v1/chat/completions", "chat/completions", "mock/echo", "../../etc/passwd",
               "a/b\\c", "é€😀", "\u202e", "\x00", "a\x00b", "\x7f", "\r\n", "%00", "%2F", "' OR 1=1 --",
               "https://[::1/", "https://a..b/", "http://10.0.0.1/", "ftp://x", "data:,x", "٣٦٠٠", "²")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(self.STRINGS)
        if r < 0.8:
            return "".join(chr(self.rng.choice((self.rng.randint(0x20, 0x7e), self.rng.randint(0x80, 0x2fff),
                                                self.rng.randint(0x1f300, 0x1f5ff), self.rng.randint(0, 0x1f))))
                           for _ in range(self.rng.randint(1, 12)))
        return self.rng.choice("ab/%é\x00") * self.rng.choice((65, 257, 513, 3000, 70_000))

    def number(self) -> Any:
        return self.rng.choice((0, 1, -1, 2, 16, 17, 100, 3600, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, -2**63,
                                2**64 + 1, 10**30, 0.5, -0.0, 1.5, 1e308, 3600.0))

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.35:
            return self.rng.choice((None, True, False, self.number(), self.string()))
        if r < 0.55:
            return self.string()
        if r < 0.7:
            return self.number()
        if r < 0.85:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.string(): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def mutate(self, data: bytes) -> bytes:
        """A byte-level corruption: truncation, a flipped or inserted byte, a duplicated or dropped slice."""
        if not data:
            return bytes([self.rng.randint(0, 255)])
        i = self.rng.randrange(len(data))
        j = min(len(data), i + self.rng.randint(1, 40))
        kind = self.rng.randrange(6)
        if kind == 0:
            return data[:i]
        if kind == 1:
            return data[:i] + bytes([self.rng.randint(0, 255)]) + data[i + 1:]
        if kind == 2:
            junk = self.rng.choice((b"\x00", b"\xff", b"\r", b"\n", b'"', b"{", b"]", b"\\", b","))
            return data[:i] + junk + data[i:]
        if kind == 3:
            return data[:j] + data[i:]
        if kind == 4:
            return data[:i] + data[j:]
        return data[:i] + data[i:j].upper() + data[j:]


# ------------------------------------------------------------------------------------------------ auth


AUTH_ROUTES = [
    ("GET", "/models"), ("GET", "/files"), ("POST", "/files"), ("GET", "/files/file-x"),
    ("GET", "/files/file-x/content"), ("DELETE", "/files/file-x"), ("GET", "/batches"), ("POST", "/batches"),
    ("GET", "/batches/batch_x"), ("GET", "/batches/batch_x/results"), ("GET", "/batches/batch_x/requests"),
    ("POST", "/batches/batch_x/cancel"), ("GET", "/generations/G-x"), ("GET", "/credits"), ("GET", "/usage"),
    ("GET", "/webhook-endpoints"), ("POST", "/webhook-endpoints"), ("GET", "/webhook-endpoints/we_x"),
    ("PATCH", "/webhook-endpoints/we_x"), ("DELETE", "/webhook-endpoints/we_x"),
    ("POST", "/webhook-endpoints/we_x/rotate-secret"), ("POST", "/webhook-endpoints/we_x/test"),
]
BAD_AUTH: list[bytes | None] = [
    None, b"", b"Bearer", b"bearer", b"Basic dXNlcjpwYXNz", b"Token sk-test-default", b"Bearer sk-nope",
    b"Bearer " + b"k" * 20_000, "Bearer clé-€".encode(), "Bearer clé".encode("latin-1"), b"Bearer \xff\xfe",
    b"Bearer a b", b"BearerX sk", b"Bearer\tsk",
]


def test_every_route_refuses_bad_credentials_with_401(gw: Gateway, api: httpx.Client) -> None:
    with httpx.Client(base_url=gw.base_url, timeout=30) as anon:
        for method, path in AUTH_ROUTES:
            for header in BAD_AUTH:
                headers = {} if header is None else {"Authorization": header}
                resp = anon.request(method, path, headers=headers, content=b"{garbage")
                error = rejected(resp, 401)
                assert error["code"] in ("missing_api_key", "invalid_api_key"), resp.text
    assert inventory(api) == (set(), set())


# ------------------------------------------------------------------------------------------------ ids in paths


ID_ROUTES = [
    ("GET", "/batches/{}"), ("POST", "/batches/{}/cancel"), ("GET", "/batches/{}/results"),
    ("GET", "/batches/{}/requests"), ("GET", "/files/{}"), ("GET", "/files/{}/content"), ("DELETE", "/files/{}"),
    ("GET", "/generations/{}"), ("GET", "/webhook-endpoints/{}"), ("PATCH", "/webhook-endpoints/{}"),
    ("DELETE", "/webhook-endpoints/{}"), ("POST", "/webhook-endpoints/{}/rotate-secret"),
    ("POST", "/webhook-endpoints/{}/test"),
]
BAD_IDS = [
    "nope", "batch_00000000000000000000000000", "file-00000000000000000000000000", "😀", "%F0%9F%98%80",
    "%FF%FE", "..%2F..%2Fetc%2Fpasswd", "a%2Fb", "%2e%2e", "%20", "x" * 8000, "'%20OR%201%3D1%20--",
    "file-x%0D%0AX-Injected:%201", "%ED%A0%80", "a%00b", "%00",
]


@BOTH_DATABASES
def test_bad_ids_answer_404_on_every_route(api: httpx.Client) -> None:
    for method, template in ID_ROUTES:
        for bad in BAD_IDS:
            resp = api.request(method, template.format(bad))
            error = envelope(resp)
            assert resp.status_code in (400, 404), resp.text
            if resp.status_code == 404 and error["code"] != "route_not_found":
                assert error["param"] in ("batch_id", "file_id", "request_id", "id"), resp.text
            assert "\r" not in resp.headers.get("x-injected", "")
    assert inventory(api) == (set(), set())


# ------------------------------------------------------------------------------------------------ query strings


@BOTH_DATABASES
def test_query_parameters_out_of_range_or_of_the_wrong_type(api: httpx.Client) -> None:
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [VALID_LINE]}).json()
    wait_terminal(api, [batch["id"]])
    bid = batch["id"]
    refused: list[tuple[str, dict[str, str], str]] = [
        ("/batches", {"limit": "-1"}, "limit"), ("/batches", {"limit": "0"}, "limit"),
        ("/batches", {"limit": "101"}, "limit"), ("/batches", {"limit": "abc"}, "limit"),
        ("/batches", {"limit": "1.5"}, "limit"), ("/batches", {"limit": "9" * 40}, "limit"),
        ("/batches", {"limit": ""}, "limit"), ("/batches", {"status": "bogus"}, "status"),
        ("/batches", {"status": ""}, "status"), ("/batches", {"status": "COMPLETED"}, "status"),
        ("/files", {"limit": "0"}, "limit"), ("/files", {"limit": "10001"}, "limit"),
        ("/files", {"order": "sideways"}, "order"), ("/files", {"limit": "x"}, "limit"),
        (f"/batches/{bid}/requests", {"limit": "0"}, "limit"), (f"/batches/{bid}/requests", {"limit": "1001"}, "limit"),
        (f"/batches/{bid}/requests", {"offset": "-1"}, "offset"),
        (f"/batches/{bid}/requests", {"offset": "x"}, "offset"),
        (f"/batches/{bid}/requests", {"offset": str(2**63)}, "offset"),
        (f"/batches/{bid}/requests", {"offset": "9" * 30}, "offset"),
        (f"/batches/{bid}/requests", {"status": "9" * 30}, "status"),
        (f"/batches/{bid}/requests", {"status": str(2**63)}, "status"),
        (f"/batches/{bid}/requests", {"status": "²"}, "status"),
        (f"/batches/{bid}/requests", {"status": "٤٠٤"}, "status"),
        (f"/batches/{bid}/requests", {"status": "4040"}, "status"),
        (f"/batches/{bid}/requests", {"status": "bogus"}, "status"),
        (f"/batches/{bid}/requests", {"status": ""}, "status"),
        (f"/batches/{bid}/results", {"after": "no-such-line"}, "after"),
        (f"/batches/{bid}/results", {"follow": "maybe"}, "follow"),
        ("/usage", {"days": "0"}, "days"), ("/usage", {"days": "367"}, "days"), ("/usage", {"days": "-5"}, "days"),
        ("/usage", {"days": "abc"}, "days"), ("/usage", {"days": "9" * 30}, "days"),
        ("/usage", {"tz_offset_minutes": "841"}, "tz_offset_minutes"),
        ("/usage", {"tz_offset_minutes": "-99999999999999"}, "tz_offset_minutes"),
        ("/usage", {"tz_offset_minutes": "1.5"}, "tz_offset_minutes"),
    ]
    for path, params, param in refused:
        rejected(api.get(path, params=params), 400, param=param)
    # Odd but harmless: answered normally (an unknown cursor is an empty page, as on OpenAI).
    for path, params in [("/batches", {"after": "garbage"}), ("/batches", {"after": "é😀" * 100}),
                         ("/batches", {"session_id": "x" * 5000}), ("/files", {"purpose": "nope"}),
                         ("/files", {"after": "zzz"}), ("/usage", {"session_id": "é" * 300}),
                         (f"/batches/{bid}/results", {"after": ""}), (f"/batches/{bid}/requests", {"status": "404"}),
                         ("/batches", {"unknown": "1"})]:
        resp = api.get(path, params=params)
        assert resp.status_code == 200, resp.text
    assert inventory(api)[0] == {bid}


# ------------------------------------------------------------------------------------------------ POST /v1/batches


def create_cases(file_id: str) -> list[tuple[dict[str, Any], str | None]]:
    """(body, the param the 400 must name). Each body is otherwise valid."""
    base: dict[str, Any] = {"endpoint": "/v1/chat/completions", "input_file_id": file_id}

    def with_(**fields: Any) -> dict[str, Any]:
        body = dict(base)
        for key, value in fields.items():
            if value is ...:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    cases: list[tuple[dict[str, Any], str | None]] = []
    for endpoint in [None, 1, True, [], {}, "", " ", "/v1/nope", "/v1/../v1/chat/completions", "/v1/v1/responses",
                     "\x00", "x" * 10_000, "/v1/chat/completions?x=1", "/v1/responses" + "/" * 200,
                     " " * 100 + "responses"]:
        cases.append((with_(endpoint=endpoint), "endpoint"))
    cases.append((with_(endpoint=...), "endpoint"))
    for window in ["0h", "-1h", "999999h", "1.5h", "", " ", "24H", "24", "h", "24hh", "24 h x", "1s", "0m", "10081m",
                   "169h", "9" * 30 + "h", "9" * 5000 + "h", "١٢h", "²h", 24, 24.0, True, [], {}]:
        cases.append((with_(completion_window=window), "completion_window"))
    for metadata in [[], "x", 1, True, {"a": 1}, {"a": None}, {"a": {"b": "c"}}, {"a": ["b"]},
                     {str(i): "v" for i in range(17)}, {"k" * 65: "v"}]:
        cases.append((with_(metadata=metadata), None))
    cases.append((with_(metadata={"k": "v" * 513}), "metadata.k"))
    for session in [1, True, [], {}, "", "   ", "x" * 257]:
        cases.append((with_(session_id=session), "session_id"))
    for webhook, param in [
        ("https://example.com", "webhook"), ([], "webhook"), (1, "webhook"), ({}, "webhook.url"),
        ({"url": 1}, "webhook.url"), ({"url": ""}, "webhook.url"), ({"url": "ftp://example.com/h"}, "webhook.url"),
        ({"url": "http://example.com/h"}, "webhook.url"), ({"url": "https://10.0.0.1/h"}, "webhook.url"),
        ({"url": "https://169.254.169.254/latest"}, "webhook.url"),
        ({"url": "https://[::ffff:10.0.0.1]/"}, "webhook.url"),
        ({"url": "https://0x7f000001/"}, "webhook.url"), ({"url": "https://printer.local/"}, "webhook.url"),
        ({"url": "https://[::1/"}, "webhook.url"), ({"url": "https://[zz]/"}, "webhook.url"),
        ({"url": "https://exa\x00mple.com/"}, "webhook.url"), ({"url": "https://a..b/"}, "webhook.url"),
        ({"url": "https://exa mple.com/"}, "webhook.url"), ({"url": "https://" + "a" * 70 + ".com/"}, "webhook.url"),
        ({"url": "https://example.com/" + "a" * 100_000}, "webhook.url"),
        ({"url": "javascript:alert(1)"}, "webhook.url"),
        ({"url": "https:///path"}, "webhook.url"), ({"url": "https://u:p@example.com/"}, "webhook.url"),
        ({"url": "https://example.com:99999/"}, "webhook.url"), ({"url": "https://example.com:x/"}, "webhook.url"),
        ({"url": "https://example.com/", "events": "batch.completed"}, "webhook.events"),
        ({"url": "https://example.com/", "events": []}, "webhook.events"),
        ({"url": "https://example.com/", "events": ["nope"]}, "webhook.events"),
        ({"url": "https://example.com/", "events": [1]}, "webhook.events"),
        ({"url": "https://example.com/", "secret": 1}, "webhook.secret"),
        ({"url": "https://example.com/", "secret": ""}, "webhook.secret"),
        ({"url": "https://example.com/", "secret": " padded"}, "webhook.secret"),
        ({"url": "https://example.com/", "secret": "s" * 5000}, "webhook.secret"),
        ({"url": "https://example.com/", "extra": 1}, "webhook.extra"),
    ]:
        cases.append((with_(webhook=webhook), param))
    for provider, param in [
        (1, "provider"), ([], "provider"), (True, "provider"), ({"order": "mock"}, "provider.order"),
        ({"order": [1]}, "provider.order"), ({"only": [None]}, "provider.only"), ({"ignore": {}}, "provider.ignore"),
        ({"sort": "bogus"}, "provider.sort"), ({"sort": 1}, "provider.sort"), ({"sort": ["price"]}, "provider.sort"),
        ({"allow_fallbacks": "yes"}, "provider.allow_fallbacks"), ({"allow_fallbacks": 1}, "provider.allow_fallbacks"),
        ({"nope": 1}, "provider.nope"),
    ]:
        cases.append((with_(provider=provider), param))
    for execution in [1, None, "", "NATIVE", "native", "batch", [], {}]:
        cases.append((with_(execution=execution), "execution"))
    for dry_run in ["true", 1, 0, None, [], {}]:
        cases.append((with_(dry_run=dry_run), "dry_run"))
    for policy, param in [
        (1, "output_expires_after"), ("3600", "output_expires_after"), ([], "output_expires_after"),
        ({}, "output_expires_after.anchor"), ({"anchor": "x", "seconds": 3600}, "output_expires_after.anchor"),
        ({"anchor": "created_at"}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "abc"}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 1}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2**70}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 3600.5}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": True}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "٣٦٠٠"}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "9" * 5000}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "x" * 100_000}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 3600, "x": 1}, "output_expires_after.x"),
    ]:
        cases.append((with_(output_expires_after=policy), param))
    for input_file_id in [1, True, [], {}, ""]:
        cases.append((with_(input_file_id=input_file_id), "input_file_id"))
    cases.append((with_(input_file_id=...), "input_file_id"))
    for missing in ["file-nope", "file-" + "0" * 26, "é😀", "x" * 5000, "../files/x", "\x00", "file-\x00"]:
        cases.append((with_(input_file_id=missing), "input_file_id"))
    for requests in ["x", {}, 1, True]:
        cases.append((with_(input_file_id=..., requests=requests), "requests"))
    too_deep: Any = []
    for _ in range(300):  # parses (orjson reads 1024 levels), cannot be written back as a line (255)
        too_deep = [too_deep]
    cases.append((with_(input_file_id=..., requests=[VALID_LINE, {**VALID_LINE, "x": too_deep}]), "requests[1]"))
    cases.append((with_(input_file_id=..., dry_run=True, requests=[{**VALID_LINE, "x": too_deep}]), "requests[0]"))
    cases.append((with_(requests=[VALID_LINE]), "requests"))  # both input sources
    cases.append((with_(unknown_field=1), "unknown_field"))
    cases.append((with_(**{"": 1}), ""))
    return cases


@BOTH_DATABASES
def test_create_batch_refuses_every_bad_field_and_creates_nothing(api: httpx.Client) -> None:
    file_id = upload(api, jsonl([VALID_LINE]))
    before = inventory(api)
    for body, param in create_cases(file_id):
        resp = api.post("/batches", json=body)
        if param is None:
            rejected(resp, 400)
        else:
            rejected(resp, status=404 if resp.status_code == 404 else 400, param=param)
    assert inventory(api) == before


def test_create_batch_refuses_bodies_that_are_not_a_json_object(api: httpx.Client) -> None:
    bodies: list[tuple[bytes, str | None]] = [
        (b"", "application/json"), (b" \n", "application/json"), (b"{", "application/json"),
        (b"[]", "application/json"), (b"null", "application/json"), (b'"x"', "application/json"),
        (b"1e999", "application/json"), (b"NaN", "application/json"), (b'{"endpoint": NaN}', "application/json"),
        (b'{"endpoint": "\xff"}', "application/json"), (b'{"endpoint": "\\ud800"}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"), (b'{"a":' * 5000 + b"1" + b"}" * 5000, None),
        (b"\xef\xbb\xbf{}", "application/json"), (b"\x00", "application/json"),
        (b"endpoint=x", "application/x-www-form-urlencoded"),
        (b"--xx\r\n\r\n", "multipart/form-data; boundary=xx"), (b"{}", "text/plain"), (b"{}", None),
        (b'{"endpoint": "/v1/chat/completions"} trailing', "application/json"),
        (b'{"endpoint": "/v1/chat/completions"}{"endpoint": "x"}', "application/json"),
    ]
    before = inventory(api)
    for raw, content_type in bodies:
        headers = {"Content-Type": content_type} if content_type else {}
        resp = api.post("/batches", content=raw, headers=headers)
        rejected(resp, 400)
    assert inventory(api) == before


def test_inline_requests_that_fail_validation_run_to_failed_with_line_numbers(api: httpx.Client) -> None:
    """Inline rows are a file like any other: bad rows fail the batch (line numbers and codes), no 500."""
    rows: list[Any] = [1, "x", None, [], {}, {"custom_id": 1}, {"custom_id": "a", "body": "x"},
                       {"custom_id": "b", "method": "GET", "url": "/v1/chat/completions",
                        "body": {"model": "mock/echo"}}]
    dry = api.post("/batches", json={"endpoint": "chat/completions", "requests": rows, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["valid"] is False
    assert [e["line"] for e in dry.json()["errors"]["data"]][:5] == [1, 2, 3, 4, 5]
    batch = api.post("/batches", json={"endpoint": "chat/completions", "requests": rows}).json()
    failed = wait_terminal(api, [batch["id"]])[batch["id"]]
    assert failed["status"] == "failed"
    errors = failed["errors"]["data"]
    assert {e["line"] for e in errors} == set(range(1, 9))
    assert all(e["code"] and e["message"] for e in errors)
    assert rejected(api.post("/batches", json={"endpoint": "chat/completions", "requests": [VALID_LINE] * 50_001}),
                    400, param="requests")["code"] == "too_many_tasks"
    assert inventory(api)[0] == {batch["id"]}


CREATE_FIELDS = ("endpoint", "input_file_id", "requests", "completion_window", "metadata", "session_id", "webhook",
                 "provider", "execution", "dry_run", "output_expires_after")


@BOTH_DATABASES
def test_fuzz_create_batch(api: httpx.Client) -> None:
    """A few hundred random corruptions of valid create bodies: each is refused with the envelope, or accepted
    and then runs to a terminal status; the workspace ends up holding exactly what was accepted."""
    fuzz = Fuzz(SEED)
    file_id = upload(api, jsonl([VALID_LINE, chat_line("ok2", "there")]))
    created: list[str] = []
    inline_files: set[str] = set()
    for _ in range(300):
        body: dict[str, Any] = {"endpoint": "/v1/chat/completions", "completion_window": "1h"}
        if fuzz.rng.random() < 0.5:
            body["input_file_id"] = file_id
        else:
            body["requests"] = [VALID_LINE] if fuzz.rng.random() < 0.5 else [fuzz.value() for _ in range(3)]
        for _ in range(fuzz.rng.randint(1, 3)):
            roll = fuzz.rng.random()
            if roll < 0.6:
                body[fuzz.rng.choice(CREATE_FIELDS)] = fuzz.value()
            elif roll < 0.75:
                body.pop(fuzz.rng.choice(CREATE_FIELDS), None)
            elif roll < 0.85:
                body[fuzz.string()] = fuzz.value()
            else:
                body["webhook"] = {"url": fuzz.rng.choice((fuzz.string(), "https://example.com/h")),
                                   fuzz.rng.choice(("events", "secret", "url", "x")): fuzz.value()}
        raw = json.dumps(body).encode()
        if fuzz.rng.random() < 0.2:
            raw = fuzz.mutate(raw)
        resp = api.post("/batches", content=raw, headers={"Content-Type": "application/json"})
        answered(resp)
        if resp.status_code == 200 and resp.json().get("object") == "batch":
            created.append(resp.json()["id"])
            if resp.json()["input_file_id"] != file_id:
                inline_files.add(resp.json()["input_file_id"])
    results = {f for b in wait_terminal(api, created).values() for f in (b["output_file_id"], b["error_file_id"]) if f}
    assert inventory(api) == (set(created), {file_id} | inline_files | results)



@BOTH_DATABASES
def test_fuzz_query_strings_and_ids(api: httpx.Client) -> None:
    fuzz = Fuzz(SEED + 1)
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [VALID_LINE]}).json()
    wait_terminal(api, [batch["id"]])
    routes = [("/batches", ("after", "limit", "status", "session_id")),
              ("/files", ("after", "limit", "purpose", "order")),
              (f"/batches/{batch['id']}/requests", ("limit", "offset", "status")),
              (f"/batches/{batch['id']}/results", ("after", "follow")),
              ("/usage", ("days", "tz_offset_minutes", "session_id")), ("/credits", ("x",)), ("/models", ("x",))]
    for _ in range(300):
        path, names = fuzz.rng.choice(routes)
        params = {fuzz.rng.choice(names): str(fuzz.rng.choice((fuzz.string(), fuzz.number())))[:2000]
                  for _ in range(fuzz.rng.randint(1, 3))}
        answered(api.get(path, params=params))
    for _ in range(150):
        method, template = fuzz.rng.choice(ID_ROUTES)
        bad = fuzz.string()[:2000] if fuzz.rng.random() < 0.7 else fuzz.mutate(batch["id"].encode()).decode("latin-1")
        resp = api.request(method, template.format(quote(bad, safe="%")))  # stray '%'s stay: bad escapes too
        answered(resp)
    assert inventory(api)[0] == {batch["id"]}


# ------------------------------------------------------------------------------------------------ POST /v1/files


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"xyzzy", close: bool = True) -> bytes:
    """A raw multipart body from (Content-Disposition parameters, content) pairs."""
    out = b""
    for disposition, content in parts:
        out += b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n"
        out += content + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


PURPOSE = (b'name="purpose"', b"batch")


def file_part(content: bytes, filename: bytes = b"in.jsonl") -> tuple[bytes, bytes]:
    return b'name="file"; filename="' + filename + b'"', content


def test_upload_refuses_malformed_multipart_and_stores_nothing(api: httpx.Client) -> None:
    line = jsonl([VALID_LINE])
    mp = "multipart/form-data; boundary=xyzzy"
    cases: list[tuple[bytes, str, Any]] = [
        (multipart([PURPOSE]), mp, "file"),                                            # no file part
        (multipart([file_part(line)]), mp, "purpose"),                                 # no purpose
        (multipart([(b'name="purpose"', b"nope"), file_part(line)]), mp, "purpose"),
        (multipart([(b'name="purpose"', b""), file_part(line)]), mp, "purpose"),
        (multipart([(b'name="purpose"', b"\xffbatch"), file_part(line)]), mp, "purpose"),
        (multipart([PURPOSE, file_part(line), file_part(line)]), mp, "file"),         # two files
        (multipart([PURPOSE, file_part(line)], close=False), mp, ...),                 # truncated: no closing line
        (multipart([PURPOSE, file_part(line)])[:-20], mp, ...),                        # cut inside the file
        (multipart([PURPOSE, file_part(line)])[:40], mp, ...),                         # cut inside the headers
        (b"", mp, "file"), (b"--xyzzy--\r\n", mp, "file"), (b"hello", mp, ...),
        (multipart([PURPOSE, file_part(line)]), "multipart/form-data", ...),           # no boundary
        (multipart([PURPOSE, file_part(line)]), "multipart/form-data; boundary=", ...),
        (multipart([PURPOSE, file_part(line)], boundary=b"b" * 300), "multipart/form-data; boundary=" + "b" * 300, ...),
        (multipart([PURPOSE, file_part(line)]), "multipart/form-data; boundary=other", ...),
        (multipart([(b'name="purpose"', b"b" * 100_000), file_part(line)]), mp, "purpose"),
        (b"--xyzzy\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n\r\n--xyzzy--\r\n", mp, ...),
        (b"--xyzzy\r\nContent-Disposition form-data\r\n\r\nx\r\n--xyzzy--\r\n", mp, ...),
        (multipart([PURPOSE, (b'name="expires_after[seconds]"', b"abc"), file_part(line)]), mp,
         "expires_after.anchor"),
        (multipart([PURPOSE, (b'name="expires_after[anchor]"', b"created_at"),
                    (b'name="expires_after[seconds]"', b"12"), file_part(line)]), mp, "expires_after.seconds"),
        (multipart([PURPOSE, (b'name="expires_after[anchor]"', b"created_at"),
                    (b'name="expires_after[seconds]"', b"9" * 5000), file_part(line)]), mp, "expires_after.seconds"),
        (multipart([PURPOSE, file_part(line)]), "text/plain", None),
        (multipart([PURPOSE, file_part(line)]), "application/octet-stream", None),
        (multipart([PURPOSE, file_part(line)]), "multipart/mixed; boundary=xyzzy", None),
    ]
    for body, content_type, param in cases:
        resp = api.post("/files", content=body, headers={"Content-Type": content_type})
        error = rejected(resp, param=param)
        assert resp.status_code in (400, 413), error
    assert inventory(api) == (set(), set())
    # Content types are case-insensitive.
    upper = api.post("/files", content=multipart([PURPOSE, file_part(line)]),
                     headers={"Content-Type": "Multipart/Form-Data; boundary=xyzzy"})
    assert upper.status_code == 200, upper.text
    as_json = api.post("/files", content=json.dumps({"purpose": "batch", "file": line.decode()}),
                       headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert as_json.status_code == 200, as_json.text


def test_upload_refuses_malformed_json_form_and_stores_nothing(api: httpx.Client) -> None:
    text = jsonl([VALID_LINE]).decode()
    cases: list[tuple[Any, Any]] = [
        ({"purpose": "batch"}, "file"), ({"file": text}, "purpose"), ({"purpose": "nope", "file": text}, "purpose"),
        ({"purpose": 1, "file": text}, "purpose"), ({"purpose": ["batch"], "file": text}, "purpose"),
        ({"purpose": "batch", "file": 1}, "file"), ({"purpose": "batch", "file": [text]}, "file"),
        ({"purpose": "batch", "file": None}, "file"), ({"purpose": "batch", "file": {"text": text}}, "file"),
        ({"purpose": "batch", "file": "data:application/jsonl;base64,@@@"}, "file"),
        ({"purpose": "batch", "file": "data:application/jsonl;base64," + base64.b64encode(b"x").decode()[:-1]}, "file"),
        ({"purpose": "batch", "file": "data:application/jsonl;base64"}, "file"),
        ({"purpose": "batch", "file": text, "expires_after": 3600}, "expires_after"),
        ({"purpose": "batch", "file": text, "expires_after": {"anchor": "created_at", "seconds": "x"}},
         "expires_after.seconds"),
        ({"purpose": "batch", "file": text, "expires_after": {"anchor": "created_at", "seconds": 10**40}},
         "expires_after.seconds"),
    ]
    for body, param in cases:
        rejected(api.post("/files", json=body), 400, param=param)
    for raw in [b"", b"{", b"[]", b"null", b'{"purpose": "batch", "file": "\\ud800"}', b'{"file": NaN}', b"\xff"]:
        rejected(api.post("/files", content=raw, headers={"Content-Type": "application/json"}), 400)
    assert inventory(api) == (set(), set())



def test_oversized_uploads_answer_413_and_store_nothing(api: httpx.Client) -> None:
    big = b"x" * 12_500_000
    body = multipart([PURPOSE, file_part(big)])
    mp = {"Content-Type": "multipart/form-data; boundary=xyzzy"}
    assert rejected(api.post("/files", content=body, headers=mp), 413)["code"] == "file_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must cut the stream itself
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]

    assert rejected(api.post("/files", content=chunked(), headers=mp), 413)["param"] == "file"
    as_json = json.dumps({"purpose": "batch", "file": big.decode()})
    rejected(api.post("/files", content=as_json, headers={"Content-Type": "application/json"}), 413)
    assert inventory(api) == (set(), set())


ODD_NAMES = ["../../etc/passwd", "a/b\\c.jsonl", "é€😀.jsonl", "x" * 2000 + ".jsonl", 'quote"d.jsonl',
             "semi;colon=1.jsonl", "tab\tname.jsonl", "new\r\nline: x.jsonl", "nul\x00.jsonl", "\u202eldnoj.exe",
             " ", ".", "..", "%2e%2e", "\U0001f600" * 300]


@BOTH_DATABASES
def test_odd_filenames_are_stored_and_downloadable(api: httpx.Client) -> None:
    """Whatever the name, the upload is kept and its content downloads with a well-formed Content-Disposition."""
    data = jsonl([VALID_LINE])
    stored: list[tuple[str, str]] = []
    for name in ODD_NAMES:
        resp = api.post("/files", json={"purpose": "batch", "file": data.decode(), "filename": name})
        if resp.status_code != 200:
            rejected(resp, 400, param="filename")
            continue
        stored.append((resp.json()["id"], resp.json()["filename"]))
    raw_names = [b"caf\xe9.jsonl", b"\xff\xfe.jsonl", "日本語.jsonl".encode(), b"a\\\"b.jsonl"]
    for raw_name in raw_names:  # multipart filenames as raw bytes (latin-1, invalid UTF-8, UTF-8)
        resp = api.post("/files", content=multipart([PURPOSE, file_part(data, raw_name)]),
                        headers={"Content-Type": "multipart/form-data; boundary=xyzzy"})
        assert resp.status_code == 200, resp.text
        stored.append((resp.json()["id"], resp.json()["filename"]))
    assert len(stored) >= len(raw_names) + len(ODD_NAMES) - 2
    for file_id, _name in stored:
        content = api.get(f"/files/{file_id}/content")
        assert content.status_code == 200 and content.content == data, content.text
        disposition = content.headers["content-disposition"]
        assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition, disposition
        assert disposition.startswith("attachment; filename=\""), disposition
        listed = api.get(f"/files/{file_id}").json()
        assert listed["id"] == file_id and listed["bytes"] == len(data)


# ------------------------------------------------------------------------------------------------ input files


def raw_line(custom_id: Any = "a", **fields: Any) -> bytes:
    line: dict[str, Any] = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}}
    line.update(fields)
    return json.dumps(line).encode()


def body_line(custom_id: str, raw_body: bytes) -> bytes:
    return b'{"custom_id": "' + custom_id.encode() + b'", "method": "POST", "url": "/v1/chat/completions", ' \
           b'"body": ' + raw_body + b"}"


def nested(depth: int) -> bytes:
    return b'{"model": "mock/echo", "messages": ' + b"[" * depth + b"]" * depth + b"}"


# (file content, "completed" with its line count, or the (line, code, param) errors the failed batch lists)
INPUT_FILES: dict[str, tuple[bytes, int | list[tuple[int | None, str, str | None]]]] = {
    "deep nesting orjson cannot parse": (body_line("d", nested(5000)), [(1, "invalid_json_line", None)]),
    "deep nesting orjson cannot write": (raw_line("a") + b"\n" + body_line("d", nested(300)),
                                         [(2, "invalid_value", "body")]),
    "deep nesting within limits": (body_line("d", nested(200)), 1),
    "integer beyond double": (body_line("h", b'{"model": "mock/echo", "max_tokens": 1' + b"0" * 400 + b"}"),
                              [(1, "invalid_json_line", None)]),
    "NaN": (body_line("n", b'{"model": "mock/echo", "temperature": NaN}'), [(1, "invalid_json_line", None)]),
    "Infinity": (body_line("n", b'{"model": "mock/echo", "temperature": -Infinity}'),
                 [(1, "invalid_json_line", None)]),
    "lone surrogate in custom_id": (raw_line("x").replace(b'"x"', b'"\\ud800"'), [(1, "invalid_json_line", None)]),
    "lone surrogate in body": (body_line("s", b'{"model": "mock/echo", "messages": "\\udfff"}'),
                               [(1, "invalid_json_line", None)]),
    "raw NUL byte": (raw_line("a") + b"\x00\n" + raw_line("b"), [(1, "invalid_json_line", None)]),
    "escaped NUL in custom_id": (raw_line("a\x00b") + b"\n" + raw_line("c"), [(1, "invalid_value", "custom_id")]),
    "escaped NUL in the body": (raw_line("a", body={"model": "mock/echo", "messages": [
        {"role": "user", "content": "x\x00y"}]}), 1),
    "CR-only line endings": (raw_line("a") + b"\r" + raw_line("b") + b"\r", [(1, "invalid_json_line", None)]),
    "CRLF line endings": (raw_line("a") + b"\r\n" + raw_line("b") + b"\r\n", 2),
    "BOM": (b"\xef\xbb\xbf" + raw_line("a"), 1),
    "BOM on line 2": (raw_line("a") + b"\n\xef\xbb\xbf" + raw_line("b"), [(2, "invalid_json_line", None)]),
    "UTF-16": ((raw_line("a") + b"\n").decode().encode("utf-16"), [(1, "invalid_json_line", None),
                                                                    (2, "invalid_json_line", None)]),
    "invalid UTF-8": (raw_line("a") + b"\n" + raw_line("\udcff", ).replace(b'"\\udcff"', b'"\xff\xfe"'),
                      [(2, "invalid_json_line", None)]),
    "duplicate keys (last wins)": (b'{"custom_id": "a", "custom_id": "b", "method": "POST", "url": '
                                   b'"/v1/chat/completions", "body": {"model": "nope"}, '
                                   b'"body": {"model": "mock/echo"}}', 1),
    "custom_id of every wrong type": (b"\n".join(raw_line(c) for c in (1, None, True, [], {}, 1.5, "", "x" * 513)), [
        (1, "invalid_type", "custom_id"), (2, "missing_required_parameter", "custom_id"),
        (3, "invalid_type", "custom_id"), (4, "invalid_type", "custom_id"), (5, "invalid_type", "custom_id"),
        (6, "invalid_type", "custom_id"), (7, "missing_required_parameter", "custom_id"),
        (8, "invalid_value", "custom_id")]),
    "body not an object": (b"\n".join(raw_line(c, body=b) for c, b in (("a", "x"), ("b", []), ("c", None), ("d", 1))),
                           [(1, "invalid_type", "body"), (2, "invalid_type", "body"),
                            (3, "missing_required_parameter", "body"), (4, "invalid_type", "body")]),
    "url and method mismatches": (b"\n".join([raw_line("a", url="/v1/embeddings"), raw_line("b", url=1),
                                              raw_line("c", url=""), raw_line("d", url="/v1/chat/completions/../x"),
                                              raw_line("e", method="GET"), raw_line("f", method=1),
                                              raw_line("g", method=None)]),
                                  [(1, "url_mismatch", "url"), (2, "missing_required_parameter", "url"),
                                   (3, "missing_required_parameter", "url"), (4, "url_mismatch", "url"),
                                   (5, "invalid_method", "method"), (6, "invalid_method", "method"),
                                   (7, "missing_required_parameter", "method")]),
    "model of wrong types": (b"\n".join(raw_line(c, body={"model": m}) for c, m in (
        ("a", 1), ("b", ""), ("c", "nope/x"), ("d", ["mock/echo"]), ("e", "mock/echo\x00"))),
        [(1, "missing_required_parameter", "body.model"), (2, "missing_required_parameter", "body.model"),
         (3, "model_not_found", "body.model"), (4, "missing_required_parameter", "body.model"),
         (5, "invalid_value", "body.model")]),
    "stream true": (raw_line("a", body={"model": "mock/echo", "stream": True}), [(1, "invalid_value", "body.stream")]),
    "not objects": (b"[1, 2]\n\"x\"\nnull\n42\n" + raw_line("a"), [(1, "invalid_json_line", None),
                    (2, "invalid_json_line", None), (3, "invalid_json_line", None), (4, "invalid_json_line", None)]),
    "trailing garbage": (raw_line("a") + b" x", [(1, "invalid_json_line", None)]),
    "blank lines only": (b"\n\n   \n\t\n", [(None, "empty_file", None)]),
    "empty": (b"", [(None, "empty_file", None)]),
    "whitespace around lines": (b"  \t" + raw_line("a") + b"  \n\n" + raw_line("b"), 2),
    "absurd max_tokens and n": (b"\n".join(raw_line(f"m{i}", body={"model": "mock/echo", "max_tokens": 2**62,
                                                                    "n": 2**40, "messages": [{"role": "user",
                                                                                              "content": "x"}]})
                                           for i in range(3)), 3),
    "odd field types the provider answers": (b"\n".join(raw_line(f"o{i}", body={"model": "mock/echo", **fields})
                                                        for i, fields in enumerate([
                                                            {"messages": 1}, {"messages": "hi"}, {"messages": {}},
                                                            {"messages": [1, None]}, {"max_tokens": "10"},
                                                            {"max_tokens": -5}, {"temperature": "hot"},
                                                            {"messages": [{"role": 1, "content": {"a": 1}}]}])), 8),
}


# What the message of the first error must mention, beyond OpenAI's "not parseable as valid JSON".
HINTS = {"CR-only line endings": "carriage return", "UTF-16": "UTF-16", "NaN": "NaN and Infinity",
         "Infinity": "NaN and Infinity", "lone surrogate in body": "surrogate", "trailing garbage": "after document",
         "deep nesting orjson cannot write": "255 levels"}


@BOTH_DATABASES
def test_nasty_input_files_fail_validation_with_line_numbers_or_run(api: httpx.Client) -> None:
    batches: dict[str, str] = {}
    for name, (content, _expected) in INPUT_FILES.items():
        file_id = upload(api, content)
        dry = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "dry_run": True})
        assert dry.status_code == 200, f"{name}: {dry.text[:300]}"
        resp = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        assert resp.status_code == 200, f"{name}: {resp.text[:300]}"
        batches[name] = resp.json()["id"]
    done = wait_terminal(api, list(batches.values()))
    for name, (_content, expected) in INPUT_FILES.items():
        batch = done[batches[name]]
        if isinstance(expected, int):
            assert batch["status"] == "completed", f"{name}: {batch['status']} {batch['errors']}"
            assert batch["request_counts"]["total"] == expected, name
            lines = api.get(f"/files/{batch['output_file_id']}/content").content.splitlines()
            errors = api.get(f"/files/{batch['error_file_id']}/content").content.splitlines() \
                if batch["error_file_id"] else []
            assert len(lines) + len(errors) == expected, name  # every line exactly once, none internal_error
            assert b"internal_error" not in b"".join(errors), f"{name}: {errors}"
            continue
        assert batch["status"] == "failed", f"{name}: {batch['status']}"
        listed = batch["errors"]["data"]
        assert [(e["line"], e["code"], e["param"]) for e in listed] == expected, f"{name}: {listed}"
        assert all(e["message"] for e in listed), name
        if name in HINTS:
            assert HINTS[name] in listed[0]["message"], f"{name}: {listed[0]['message']}"


def test_a_10_mb_line_runs_and_10_mb_of_garbage_fails_on_line_1(api: httpx.Client) -> None:
    big = raw_line("big", body={"model": "mock/echo", "messages": [{"role": "user", "content": "x" * 10_000_000}]})
    ok = api.post("/batches", json={"endpoint": "chat/completions",
                                    "input_file_id": upload(api, big + b"\n" + raw_line("small"))})
    garbage = api.post("/batches", json={"endpoint": "chat/completions",
                                         "input_file_id": upload(api, b"x" * 10_000_000)})
    done = wait_terminal(api, [ok.json()["id"], garbage.json()["id"]], timeout=60)
    assert done[ok.json()["id"]]["request_counts"].items() >= {"total": 2, "completed": 2, "failed": 0}.items()
    failed = done[garbage.json()["id"]]
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["line"] == 1
    assert len(failed["errors"]["data"][0]["message"]) < 500  # says what is wrong without echoing the line


def test_absurd_output_caps_are_priced_without_overflow(gw: Gateway, api: httpx.Client) -> None:
    """max_tokens=2**62 on a priced model: the estimate used to overflow 64 bits (a dry run and a 402 answered 500,
    and an unlimited workspace's ingest failed on every retry, the batch stuck in validating)."""
    rows = [chat_line(f"m{i}", "x", max_tokens=2**62, n=2**40) for i in range(3)]
    dry = api.post("/batches", json={"endpoint": "chat/completions", "requests": rows, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["estimated_nanos"] < 2**63, dry.text[:300]
    workspace = "fuzz-credit"
    key = gw.new_key(workspace)
    subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "credits", "grant", "--usd", "5",
                    "--workspace", workspace], env=gw.env, capture_output=True, check=True)
    with gw.client(key) as limited:
        refused = limited.post("/batches", json={"endpoint": "chat/completions", "requests": rows})
        error = rejected(refused, 402, code="insufficient_funds")
        assert error["estimated_nanos"] < 2**63 and inventory(limited) == (set(), set())
        assert limited.get("/credits").json()["held_nanos"] == 0



# ------------------------------------------------------------------------------------------------ the WebSocket


def ws_refusal(gateway: Gateway, path: str, headers: dict[str, str] | None = None,
               subprotocols: list[str] | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP answer refusing a WebSocket handshake: (status, error object of the envelope)."""
    with pytest.raises(InvalidStatus) as denied:
        connect(f"ws://127.0.0.1:{gateway.port}{path}", additional_headers=headers or {},
                subprotocols=subprotocols, open_timeout=10)  # type: ignore[arg-type]
    response = denied.value.response
    body = json.loads(bytes(response.body or b"{}"))
    assert response.status_code < 500 and body["error"]["message"] and body["request_id"], body
    return response.status_code, body["error"]


def test_websocket_refusals(gw: Gateway, api: httpx.Client) -> None:
    batch = api.post("/batches", json={"endpoint": "chat/completions", "requests": [VALID_LINE]}).json()
    wait_terminal(api, [batch["id"]])
    auth = {"Authorization": api.headers["Authorization"]}
    ok = f"/v1/async/batch/{batch['id']}/ws"
    for headers, protocols in [(None, None), ({"Authorization": "Bearer nope"}, None),
                               ({"Authorization": "Basic x"}, None), ({"Authorization": "Bearer"}, None),
                               (None, ["bearer."]), (None, ["aistats.v1"]), (None, ["aistats.v1", "bearer.nope"]),
                               ({"Authorization": "Bearer nope"}, ["bearer." + auth["Authorization"][7:]])]:
        status, _ = ws_refusal(gw, ok, headers, protocols)
        assert status == 401
    cases: list[tuple[str, int, str | None]] = [
        ("/v1/async/bogus/x/ws", 400, "kind"), ("/v1/async/batch/nope/ws", 404, "id"),
        ("/v1/async/batch/%F0%9F%98%80/ws", 404, "id"), ("/v1/async/batch/%FF/ws", 404, "id"),
        ("/v1/async/batch/" + "x" * 4000 + "/ws", 404, "id"),
        (ok + "?interval_ms=abc", 400, "interval_ms"), (ok + "?interval_ms=1.5", 400, "interval_ms"),
        (ok + "?interval_ms=", 0, None), (ok + "?close_on_terminal=maybe", 400, "close_on_terminal"),
    ]
    for path, expected, param in cases:
        if expected == 0:  # accepted: a snapshot, then the close of a terminal batch
            with connect(f"ws://127.0.0.1:{gw.port}{path}", additional_headers=auth, open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
            continue
        status, error = ws_refusal(gw, path, auth)
        assert (status, error["param"]) == (expected, param), error
    for interval in ("-1", "0", str(2**70), "99999999999"):  # clamped, not refused
        with connect(f"ws://127.0.0.1:{gw.port}{ok}?interval_ms={interval}", additional_headers=auth,
                     open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
    plain = api.get(f"/async/batch/{batch['id']}/ws")  # no upgrade: 426 before anything else
    assert rejected(plain, 426)["code"] == "websocket_upgrade_required"


# ------------------------------------------------------------------------------------------------ NUL characters


def nul_characters_are_refused_before_the_database(gateway: Gateway, api: httpx.Client) -> None:
    """SQLite stores NUL in text; PostgreSQL refuses it in the driver, which answered 500 for a NUL in a path,
    query parameter, session_id or filename and failed every ingest retry for one in a custom_id."""
    batch = api.post("/batches", json={"endpoint": "chat/completions", "requests": [VALID_LINE]}).json()
    wait_terminal(api, [batch["id"]])
    bid = batch["id"]
    for method, template in ID_ROUTES:
        for bad in ("a%00b", "%00", batch["id"] + "%00"):
            rejected(api.request(method, template.format(bad)), 400, param=None, code="invalid_character")
    for path, params in [("/batches", {"after": "a\x00b"}), ("/batches", {"session_id": "\x00"}),
                         ("/batches", {"status": "completed\x00"}), ("/files", {"after": "\x00"}),
                         ("/files", {"purpose": "batch\x00"}), ("/usage", {"session_id": "s\x00"}),
                         (f"/batches/{bid}/results", {"after": "ok\x00"}),
                         (f"/batches/{bid}/requests", {"status": "\x00"})]:
        name = next(iter(params))
        rejected(api.get(path, params=params), 400, param=name, code="invalid_character")
    create = {"endpoint": "chat/completions", "requests": [VALID_LINE]}
    rejected(api.post("/batches", json={**create, "session_id": "a\x00b"}), 400, param="session_id")
    rejected(api.post("/batches", json={**create, "webhook": {"url": "https://example.com/\x00"}}), 400,
             param="webhook.url")
    text = jsonl([VALID_LINE]).decode()
    rejected(api.post("/files", json={"purpose": "batch", "file": text, "filename": "a\x00b.jsonl"}), 400,
             param="filename")
    rejected(api.post("/files", json={"purpose": "batch", "file": text, "filename": 7}), 400, param="filename")
    rejected(api.post("/files", content=multipart([PURPOSE, file_part(text.encode(), b"a\x00b.jsonl")]),
                      headers={"Content-Type": "multipart/form-data; boundary=xyzzy"}), 400, param="filename")
    accepted = [bid]
    for extra in ({"metadata": {"k": "a\x00b"}}, {"webhook": {"url": "http://127.0.0.1:9/h", "secret": "s\x00"}}):
        resp = api.post("/batches", json={**create, **extra})
        answered(resp)
        if resp.status_code == 200:
            accepted.append(resp.json()["id"])
    bad_line = api.post("/batches", json={"endpoint": "chat/completions",
                                          "requests": [chat_line("a\x00b", "x"), chat_line("ok", "x\x00y")]})
    assert bad_line.status_code == 200, bad_line.text
    accepted.append(bad_line.json()["id"])
    done = wait_terminal(api, accepted)
    failed = done[bad_line.json()["id"]]
    assert failed["status"] == "failed"
    assert [(e["line"], e["code"], e["param"]) for e in failed["errors"]["data"]] == [(1, "invalid_value", "custom_id")]
    with pytest.raises(InvalidStatus) as denied:
        connect(f"ws://127.0.0.1:{gateway.port}/v1/async/batch/a%00b/ws",
                additional_headers={"Authorization": api.headers["Authorization"]}, open_timeout=10)
    assert denied.value.response.status_code in (400, 404)
    assert inventory(api)[0] == set(accepted)


def values_longer_than_their_columns_are_refused_or_normalized(api: httpx.Client) -> None:
    """SQLite ignores VARCHAR lengths; PostgreSQL refuses a longer value in the driver (a 500 on create, or an
    ingest failing on every retry). Every stored value a caller controls is now bounded or normalized first."""
    window = api.post("/batches", json={"endpoint": "chat/completions", "requests": [VALID_LINE],
                                        "completion_window": "00000000024" + " " * 20 + "h"})
    assert window.status_code == 200 and window.json()["completion_window"] == "24h", window.text
    long_model = api.post("/batches", json={"endpoint": "chat/completions", "requests": [
        chat_line("a", "x", model="wild/" + "m" * 300), chat_line("b", "x", model="wild/ok")]})
    assert long_model.status_code == 200, long_model.text
    done = wait_terminal(api, [window.json()["id"], long_model.json()["id"]])
    failed = done[long_model.json()["id"]]
    errors = [(e["line"], e["code"], e["param"]) for e in failed["errors"]["data"]]
    assert errors == [(1, "invalid_value", "body.model")]
    for endpoint in ("/v1/responses" + "/" * 200, " " * 120 + "responses"):
        rejected(api.post("/batches", json={"endpoint": endpoint, "requests": [VALID_LINE]}), 400, param="endpoint")
    assert inventory(api)[0] == {window.json()["id"], long_model.json()["id"]}


def test_long_values_sqlite(api: httpx.Client) -> None:
    values_longer_than_their_columns_are_refused_or_normalized(api)


def test_long_values_postgresql(pg_api: httpx.Client) -> None:
    values_longer_than_their_columns_are_refused_or_normalized(pg_api)


def test_nul_characters_sqlite(gw: Gateway, api: httpx.Client) -> None:
    nul_characters_are_refused_before_the_database(gw, api)


def test_nul_characters_postgresql(pg_gw: Gateway, pg_api: httpx.Client) -> None:
    nul_characters_are_refused_before_the_database(pg_gw, pg_api)


# ------------------------------------------------------------------------------------------------ half-created work


def test_a_create_that_fails_after_storing_its_inline_rows_leaves_no_file(tmp_path: Path) -> None:
    """Inline `requests` are stored as a file before the batch row; any failure after that (here the batch
    insert itself) must take the file away again. Only the InsufficientFunds and native refusals did."""
    from aistats_gateway.clock import SystemClock

    server = InProcessGateway(tmp_path / "data", SystemClock())
    try:
        store = server.server.config.app.state.gateway.store

        async def broken_insert(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the batch insert failed")

        store.batches.insert = broken_insert
        with server.client() as api:
            resp = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [VALID_LINE]})
            assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal_error"  # a storage fault
        with server.client() as api:
            assert inventory(api) == (set(), set())
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ more fuzz


def test_fuzz_uploads(api: httpx.Client) -> None:
    """Corrupted multipart bodies and JSON forms: refused, or stored exactly as the answer says."""
    fuzz = Fuzz(SEED + 2)
    data = jsonl([VALID_LINE, chat_line("ok2", "there")])
    whole = multipart([PURPOSE, (b'name="expires_after[anchor]"', b"created_at"),
                       (b'name="expires_after[seconds]"', b"3600"), file_part(data)])
    stored: dict[str, int] = {}
    for i in range(400):
        if i % 2:
            body = fuzz.mutate(whole)
            for _ in range(fuzz.rng.randint(0, 2)):
                body = fuzz.mutate(body)
            content_type = "multipart/form-data; boundary=" + fuzz.rng.choice(("xyzzy", "xyzzy", "xyz", "", '"xyzzy"'))
            resp = api.post("/files", content=body, headers={"Content-Type": content_type})
        else:
            form: dict[str, Any] = {"purpose": "batch", "file": data.decode(), "filename": "in.jsonl"}
            for _ in range(fuzz.rng.randint(1, 3)):
                form[fuzz.rng.choice(("purpose", "file", "filename", "expires_after", fuzz.string()))] = fuzz.value()
            if fuzz.rng.random() < 0.3:
                form["file"] = "data:application/jsonl;base64," + fuzz.rng.choice(
                    (base64.b64encode(data).decode(), fuzz.string(), base64.b64encode(data).decode()[:-3]))
            raw = json.dumps(form).encode()
            resp = api.post("/files", content=fuzz.mutate(raw) if fuzz.rng.random() < 0.3 else raw,
                            headers={"Content-Type": "application/json"})
        answered(resp)
        if resp.status_code == 200:
            stored[resp.json()["id"]] = resp.json()["bytes"]
    assert stored, "no corrupted upload was accepted: the generator lost its way"
    assert ids_of(api, "/files") == set(stored)
    for file_id, size in list(stored.items())[:40]:
        assert len(api.get(f"/files/{file_id}/content").content) == size


def test_fuzz_input_lines(api: httpx.Client) -> None:
    """Files of random and corrupted lines: each batch ends failed with every listed error on a real line with
    a code and a message, or completed with every line in exactly one of its result files."""
    fuzz = Fuzz(SEED + 3)
    valid = [raw_line(f"v{i}") for i in range(5)]
    batch_lines: dict[str, int] = {}
    for b in range(8):
        lines: list[bytes] = []
        for n in range(40):
            roll = fuzz.rng.random() if b < 5 else 0.45  # the last three keep every line valid: they run
            if roll < 0.3:
                lines.append(fuzz.mutate(fuzz.rng.choice(valid)).replace(b"\n", b" "))
            elif roll < 0.6:
                body = {"model": "mock/echo", "messages": [{"role": "user", "content": "x"}],
                        fuzz.string(): fuzz.value(), fuzz.rng.choice(("max_tokens", "messages", "n", "stream")):
                        fuzz.value()}
                lines.append(raw_line(f"f{n}", body=body))
            elif roll < 0.8:
                line = json.loads(raw_line(f"g{n}"))
                line[fuzz.rng.choice(("custom_id", "method", "url", "body"))] = fuzz.value()
                lines.append(json.dumps(line).encode())
            else:
                lines.append(json.dumps(fuzz.value()).encode())
        content = b"\n".join(lines)
        resp = api.post("/batches", json={"input_file_id": upload(api, content), "endpoint": "/v1/chat/completions"})
        assert resp.status_code == 200, resp.text
        batch_lines[resp.json()["id"]] = len(content.split(b"\n"))
    outcomes = []
    for batch_id, physical in batch_lines.items():
        batch = wait_terminal(api, [batch_id])[batch_id]
        outcomes.append(batch["status"])
        if batch["status"] == "failed":
            for error in batch["errors"]["data"]:
                assert error["code"] and error["message"], error
                assert error["line"] is None or 1 <= error["line"] <= physical, error
        else:
            assert batch["status"] == "completed"
            out = api.get(f"/files/{batch['output_file_id']}/content").content.splitlines() \
                if batch["output_file_id"] else []
            err = api.get(f"/files/{batch['error_file_id']}/content").content.splitlines() \
                if batch["error_file_id"] else []
            assert len(out) + len(err) == batch["request_counts"]["total"]
            assert b"internal_error" not in b"".join(err)
    assert "failed" in outcomes and "completed" in outcomes, outcomes
