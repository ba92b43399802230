"""Items point into their input file: what reaches the upstream is exactly each line's body, read back from the
file (BOM, CRLF, blank lines, multibyte text, no final newline, keys in any order).
Real processes: the gateway and the recording upstream on loopback, a real SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Gateway, Upstream, wait_for_batch

ENDPOINT = "/v1/chat/completions"


def row(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
                     "x_fault": {"key": custom_id}, **extra}}


def upload(api: httpx.Client, data: bytes) -> str:
    answer = api.post("/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def lines_of(api: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    return [json.loads(x) for x in api.get(f"/files/{file_id}/content").text.splitlines()] if file_id else []


@pytest.fixture
def upstream(tmp_path: Path) -> Any:
    up = Upstream(tmp_path / "up.log", latency_ms=40)
    yield up
    up.stop()


def test_each_line_sends_exactly_its_own_body_read_back_from_the_file(tmp_path: Path, upstream: Upstream) -> None:
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"},
                 config="[executor]\nconcurrency = 8\n")
    try:
        api = gw.client()
        rows = [row(f"r{i}", f"line {i} " + "ünïcødé ✓ 中文 𝄞 " * (i % 5) + "x" * (i * 37 % 3000),
                    **({"max_tokens": i % 50 + 1} if i % 3 else {})) for i in range(300)]
        pieces = []
        for i, r in enumerate(rows):
            # the same JSON in different spellings: spaces, key order, escapes; ends of line vary
            text = json.dumps(r, ensure_ascii=i % 2 == 0, indent=None, separators=(", ", ": ") if i % 4 else (",", ":"))
            if i % 5 == 0:
                text = json.dumps(dict(reversed(list(r.items()))))
            pieces.append(text.encode() + (b"\r\n" if i % 3 == 0 else b"\n") + (b"\n" if i % 7 == 0 else b""))
        data = b"\xef\xbb\xbf" + b"".join(pieces).rstrip(b"\r\n")  # BOM; the last line has no newline
        file_id = upload(api, data)
        done = wait_for_batch(api, api.post("/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT}
                                            ).json()["id"], timeout=90)
        assert done["status"] == "completed" and done["request_counts"]["completed"] == len(rows), done
        sent = upstream.bodies()
        # byte for byte what ingest used to store: the line's body object, serialized compactly
        assert sent == {r["custom_id"]: orjson.dumps(r["body"]).decode() for r in rows}
        assert upstream.ledger() == {r["custom_id"]: 1 for r in rows}
        out = lines_of(api, done["output_file_id"])
        assert sorted(x["custom_id"] for x in out) == sorted(r["custom_id"] for r in rows)
        with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:  # the rows hold no copy of the bodies
            assert db.execute("SELECT COUNT(*) FROM items WHERE body IS NOT NULL OR body_offset IS NULL").fetchone() \
                == (0,)
    finally:
        gw.stop()
