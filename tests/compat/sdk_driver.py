"""Drive the official AI Stats / Phaseo Python SDK against a running gateway; print a JSON report.

Run by tests/compat/test_aistats_sdk.py with a Python 3.12 interpreter that has the SDK installed
(`ai-stats-py-sdk` 2.x -> module `ai_stats`, class `AIStats`; `phaseo` 3.x -> module `phaseo`,
class `Phaseo`). This file must stay importable by that interpreter only: it uses nothing from the
project (the project's own venv is Python 3.11, the SDKs need 3.12).

    python3.12 sdk_driver.py --sdk ai_stats --base-url http://127.0.0.1:PORT/v1 < cases.json

The API key comes from PHASEO_API_KEY (the variable both SDKs read). stdin holds a JSON object
`{"webhook_cases": [{name, secret, body | body_b64, headers, now?}]}` built by the test, read only
after the HTTP steps; each case is handed to the SDK's `verify_async_webhook_signature` and its
answer (True/False) reported.

Every HTTP request the SDK makes is recorded (method, path, query, content type, JSON keys of the
body) by wrapping `urllib.request.urlopen` (used by the SDK's generated client) and `httpx.get`
(used by `get_file_content`), so the test can check what the SDK really sends.

The report is the last line of stdout. A step that raises records `{"error": ...}` (with the HTTP
status and body when the SDK raised an HTTP error) and the driver goes on where it can.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import httpx

SDKS = {"ai_stats": "AIStats", "phaseo": "Phaseo"}
TERMINAL = ("completed", "failed", "cancelled", "expired")

calls: list[dict[str, Any]] = []


def _record(method: str, url: str, content_type: str | None, body: bytes | None) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    entry: dict[str, Any] = {"method": method.upper(), "path": parts.path,
                             "query": dict(urllib.parse.parse_qsl(parts.query)), "content_type": content_type}
    if body:
        try:
            parsed = json.loads(body)
            entry["json_keys"] = sorted(parsed) if isinstance(parsed, dict) else None
        except ValueError:
            entry["json_keys"] = None
    calls.append(entry)
    return entry


def _install_recorders() -> None:
    real_urlopen = urllib.request.urlopen

    def urlopen(req: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(req, urllib.request.Request):
            entry = _record(req.get_method(), req.full_url, req.get_header("Content-type"), req.data)
            entry["accept"] = req.get_header("Accept")
            entry["user_agent"] = req.get_header("User-agent")
            entry["authorization_scheme"] = (req.get_header("Authorization") or "").split(" ")[0] or None
        try:
            resp = real_urlopen(req, *args, **kwargs)
        except urllib.error.HTTPError as exc:
            calls[-1]["status"] = exc.code
            raise
        calls[-1]["status"] = resp.status
        calls[-1]["response_content_type"] = resp.headers.get("content-type")
        return resp

    urllib.request.urlopen = urlopen  # type: ignore[assignment]

    real_get = httpx.get

    def get(url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        entry = _record("GET", str(url), None, None)
        entry["via"] = "httpx"
        headers = kwargs.get("headers") or {}
        entry["authorization_scheme"] = str(headers.get("Authorization", "")).split(" ")[0] or None
        resp = real_get(url, *args, **kwargs)
        entry["status"] = resp.status_code
        entry["response_content_type"] = resp.headers.get("content-type")
        return resp

    httpx.get = get  # type: ignore[assignment]


def _error(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    if isinstance(exc, urllib.error.HTTPError):
        out["status"] = exc.code
        try:
            raw = exc.read().decode("utf-8", "replace")
            try:
                out["body"] = json.loads(raw)
            except ValueError:
                out["body"] = raw[:2000]
        except Exception:  # best effort
            pass
    elif isinstance(exc, httpx.HTTPStatusError):
        out["status"] = exc.response.status_code
        try:
            exc.response.read()  # a streamed response (stream_batch_results) may be closed already
            try:
                out["body"] = exc.response.json()
            except ValueError:
                out["body"] = exc.response.text[:2000]
        except Exception:  # httpx.StreamClosed: the SDK left its `with` block
            out["body"] = None
    else:
        out["traceback"] = traceback.format_exc()[-3000:]
    return out


def step(report: dict[str, Any], name: str, fn: Any) -> Any:
    try:
        value = fn()
    except Exception as exc:  # every failure goes into the report
        report[name] = {"error": _error(exc)}
        return None
    report[name] = value
    return value


def poll(client: Any, batch_id: str, timeout: float) -> dict[str, Any]:
    """get_batch until terminal; returns {batch, statuses_seen, polls}."""
    seen: list[str] = []
    polls = 0
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get_batch(batch_id)
        polls += 1
        status = batch.get("status") if isinstance(batch, dict) else None
        if not seen or seen[-1] != status:
            seen.append(str(status))
        if status in TERMINAL or time.monotonic() > deadline:
            return {"batch": batch, "statuses_seen": seen, "polls": polls}
        time.sleep(0.05)


def content_text(raw: Any) -> dict[str, Any]:
    """What get_file_content returned: its Python type and (as text) its lines parsed as JSON."""
    info: dict[str, Any] = {"python_type": type(raw).__name__}
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
    info["text"] = text
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"unparsable": line[:500]})
    info["lines"] = lines
    return info


def chat_line(custom_id: str, text: str, model: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def generated_operations(client: Any, report: dict[str, Any], text: str, timeout: float) -> None:
    """Call each batch/file operation the SDK generates (phaseo 3.x; ai-stats 2.x has none of the aliases) and
    record its answer under report["ops"][operation name] (upload_file and list_batches cover uploadFile and
    listBatches, whose calls other tests count). A step needing an id from an earlier one is skipped
    when that one failed (the test then names the first failure)."""
    ops = importlib.import_module("gen.operations")
    if not hasattr(ops, "listBatchCapabilities"):
        return
    raw = client.raw_client if hasattr(client, "raw_client") else client._client
    out: dict[str, Any] = {}
    report["ops"] = out

    def call(name: str, **kwargs: Any) -> Any:
        return step(out, name, lambda: getattr(ops, name)(raw, **kwargs))

    upload = {"purpose": "batch", "file": text}
    f1 = call("uploadBatchFile", body=upload)
    f2 = call("uploadBatchFileAlias", body=upload)
    for name in ("listBatchFiles", "listBatchFilesAlias", "listFiles", "listBatchCapabilities",
                 "listBatchCapabilitiesAlias", "listBatchModels", "listBatchModelsAlias", "listBatchesAlias"):
        call(name)
    call("listBatchModels", query={"params": ["endpoint", "completion_window"]})
    if isinstance(f1, dict) and isinstance(f2, dict):
        for name, file_id in (("retrieveBatchFile", f1["id"]), ("retrieveBatchFileAlias", f2["id"]),
                              ("retrieveBatchFileContent", f1["id"]), ("retrieveBatchFileContentAlias", f2["id"]),
                              ("retrieveFile", f1["id"]), ("retrieveFileContent", f2["id"])):
            call(name, path={"file_id": file_id})
        b1 = call("createBatch", body={"input_file_id": f1["id"], "endpoint": "/v1/chat/completions"})
        b2 = call("createBatchAlias", body={"input_file_id": f2["id"], "endpoint": "/v1/chat/completions"})
        if isinstance(b1, dict) and isinstance(b2, dict):
            poll(client, b1["id"], timeout)
            poll(client, b2["id"], timeout)
            call("retrieveBatch", path={"batch_id": b1["id"]})
            call("retrieveBatchAlias", path={"id": b2["id"]})
            call("listBatchRequests", path={"batch_id": b1["id"]})
            call("listBatchRequestsAlias", path={"id": b2["id"]})
            call("retrieveBatchResults", path={"batch_id": b1["id"]})
            call("retrieveBatchResultsAlias", path={"id": b2["id"]})
    slow = step(out, "createBatchAlias_inline", lambda: ops.createBatchAlias(raw, body={
        "endpoint": "/v1/chat/completions",
        "requests": [chat_line(f"ops-slow-{i}", "slow", "mock/slow") for i in range(50)]}))
    if isinstance(slow, dict):
        call("cancelBatchAlias", path={"id": slow["id"]})
        call("cancelBatch", path={"batch_id": slow["id"]})
    endpoint = call("createWebhookEndpoint", body={"url": "https://hooks.example.com/phaseo", "name": "compat",
                                                   "events": ["batch.completed", "batch.failed"]})
    if isinstance(endpoint, dict) and "id" in endpoint:
        eid = {"id": endpoint["id"]}
        call("listWebhookEndpoints")
        call("getWebhookEndpoint", path=eid)
        call("updateWebhookEndpoint", path=eid, body={"name": "compat renamed", "status": "disabled"})
        call("rotateWebhookEndpointSecret", path=eid)
        call("testWebhookEndpoint", path=eid)
        call("updateWebhookEndpoint", path=eid, body={"status": "active"})
        named = step(out, "createBatch_webhook_endpoint", lambda: ops.createBatch(raw, body={
            "endpoint": "/v1/chat/completions", "webhook_endpoint_id": endpoint["id"],
            "requests": [chat_line("ops-hook", "hi", "mock/echo")]}))
        if isinstance(named, dict) and "id" in named:
            poll(client, named["id"], timeout)
        call("deleteWebhookEndpoint", path=eid)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk", choices=sorted(SDKS), required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--lines", type=int, default=5, help="lines of the mock/echo batch")
    parser.add_argument("--slow-lines", type=int, default=200, help="lines of the mock/slow batch to cancel")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    _install_recorders()
    module = importlib.import_module(args.sdk)
    cls = getattr(module, SDKS[args.sdk])
    report: dict[str, Any] = {"sdk": args.sdk, "python": sys.version.split()[0],
                              "module_file": module.__file__}
    try:
        from importlib.metadata import version

        report["sdk_version"] = version("ai-stats-py-sdk" if args.sdk == "ai_stats" else "phaseo")
    except Exception:
        report["sdk_version"] = None

    # The key comes from PHASEO_API_KEY (no api_key argument): the SDK's own env-var path.
    client = cls(base_url=args.base_url, timeout=30.0)

    # 1. upload_file, raw JSONL text, then a data: URL; read both back.
    echo_ids = [f"{args.sdk}-echo-{i}" for i in range(args.lines)]
    echo_jsonl = "".join(json.dumps(chat_line(cid, f"hello {cid}", "mock/echo")) + "\n" for cid in echo_ids)
    report["echo_custom_ids"] = echo_ids
    report["echo_input_text"] = echo_jsonl
    up = step(report, "upload_text", lambda: client.upload_file(purpose="batch", file=echo_jsonl))
    data_url = "data:application/jsonl;base64," + base64.b64encode(echo_jsonl.encode()).decode()
    up_b64 = step(report, "upload_data_url", lambda: client.upload_file(purpose="batch", file=data_url))
    if isinstance(up, dict) and up.get("id"):
        step(report, "get_file_input", lambda: client.get_file(up["id"]))
        step(report, "input_content", lambda: content_text(client.get_file_content(up["id"])))
    if isinstance(up_b64, dict) and up_b64.get("id"):
        step(report, "data_url_content", lambda: content_text(client.get_file_content(up_b64["id"])))

    # 2. create_batch -> poll get_batch -> output file.
    batch = None
    if isinstance(up, dict) and up.get("id"):
        batch = step(report, "create_batch", lambda: client.create_batch({
            "input_file_id": up["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"sdk": args.sdk},
        }))
    if isinstance(batch, dict) and batch.get("id"):
        done = step(report, "poll", lambda: poll(client, batch["id"], args.timeout))
        final = done["batch"] if isinstance(done, dict) else None
        if isinstance(final, dict) and final.get("output_file_id"):
            step(report, "get_file_output", lambda: client.get_file(final["output_file_id"]))
            step(report, "output_content", lambda: content_text(client.get_file_content(final["output_file_id"])))
        if isinstance(final, dict) and final.get("error_file_id"):
            step(report, "error_content", lambda: content_text(client.get_file_content(final["error_file_id"])))
        if hasattr(client, "stream_batch_results"):  # phaseo 3.x only: GET /batches/{id}/results (NDJSON)
            step(report, "stream_results", lambda: content_text(b"".join(client.stream_batch_results(batch["id"]))))
        step(report, "websocket_url", lambda: client.get_async_job_websocket_url("batch", batch["id"]))
        step(report, "websocket_url_query", lambda: client.get_async_job_websocket_url(
            "batch", batch["id"], interval_ms=1000, close_on_terminal=False))
        step(report, "websocket_url_resource", lambda: client.batches.websocket_url(batch["id"]))

    # 3. cancel_batch on a long mock/slow batch; every line must still come back exactly once.
    slow_ids = [f"{args.sdk}-slow-{i}" for i in range(args.slow_lines)]
    report["slow_custom_ids"] = slow_ids
    slow_jsonl = "".join(json.dumps(chat_line(cid, f"slow {cid}", "mock/slow")) + "\n" for cid in slow_ids)
    slow_file = step(report, "upload_slow", lambda: client.upload_file(purpose="batch", file=slow_jsonl))
    slow = None
    if isinstance(slow_file, dict) and slow_file.get("id"):
        slow = step(report, "create_slow", lambda: client.create_batch({
            "input_file_id": slow_file["id"], "endpoint": "chat/completions"}))
    if isinstance(slow, dict) and slow.get("id"):
        step(report, "cancel_batch", lambda: client.cancel_batch(slow["id"]))
        step(report, "cancel_batch_again", lambda: client.cancel_batch(slow["id"]))
        done = step(report, "poll_cancelled", lambda: poll(client, slow["id"], args.timeout))
        final = done["batch"] if isinstance(done, dict) else None
        if isinstance(final, dict):
            if final.get("output_file_id"):
                step(report, "cancelled_output", lambda: content_text(client.get_file_content(final["output_file_id"])))
            if final.get("error_file_id"):
                step(report, "cancelled_errors", lambda: content_text(client.get_file_content(final["error_file_id"])))
        step(report, "cancel_terminal", lambda: client.cancel_batch(slow["id"]))

    # 4. list_batches (this workspace now holds the two batches above, newest first): the default
    # page, then limit=1 and the `after` cursor.
    step(report, "list_batches", lambda: client.list_batches())
    page1 = step(report, "list_batches_limit1", lambda: client.list_batches({"limit": 1}))
    if isinstance(page1, dict) and page1.get("last_id"):
        step(report, "list_batches_after", lambda: client.list_batches({"limit": 1, "after": page1["last_id"]}))

    # 5. Errors the SDK surfaces for unknown ids.
    step(report, "get_batch_missing", lambda: client.get_batch("batch_00000000000000000000000000"))
    step(report, "get_file_missing", lambda: client.get_file("file-doesnotexist"))
    step(report, "get_file_content_missing", lambda: client.get_file_content("file-doesnotexist"))

    # 6. phaseo 3.x: every batch and file operation of its generated client (gen.operations), aliases included.
    generated_operations(client, report, echo_jsonl, args.timeout)

    # 7. verify_async_webhook_signature on the cases the test built (module-level and re-exported).
    # stdin is read only now, so the test can start this driver before it has collected the gateway's
    # webhook deliveries that the cases include.
    cases = json.loads(sys.stdin.read() or "{}")
    verify = module.verify_async_webhook_signature
    results = {}
    for case in cases.get("webhook_cases", []):
        body = base64.b64decode(case["body_b64"]) if "body_b64" in case else case["body"]
        headers = case["headers"]
        if isinstance(headers, list):  # [[name, value], ...]: the SDK's iterable-of-pairs form
            headers = [tuple(pair) for pair in headers]
        kwargs: dict[str, Any] = {"secret": case["secret"], "body": body, "headers": headers}
        if case.get("now") is not None:
            kwargs["now"] = case["now"]
        try:
            results[case["name"]] = verify(**kwargs)
        except Exception as exc:
            results[case["name"]] = {"error": _error(exc)}
    report["webhook_verify"] = results
    report["calls"] = calls
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
