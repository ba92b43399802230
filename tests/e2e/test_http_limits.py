"""What one HTTP client can hold on to, over real sockets against `aistats serve` subprocesses: the size
and read deadline of a request head, a body that stops arriving, uploads at once, the memory of a JSON
upload, a full disk, temporaries left by a killed writer, and what gets logged (issue 14: 6, 7, 11, 12, 15)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.harness import Gateway, chat_line, jsonl

KEY = "sk-test-default"
MP = "multipart/form-data; boundary=xyzzy"


def raw_connection(gw: Gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at `deadline`."""
    got = b""
    while True:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection is still open; received so far: {got[:300]!r}") from None
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def upload_head(length: int) -> bytes:
    return (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: {MP}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + \
        b'--xyzzy\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' \
        b'--xyzzy\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'


def temporaries(gw: Gateway) -> list[Path]:
    return [p for p in (gw.data_dir / "blobs").rglob(".*.tmp")]


def wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def errors_logged(gw: Gateway) -> list[str]:
    return [line[:400] for line in gw.log.read_text().splitlines()
            if '"level": "error"' in line or "Traceback" in line or '"level": "critical"' in line]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = ("[limits]\nheader_timeout_seconds = 2\nbody_timeout_seconds = 2\nmax_concurrent_uploads = 2\n"
              "max_header_bytes = 32768\n")
    gateway = Gateway(tmp_path_factory.mktemp("limits") / "data", config=config, log_level="info")
    yield gateway
    gateway.stop()


# ------------------------------------------------------------------------------------------- 6: the request head


def test_a_request_head_over_the_limit_is_refused_431_before_it_is_buffered(gw: Gateway) -> None:
    with raw_connection(gw) as sock:  # (not more: what the server never reads would reset the connection)
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
        answer = read_until_closed(sock, time.monotonic() + 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_header_too_large"
    # A head just under the limit is fine.
    ok = httpx.get(f"{gw.base_url}/health", headers={"X-Big": "a" * 30_000})
    assert ok.status_code == 200


def test_a_dribbled_or_silent_head_is_cut_off_at_the_deadline(gw: Gateway) -> None:
    silent = raw_connection(gw)
    with raw_connection(gw) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() < started + 20:  # a header line every 0.3 s would go on forever
            try:
                sock.sendall(b"X-A: b\r\n")
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        answer += read_until_closed(sock, time.monotonic() + 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_header_timeout"
    assert time.monotonic() - started < 15
    with silent:
        assert read_until_closed(silent, time.monotonic() + 10).startswith(b"HTTP/1.1 408 ")


# --------------------------------------------------------------------------- 6: bodies that stall, uploads at once


def test_a_stalled_upload_is_abandoned_408_and_leaves_no_temporary(gw: Gateway) -> None:
    with raw_connection(gw) as sock:
        sock.sendall(upload_head(1_000_000) + b'{"x": 1}\n' * 500)
        answer = read_until_closed(sock, time.monotonic() + 20)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and "body_timeout_seconds" in error["message"]
    wait_for(lambda: not temporaries(gw), "the partial blob to be removed")


def test_uploads_at_once_are_bounded_with_a_503_naming_the_limit(gw: Gateway) -> None:
    stalled = [raw_connection(gw) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(upload_head(1_000_000) + b'{"x": 1}\n' * 10)
        wait_for(lambda: len(temporaries(gw)) == 2, "two uploads to be streaming")
        with gw.client() as api:
            refused = api.post("/files", files={"file": ("a.jsonl", jsonl([chat_line("a", "x")]))},
                               data={"purpose": "batch"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5"
            error = refused.json()["error"]
            assert error["code"] == "too_many_uploads" and "max_concurrent_uploads = 2" in error["message"]
    finally:
        for sock in stalled:
            sock.close()
    with gw.client() as api:  # the disconnected uploads released their slots
        wait_for(lambda: api.post("/files", content=json.dumps({"purpose": "batch", "file": "{}\n"}),
                                  headers={"Content-Type": "application/json"}).status_code == 200,
                 "an upload to be accepted again")
    wait_for(lambda: not temporaries(gw), "the partial blobs to be removed")


# ------------------------------------------------------------------------------------------- 15: log noise, Host


def test_a_client_leaving_mid_upload_is_not_logged_as_an_error(gw: Gateway) -> None:
    with raw_connection(gw) as sock:
        sock.sendall(upload_head(1_000_000) + b'{"x": 1}\n' * 500)
        wait_for(lambda: temporaries(gw), "the upload to start")
    wait_for(lambda: not temporaries(gw), "the partial blob to be removed")
    wait_for(lambda: "client disconnected" in gw.log.read_text() or errors_logged(gw), "the disconnect to be logged")
    assert errors_logged(gw) == []
    assert "client disconnected before sending the whole body of POST /v1/files" in gw.log.read_text()


def test_a_trailing_slash_is_a_404_and_never_reflects_the_host(gw: Gateway) -> None:
    for path in ("/v1/files/", "/v1/batches/", "/v1/health/"):
        with raw_connection(gw) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode())
            answer = read_until_closed(sock, time.monotonic() + 10)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 404 ") and b"evil.example" not in answer, answer[:300]
        assert "trailing slash" in json.loads(body)["error"]["message"]
    ui = httpx.get(f"http://127.0.0.1:{gw.port}/ui", headers={"Host": "evil.example"})
    assert ui.status_code == 308 and ui.headers["location"] == "ui/"  # the dashboard's own redirect is relative


def test_a_websocket_refused_for_a_storage_fault_is_answered_not_logged_as_an_error(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "data", log_level="info")
    try:
        with sqlite3.connect(gw.data_dir / "gateway.db") as db:  # a real storage fault: the key table is gone
            db.execute("ALTER TABLE api_keys RENAME TO api_keys_moved")
        with pytest.raises(InvalidStatus) as denied:
            connect(f"ws://127.0.0.1:{gw.port}/v1/async/batch/b/ws", open_timeout=10,
                    additional_headers={"Authorization": "Bearer sk-not-cached"})
        response = denied.value.response
        assert response.status_code == 503, response
        assert json.loads(bytes(response.body or b"{}"))["error"]["code"] == "storage_unavailable"
        time.sleep(0.5)
        assert errors_logged(gw) == []
    finally:
        gw.stop()


# -------------------------------------------------------------------------------- 7: the JSON form, in memory


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_large_json_form_upload_streams_in_constant_memory(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "data")
    try:
        line = jsonl([chat_line("c", "é€😀 \"quoted\" \\ back\tslash " + "x" * 900)])
        escaped = json.dumps(line.decode())[1:-1].encode()  # as the SDK sends it: \" \\ \n \t, UTF-8 kept
        copies = 100_000_000 // len(line)
        head = b'{"purpose": "batch", "filename": "big.jsonl", "file": "'

        def body() -> Iterator[bytes]:
            yield head
            block = escaped * 256
            for _ in range(copies // 256):
                yield block
            yield escaped * (copies % 256) + b'"}'

        with gw.client(timeout=300) as api:
            assert api.post("/files", json={"purpose": "batch", "file": line.decode()}).status_code == 200  # warm
            before = vm_kib(gw.proc.pid, "VmHWM")
            resp = api.post("/files", content=body(), headers={"Content-Type": "application/json"})
            grew_mib = (vm_kib(gw.proc.pid, "VmHWM") - before) / 1024
            assert resp.status_code == 200, resp.text[:500]
            assert resp.json()["bytes"] == copies * len(line)
            digest = hashlib.sha256()
            with api.stream("GET", f"/files/{resp.json()['id']}/content") as content:
                for chunk in content.iter_bytes():
                    digest.update(chunk)
            expected = hashlib.sha256()
            for _ in range(copies):
                expected.update(line)
            assert digest.hexdigest() == expected.hexdigest()
        # Parsed whole, a 100 MB upload raised the peak by ~250 MiB; streamed, by a few buffers.
        assert grew_mib < 48, f"the peak RSS grew by {grew_mib:.0f} MiB for a {copies * len(line) / 1e6:.0f} MB upload"
    finally:
        gw.stop()


# --------------------------------------------------------------------------------------------- 11: a full disk


def test_an_upload_on_a_full_disk_answers_507_and_leaves_nothing(tmp_path: Path) -> None:
    blobs = tmp_path / "data" / "blobs"
    blobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(blobs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    gw = None
    try:
        gw = Gateway(tmp_path / "data")
        big = jsonl([chat_line(f"f{i}", "z" * 1000) for i in range(3000)])  # ~3.3 MB: cannot fit in 2 MiB
        with gw.client() as api:
            for resp in (api.post("/files", files={"file": ("a.jsonl", big)}, data={"purpose": "batch"}),
                         api.post("/files", json={"purpose": "batch", "file": big.decode()}),
                         api.post("/files", json={"purpose": "batch",
                                                  "file": "data:;base64," + base64.b64encode(big).decode()})):
                assert resp.status_code == 507, resp.text[:300]
                error = resp.json()["error"]
                assert error["code"] == "insufficient_storage" and "full" in error["message"], error
                assert list(blobs.rglob("*.tmp")) == [] and api.get("/files").json()["data"] == []
            small = api.post("/files", files={"file": ("s.jsonl", jsonl([chat_line("s", "x")]))},
                             data={"purpose": "batch"})
            assert small.status_code == 200, small.text  # the space was given back
        assert errors_logged(gw) == []
    finally:
        if gw is not None:
            gw.stop()
        subprocess.run(["umount", "-l", str(blobs)], check=False)


# ------------------------------------------------------------------------------- 12: temporaries of a killed writer


def test_temporaries_left_by_a_killed_gateway_are_swept_at_start_when_stale(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "data")
    port = gw.port
    sock = raw_connection(gw)
    sock.sendall(upload_head(1_000_000) + b'{"x": 1}\n' * 1000)
    wait_for(lambda: temporaries(gw), "the upload to start")
    gw.stop(signal.SIGKILL)
    sock.close()
    [stale] = temporaries(gw)
    hour_ago = time.time() - 2 * 3600
    os.utime(stale, (hour_ago, hour_ago))
    live = stale.with_name(".file-other.0123456789ab.tmp")  # another process's writer, still at work
    live.write_bytes(b"partial")
    gw = Gateway(tmp_path / "data", port=port)
    try:
        assert not stale.exists(), "a temporary untouched for two hours survived the start"
        assert live.exists(), "a fresh temporary (maybe another process's) was removed"
    finally:
        gw.stop()
