"""A fake Anthropic Message Batches API (`/v1/messages/batches`), served by the fake Anthropic upstream
(testing/anthropic_upstream.py) next to its `/v1/messages`; a test peer of native execution.

Behaves as the Message Batches docs describe, on a timeline derived from the clock so a restarted fake
continues where it was: request i of a batch finishes at `created + (i+1) × --batch-request-ms`; the batch is
`in_progress` until every request finished, then `ended`. Each request's result is fixed at create with the
Messages fake's own validation and `answer()` (invalid params → `errored` with `invalid_request_error`).
  * POST   /v1/messages/batches                {"requests": [{custom_id, params}]} → the batch; 400 for a
           custom_id outside 1-64 chars of [A-Za-z0-9_-], duplicates, or no requests
  * GET    /v1/messages/batches                newest first; `limit`, `after_id`; {data, has_more, first_id, last_id}
  * GET    /v1/messages/batches/{id}           `processing_status` in_progress | canceling | ended, request_counts
  * POST   /v1/messages/batches/{id}/cancel    `canceling` for 0.2 s, then ended: unfinished requests `canceled`
  * GET    /v1/messages/batches/{id}/results   JSONL once ended (404 before), in no particular order
  * POST   /_batches/{id}/expire               test control: the batch's 24h run out now (unfinished → `expired`)
  * GET    /_batches                           test view: every batch object
`--state-file PATH` keeps every batch across restarts; `--create-faults N` stores the first N creates but
answers them 500 (an ambiguous create, as after a timeout).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CANCEL_SECONDS = 0.2
DAY = 24 * 3600.0


class Answers(Protocol):
    def answer(self, body: dict[str, Any], message_id: str) -> dict[str, Any]: ...


def _rfc3339(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MessageBatches:
    def __init__(self, answers: Answers, validate: Callable[[dict[str, Any]], None],
                 error: Callable[..., web.Response], *, request_ms: float = 50.0,
                 state_file: Path | None = None, create_faults: int = 0) -> None:
        self.answers = answers
        self.validate = validate
        self.error = error
        self.step = request_ms / 1000.0
        self.state_file = state_file
        self.create_faults = create_faults
        self.batches: dict[str, dict[str, Any]] = {}
        if state_file is not None and state_file.exists():
            self.batches = json.loads(state_file.read_text())

    def _save(self) -> None:
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.batches))
            tmp.replace(self.state_file)

    # ---------------------------------------------------------------- the timeline
    def _stop_at(self, b: dict[str, Any]) -> float | None:
        stops = [t for t in (b.get("cancel_at"), b["expires_at"]) if t is not None]
        return min(stops) if stops else None

    def _view(self, b: dict[str, Any], now: float) -> dict[str, Any]:
        n = len(b["results"])
        stop = self._stop_at(b)
        finish_all = b["created_at"] + n * self.step
        end = finish_all if stop is None else min(finish_all, stop + (CANCEL_SECONDS if stop == b.get("cancel_at")
                                                                        else 0.0))
        cutoff = min(now, stop) if stop is not None else now
        done = [r for i, r in enumerate(b["results"]) if b["created_at"] + (i + 1) * self.step <= cutoff]
        counts = {"processing": n - len(done), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for r in done:
            counts[r["result"]["type"]] += 1
        ended = now >= end
        if ended and counts["processing"]:
            rest = "canceled" if b.get("cancel_at") is not None and b["cancel_at"] <= b["expires_at"] else "expired"
            counts[rest] += counts["processing"]
            counts["processing"] = 0
        status = "ended" if ended else ("canceling" if b.get("cancel_at") is not None else "in_progress")
        return {
            "id": b["id"], "type": "message_batch", "processing_status": status, "request_counts": counts,
            "ended_at": _rfc3339(end) if ended else None, "created_at": _rfc3339(b["created_at"]),
            "expires_at": _rfc3339(b["expires_at"]), "archived_at": None,
            "cancel_initiated_at": _rfc3339(b.get("cancel_at")),
            "results_url": f"{b['base']}/v1/messages/batches/{b['id']}/results" if ended else None,
        }

    def _results(self, b: dict[str, Any]) -> list[dict[str, Any]]:
        stop = self._stop_at(b)
        out = []
        for i, r in enumerate(b["results"]):
            if stop is not None and b["created_at"] + (i + 1) * self.step > stop:
                kind = "canceled" if b.get("cancel_at") is not None and b["cancel_at"] <= b["expires_at"] \
                    else "expired"
                out.append({"custom_id": r["custom_id"], "result": {"type": kind}})
            else:
                out.append(r)
        return list(reversed(out))  # results come in no particular order

    # ---------------------------------------------------------------- routes
    def _auth(self, request: web.Request) -> web.Response | None:
        if not request.headers.get("x-api-key"):
            return self.error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        found = self.batches.get(request.match_info["batch_id"])
        return None if found is None or found.get("deleted_at") else found

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.error(400, "The request body is not valid JSON.")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return self.error(400, "requests: at least one request is required")
        seen: set[str] = set()
        for i, req in enumerate(requests):
            cid = req.get("custom_id") if isinstance(req, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                return self.error(400, f"requests.{i}.custom_id: String should match pattern "
                                  "'^[a-zA-Z0-9_-]{1,64}$'")
            if cid in seen:
                return self.error(400, f"requests.{i}.custom_id: duplicate custom_id '{cid}'")
            seen.add(cid)
            if not isinstance(req.get("params"), dict):
                return self.error(400, f"requests.{i}.params: Field required")
        now = time.time()
        batch_id = "msgbatch_" + hashlib.sha256(f"{now}:{len(self.batches)}".encode()).hexdigest()[:24]
        results = []
        for req in requests:
            try:
                self.validate(req["params"])
            except Exception as exc:  # the Messages fake's Invalid
                results.append({"custom_id": req["custom_id"], "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}}}})
                continue
            message_id = "msg_" + hashlib.sha256(f"{batch_id}:{req['custom_id']}".encode()).hexdigest()[:24]
            results.append({"custom_id": req["custom_id"], "result": {
                "type": "succeeded", "message": self.answers.answer(req["params"], message_id)}})
        base = f"{request.scheme}://{request.host}"
        self.batches[batch_id] = {"id": batch_id, "created_at": now, "expires_at": now + DAY, "cancel_at": None,
                                  "results": results, "base": base}
        self._save()
        if self.create_faults > 0:
            self.create_faults -= 1
            return self.error(500, "Internal server error (scripted: the batch was stored)")
        return web.json_response(self._view(self.batches[batch_id], now))

    async def list(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        now = time.time()
        ordered = sorted((b for b in self.batches.values() if not b.get("deleted_at")),
                         key=lambda b: b["created_at"], reverse=True)
        after = request.query.get("after_id")
        if after:
            ids = [b["id"] for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = [self._view(b, now) for b in ordered[:limit]]
        return web.json_response({"data": page, "has_more": len(ordered) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    async def get(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        b = self._find(request)
        if b is None:
            return self.error(404, "message batch not found")
        return web.json_response(self._view(b, time.time()))

    async def cancel(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        b = self._find(request)
        if b is None:
            return self.error(404, "message batch not found")
        now = time.time()
        if self._view(b, now)["processing_status"] == "in_progress":
            b["cancel_at"] = now
            self._save()
        return web.json_response(self._view(b, now))

    async def results(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        b = self._find(request)
        if b is None or self._view(b, time.time())["processing_status"] != "ended":
            return self.error(404, "results are not available until the batch has ended")
        body = b"".join(orjson.dumps(r) + b"\n" for r in self._results(b))
        return web.Response(body=body, content_type="application/binary")

    async def delete(self, request: web.Request) -> web.Response:
        """Anthropic's rule: only an ended batch can be deleted (its results go with it). The fake keeps the
        record, marked, so tests can still see it through /_batches."""
        if (denied := self._auth(request)) is not None:
            return denied
        b = self._find(request)
        if b is None:
            return self.error(404, "message batch not found")
        if self._view(b, time.time())["processing_status"] != "ended":
            return self.error(400, "Message batches can only be deleted once they have ended (cancel it first)")
        b["deleted_at"] = time.time()
        self._save()
        return web.json_response({"id": b["id"], "type": "message_batch_deleted"})

    async def expire(self, request: web.Request) -> web.Response:
        b = self._find(request)
        if b is None:
            return web.json_response({"error": "unknown batch"}, status=404)
        b["expires_at"] = time.time()
        self._save()
        return web.json_response(self._view(b, time.time()))

    async def all(self, _request: web.Request) -> web.Response:
        now = time.time()
        return web.json_response([{**self._view(b, now), "deleted": bool(b.get("deleted_at"))}
                                  for b in self.batches.values()])

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages/batches", self.create)
        app.router.add_get("/v1/messages/batches", self.list)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.get)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results)
        app.router.add_delete("/v1/messages/batches/{batch_id}", self.delete)
        app.router.add_post("/_batches/{batch_id}/expire", self.expire)
        app.router.add_get("/_batches", self.all)
