"""The `aistats` command line against a real gateway, including the live progress bar in a real
terminal (a pty driven by pexpect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.harness import Gateway, chat_line, jsonl

CONFIG = "[executor]\nconcurrency = 8\n[mock]\nslow_latency_ms = 40\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("cli") / "data", config=CONFIG)
    yield g
    g.stop()


def cli_env(gw: Gateway) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "AI_STATS_"))}
    env.update({"AISTATS_BASE_URL": gw.base_url, "AI_STATS_API_KEY": gw.api_key, "COLUMNS": "120"})
    return env


def aistats(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", *args], env=cli_env(gw),
                          capture_output=True, text=True, timeout=120)


def test_live_progress_bar_in_a_terminal(gw: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl([chat_line(f"t{i}", "x", model="mock/slow") for i in range(600)]))
    child = pexpect.spawn(sys.executable, ["-m", "aistats_gateway.cli.main", "batch", "submit", str(path),
                                           "--endpoint", "/v1/chat/completions", "--session", "tty-test",
                                           "--metadata", "team=ml", "--wait"],
                          env={**cli_env(gw), "NO_COLOR": "1", "TERM": "xterm-256color"}, encoding="utf-8",
                          timeout=60, dimensions=(40, 120))
    # Rich still draws bold escapes with NO_COLOR, so the patterns let escape sequences sit between words.
    child.expect(r"created \S*?(batch_[0-9A-Z]+)")
    batch_id = child.match.group(1)
    child.expect(r"in_progress[^\r]*? [1-9]\d?% \d+/600 done")  # the bar, redrawn live while it runs
    child.expect(r"\d+/s")  # a rate
    child.expect(r"completed\S* — 600 completed, 0 failed of 600")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    shown = json.loads(aistats(gw, "batch", "show", batch_id, "--json").stdout)
    assert shown["session_id"] == "tty-test" and shown["metadata"] == {"team": "ml"}


def test_json_output_exit_codes_and_results(gw: Gateway, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl([chat_line("a", "x"), chat_line("b", "y", model="mock/reject")]))
    done = aistats(gw, "batch", "submit", str(good), "-e", "chat/completions", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout.strip().splitlines()[-1])
    assert batch["status"] == "completed" and (
        batch["request_counts"].items() >= {"total": 2, "completed": 1, "failed": 1}.items())

    out = tmp_path / "errors.jsonl"
    res = aistats(gw, "batch", "results", batch["id"], "--errors", "-o", str(out))
    assert res.returncode == 0 and [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ["b"]
    everything = aistats(gw, "batch", "results", batch["id"])
    assert sorted(json.loads(x)["custom_id"] for x in everything.stdout.splitlines()) == ["a", "b"]

    listed = json.loads(aistats(gw, "batch", "ls", "--json", "--limit", "100").stdout)
    assert batch["id"] in [b["id"] for b in listed["data"]]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "x"\n')
    failed = aistats(gw, "batch", "submit", str(bad), "-e", "/v1/chat/completions", "--wait")
    assert failed.returncode == 1 and "invalid_json_line" in failed.stdout and "line 1" in failed.stdout

    missing = aistats(gw, "batch", "show", "batch_nope")
    assert missing.returncode == 2 and "batch_not_found_or_not_owned" in missing.stderr
    usage = aistats(gw, "batch", "submit", str(good))  # no --endpoint
    assert usage.returncode == 2
    rejected = aistats(gw, "batch", "submit", str(good), "-e", "/v1/images")
    assert rejected.returncode == 2 and "invalid_endpoint" in rejected.stderr


def test_cancel_and_watch(gw: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "slow.jsonl"
    path.write_bytes(jsonl([chat_line(f"c{i}", "x", model="mock/slow") for i in range(2000)]))
    created = json.loads(aistats(gw, "batch", "submit", str(path), "-e", "/v1/chat/completions", "--json").stdout)
    cancelled = json.loads(aistats(gw, "batch", "cancel", created["id"], "--json").stdout)
    assert cancelled["status"] in ("cancelling", "cancelled")
    watched = aistats(gw, "batch", "watch", created["id"])
    assert watched.returncode == 1 and "cancelled" in watched.stdout


def test_unreachable_gateway_exit_code(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "AI_STATS_"))}
    env.update({"AISTATS_BASE_URL": "http://127.0.0.1:9/v1", "AI_STATS_API_KEY": "k"})
    result = subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "batch", "ls"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "cannot reach" in result.stderr


def test_keys_create_list_revoke(gw: Gateway) -> None:
    key = gw.new_key("cli-keys")
    env = gw.env
    run = [sys.executable, "-m", "aistats_gateway.cli.main", "keys"]
    listed = json.loads(subprocess.run([*run, "list", "--json"], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    mine = [k for k in listed if k["workspace_id"] == "ws_cli-keys"]
    assert len(mine) == 1 and mine[0]["prefix"] == key[:19] and "key_hash" not in mine[0]
    client = gw.client(key)
    assert client.get("/batches").status_code == 200
    subprocess.run([*run, "revoke", mine[0]["id"]], env=env, check=True, capture_output=True)
    import time

    deadline = time.monotonic() + 15
    while client.get("/batches").status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.5)


MINT = """
import json
from aistats_gateway.cli.main import _with_store
from aistats_gateway.services.keys import create_key

async def mint(store):
    return [[f"ws_forty-{i % 4}", await create_key(store.workspaces, f"forty-{i % 4}")] for i in range(40)]

print(json.dumps(_with_store(mint)))
"""


def test_keys_revoke_revokes_exactly_the_one_key_named(gw: Gateway) -> None:
    import hashlib
    import time
    from collections import defaultdict

    run = [sys.executable, "-m", "aistats_gateway.cli.main", "keys"]

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, *args], env=gw.env, capture_output=True, text=True, timeout=120)

    def active() -> dict[str, str]:  # id -> workspace of the forty's keys still active
        rows = json.loads(keys("list", "--json").stdout)
        return {r["id"]: r["workspace_id"] for r in rows
                if r["workspace_id"].startswith("ws_forty-") and r["revoked_at"] is None}

    minted = json.loads(subprocess.run([sys.executable, "-c", MINT], env=gw.env, check=True, capture_output=True,
                                       text=True).stdout.strip().splitlines()[-1])
    assert len(active()) == 40
    # `sk-aistats-` + one random character is what the list used to show: among 40 keys, some share it
    by_old_prefix: dict[str, list[str]] = defaultdict(list)
    for _, key in minted:
        by_old_prefix[key[:12]].append(key)
    shared = max(by_old_prefix.values(), key=len)
    refused = keys("revoke", shared[0][:12])
    assert refused.returncode == 2 and "nothing revoked" in refused.stderr and len(active()) == 40, refused

    ids = {r["prefix"]: r["id"] for r in json.loads(keys("list", "--json").stdout)}
    key_id = {key: ids[key[:19]] for _, key in minted}  # each new key's prefix is its own
    second, third = [key for _, key in minted if key != shared[0]][:2]
    targets = [(shared[0], shared[0]), (key_id[second], second), (hashlib.sha256(third.encode()).hexdigest(), third)]
    for arg, key in targets:
        before = active()
        done = keys("revoke", arg)
        assert done.returncode == 0 and key_id[key] in done.stdout, done
        assert set(before) - set(active()) == {key_id[key]}
    for arg in (key_id[second], "key_NOPE", "sk-aistats-not-a-key-we-ever-made-0123456789"):
        nothing = keys("revoke", arg)
        assert nothing.returncode == 2 and "nothing revoked" in nothing.stderr, (arg, nothing)
    assert len(active()) == 37

    shown = [line.split()[2] for line in keys("list").stdout.splitlines() if "ws_forty-" in line]
    assert len(shown) == 40 == len(set(shown)) and all(len(s) == 20 for s in shown)  # 19 characters and "…"
    deadline = time.monotonic() + 15
    for _, key in targets:
        while gw.client(key).get("/batches").status_code != 401:
            assert time.monotonic() < deadline, "revoked key still accepted"
            time.sleep(0.5)
    time.sleep(6)  # past the gateway's key cache: a wrongly revoked key would answer 401 by now
    revoked = {key for _, key in targets}
    assert all(gw.client(key).get("/batches").status_code == 200 for _, key in minted if key not in revoked)


def test_retry_and_merged_results(gw: Gateway, tmp_path: Path) -> None:
    """`aistats batch retry ID --codes … --wait` re-runs the failed lines; `results --merged -o` writes the chain."""
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl([chat_line(f"x{i}", f"q{i}", model="mock/reject" if i % 2 else "mock/echo")
                            for i in range(6)]))
    done = aistats(gw, "batch", "submit", str(path), "-e", "/v1/chat/completions", "--wait", "--json")
    root = json.loads(done.stdout.strip().splitlines()[-1])
    assert root["error_summary"][0]["code"] == "mock_rejected"
    retried = aistats(gw, "batch", "retry", root["id"], "--codes", "mock_rejected", "--wait", "--json")
    retry = json.loads(retried.stdout.strip().splitlines()[-1])
    assert retry["parent_batch_id"] == root["id"] and retry["request_counts"]["total"] == 3, retried.stderr
    out = tmp_path / "merged.jsonl"
    written = aistats(gw, "batch", "results", retry["id"], "--merged", "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [f"x{i}" for i in range(6)]
    nothing = aistats(gw, "batch", "retry", root["id"], "--codes", "server_error")
    assert nothing.returncode == 2 and "nothing_to_retry" in nothing.stderr + nothing.stdout
