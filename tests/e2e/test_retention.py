"""File expiry: OpenAI's `expires_after` on uploads and `output_expires_after` on batches, through the official
SDK unchanged, the `[retention]` defaults, and the sweep that removes expired files (a gateway in this process on
a clock the test moves, so "an hour later" takes no time)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aistats_gateway.clock import FakeClock
from tests.harness import InProcessGateway, chat_line, jsonl, wait_for_batch

HOUR = 3600


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessGateway, FakeClock, Path]]:
    data = tmp_path_factory.mktemp("retention")
    clock = FakeClock(start=time.time())
    g = InProcessGateway(data, clock, retention={"input_files_seconds": 5 * HOUR, "output_files_seconds": 6 * HOUR,
                                                 "batch_rows_seconds": 48 * HOUR, "sweep_seconds": 0.05})
    yield g, clock, data
    g.stop()


def sdk(g: InProcessGateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=g.api_key, base_url=g.base_url, max_retries=0)


def blobs_of(data: Path) -> list[str]:
    root = data / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def blob_exists(data: Path, file_id: str) -> bool:
    return (data / "blobs" / "files" / file_id).exists()


def test_policies_through_the_openai_sdk(gw: tuple[InProcessGateway, FakeClock, Path]) -> None:
    g, _clock, _data = gw
    client = sdk(g)
    uploaded = client.files.create(file=("in.jsonl", jsonl([chat_line("a", "x"), chat_line("b", "y")])),
                                   purpose="batch", expires_after={"anchor": "created_at", "seconds": 2 * HOUR})
    assert uploaded.expires_at == uploaded.created_at + 2 * HOUR
    assert client.files.retrieve(uploaded.id).expires_at == uploaded.expires_at
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  output_expires_after={"anchor": "created_at", "seconds": 3 * HOUR})
    done = wait_for_batch(g.client(), batch.id)
    assert done["status"] == "completed"
    output = client.files.retrieve(done["output_file_id"])
    assert output.expires_at == output.created_at + 3 * HOUR


def test_defaults_apply_where_no_policy_was_given(gw: tuple[InProcessGateway, FakeClock, Path]) -> None:
    g, _clock, _data = gw
    api = g.client()
    answer = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("d", "x")]})
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    inline = api.get(f"/files/{batch['input_file_id']}").json()
    assert inline["expires_at"] == inline["created_at"] + 5 * HOUR  # [retention] input_files_seconds
    done = wait_for_batch(api, batch["id"])
    output = api.get(f"/files/{done['output_file_id']}").json()
    assert output["expires_at"] == output["created_at"] + 6 * HOUR  # [retention] output_files_seconds
    other = api.post("/files", files={"file": ("notes.txt", b"hello")}, data={"purpose": "user_data"}).json()
    assert other["expires_at"] is None  # the defaults are for batch files only
    api.delete(f"/files/{other['id']}")


@pytest.mark.parametrize(("form", "param", "code"), [
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}, "expires_after.seconds", "invalid_value"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": str(31 * 24 * HOUR)},
     "expires_after.seconds", "invalid_value"),
    ({"expires_after[anchor]": "last_used", "expires_after[seconds]": "3600"}, "expires_after.anchor", "invalid_value"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"}, "expires_after.seconds",
     "invalid_type"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600", "expires_after[when]": "x"},
     "expires_after.when", "unknown_parameter"),
])
def test_bad_upload_policies_are_refused_and_store_nothing(
    gw: tuple[InProcessGateway, FakeClock, Path], form: dict[str, str], param: str, code: str
) -> None:
    g, _clock, _data = gw
    api = g.client()
    before = len(api.get("/files").json()["data"])
    answer = api.post("/files", files={"file": ("in.jsonl", jsonl([chat_line("a", "x")]))},
                      data={"purpose": "batch", **form})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, code) and param in error["message"]
    assert len(api.get("/files").json()["data"]) == before


@pytest.mark.parametrize(("policy", "param"), [
    ({"anchor": "created_at", "seconds": 10}, "output_expires_after.seconds"),
    ({"anchor": "created_at", "seconds": True}, "output_expires_after.seconds"),
    ({"seconds": 3600}, "output_expires_after.anchor"),
    ("24h", "output_expires_after"),
])
def test_bad_output_policies_are_refused(gw: tuple[InProcessGateway, FakeClock, Path], policy: Any,
                                         param: str) -> None:
    g, _clock, _data = gw
    api = g.client()
    before = len(api.get("/batches").json()["data"])
    answer = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("p", "x")],
                                        "output_expires_after": policy})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert len(api.get("/batches").json()["data"]) == before
    json_upload = api.post("/files", json={"purpose": "batch", "file": "{}", "expires_after": policy})
    assert json_upload.status_code == 400
    assert json_upload.json()["error"]["param"] == param.replace("output_expires_after", "expires_after")


def test_expired_files_disappear_and_are_removed(gw: tuple[InProcessGateway, FakeClock, Path]) -> None:
    g, clock, data = gw
    api = g.client()
    short = api.post("/files", files={"file": ("a.jsonl", jsonl([chat_line("a", "x")]))},
                     data={"purpose": "batch", "expires_after[anchor]": "created_at",
                           "expires_after[seconds]": str(HOUR)}).json()
    kept = api.post("/files", files={"file": ("k.txt", b"keep me")}, data={"purpose": "user_data"}).json()
    assert short["expires_at"] == short["created_at"] + HOUR and blob_exists(data, short["id"])
    clock.advance(HOUR + 1)
    # At once, before any sweep: gone for its owner, and no batch can be created from it.
    gone = api.get(f"/files/{short['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_expired"
    assert api.get(f"/files/{short['id']}/content").status_code == 404
    assert short["id"] not in {f["id"] for f in api.get("/files").json()["data"]}
    refused = api.post("/batches", json={"endpoint": "/v1/chat/completions", "input_file_id": short["id"]})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "input_file_id"
    # Then the sweep removes its blob and row; a file without a policy stays.
    deadline = time.monotonic() + 10
    while blob_exists(data, short["id"]):
        assert time.monotonic() < deadline, "the retention sweep did not remove the expired file's blob"
        time.sleep(0.05)
    assert api.get(f"/files/{short['id']}").json()["error"]["code"] == "file_not_found_or_not_owned"
    assert api.get(f"/files/{kept['id']}/content").content == b"keep me"
    # Earlier tests' files (5 h / 6 h defaults, 2 h / 3 h policies) all expire within a day.
    clock.advance(24 * HOUR)
    deadline = time.monotonic() + 10
    while [f for f in api.get("/files").json()["data"] if f["expires_at"] is not None]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while (left := blobs_of(data)) != [f"files/{kept['id']}"]:  # inputs, outputs and error files all removed
        assert time.monotonic() < deadline, left
        time.sleep(0.05)
    httpx.delete(f"{g.base_url}/files/{kept['id']}", headers={"Authorization": f"Bearer {g.api_key}"})


def rows_of(data: Path, table: str, batch_id: str) -> int:
    with sqlite3.connect(data / "gateway.db") as db:
        return int(db.execute(f"SELECT count(*) FROM {table} WHERE batch_id = ?", (batch_id,)).fetchone()[0])


def test_ended_batches_lose_their_per_line_rows_after_batch_rows_seconds(
    gw: tuple[InProcessGateway, FakeClock, Path]
) -> None:
    g, clock, data = gw
    api = g.client()
    rows = [chat_line(f"r{i}", f"row {i}") for i in range(30)] + [chat_line("bad", "x", model="mock/reject")]
    batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows,
                                       "output_expires_after": {"anchor": "created_at", "seconds": 30 * 24 * HOUR}})
    done = wait_for_batch(api, batch.json()["id"])
    assert done["request_counts"].items() >= {"total": 31, "completed": 30, "failed": 1}.items()
    assert len(api.get(f"/batches/{done['id']}/results").text.splitlines()) == 31
    assert api.get(f"/batches/{done['id']}/requests").json()["data"]
    assert rows_of(data, "items", done["id"]) == 31 and rows_of(data, "request_log", done["id"]) >= 31
    clock.advance(47 * HOUR)  # not yet
    time.sleep(0.3)
    assert rows_of(data, "items", done["id"]) == 31
    clock.advance(2 * HOUR)
    deadline = time.monotonic() + 10
    while (gone := api.get(f"/batches/{done['id']}/results")).status_code == 200:
        assert time.monotonic() < deadline, "the retention sweep did not purge the ended batch's rows"
        time.sleep(0.05)
    error = gone.json()["error"]
    assert gone.status_code == 404 and error["code"] == "batch_rows_purged"
    assert done["output_file_id"] in error["message"]
    assert api.get(f"/batches/{done['id']}/requests").json()["error"]["code"] == "batch_rows_purged"
    assert rows_of(data, "items", done["id"]) == 0 and rows_of(data, "request_log", done["id"]) == 0
    # The batch itself, its counts, billing and pricing, and its files (30-day policy) stay.
    kept = api.get(f"/batches/{done['id']}").json()
    assert kept["status"] == "completed" and kept["request_counts"] == done["request_counts"]
    assert kept["billing"] == done["billing"] and kept["pricing_lines"] == done["pricing_lines"]
    output = api.get(f"/files/{done['output_file_id']}/content").text.splitlines()
    assert len(output) == 30
