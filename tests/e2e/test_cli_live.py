"""The CLI's live output and habits against real gateways (issue 18, items 3 and 5): the bar of
`submit --wait` through a gateway restart, `watch`'s rate against the true rate, `show` on standard
output, Rich markup in gateway text, options after the subcommand, `ls --session`, `results -o`."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.harness import Gateway, chat_line, free_port, jsonl

# mock/slow answers after 100 ms and 4 run at once: a steady ~40 lines/s (less on a loaded machine; the
# tests compare against the rate measured through the API, not against this figure).
CONFIG = "[executor]\nconcurrency = 4\n[mock]\nslow_latency_ms = 100\n"
CLI = [sys.executable, "-m", "aistats_gateway.cli.main"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("cli-live") / "data", config=CONFIG)
    yield g
    g.stop()


def bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "AI_STATS_"))}


def cli_env(gw: Gateway) -> dict[str, str]:
    return {**bare_env(), "AISTATS_BASE_URL": gw.base_url, "AI_STATS_API_KEY": gw.api_key, "COLUMNS": "160"}


def aistats(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, [*CLI[1:], *args], env={**env, "NO_COLOR": "1", "TERM": "xterm-256color"},
                         encoding="utf-8", timeout=60, dimensions=(40, 160))


def submit_api(gw: Gateway, n: int, prefix: str, model: str = "mock/slow", **body: object) -> str:
    with gw.client() as client:
        f = client.post("/files", files={"file": ("in.jsonl", jsonl([chat_line(f"{prefix}{i}", "x", model=model)
                                                                     for i in range(n)]))},
                        data={"purpose": "batch"}).json()
        created = client.post("/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                                "completion_window": "24h", **body})
        assert created.status_code == 200, created.text
        return str(created.json()["id"])


def settled(gw: Gateway, batch_id: str) -> tuple[int, str]:
    with gw.client() as client:
        b = client.get(f"/batches/{batch_id}").json()
    return b["request_counts"]["completed"] + b["request_counts"]["failed"], b["status"]


DONE = re.compile(r"(\d+)/(\d+) done")


def test_submit_wait_survives_a_gateway_restart(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    gw = Gateway(data, config=CONFIG, port=port)
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl([chat_line(f"r{i}", "x", model="mock/slow") for i in range(4000)]))
    child = spawn(cli_env(gw), "batch", "submit", str(path), "-e", "/v1/chat/completions", "--wait")
    batch_id = ""
    try:
        child.expect(r"created \S*?(batch_[0-9A-Z]+)")
        batch_id = child.match.group(1)
        child.expect(r"in_progress[^\r]*? [1-9]\d*/4000 done")
        gw.stop()
        # the bar says the gateway is away (the old one froze silently) ...
        child.expect("reconnecting…", timeout=20)
        child.expect(DONE, timeout=5)
        before = int(child.match.group(1))
        time.sleep(3)  # stay away a while: a stream's own backoff would have grown by now
        gw = Gateway(data, config=CONFIG, port=port)
        back = time.monotonic()
        # ... and moves again within 10 s of its return
        while True:
            child.expect(DONE, timeout=max(0.1, back + 10 - time.monotonic()))
            if int(child.match.group(1)) > before:
                break
        assert time.monotonic() - back < 10
    finally:
        child.terminate(force=True)
        if batch_id and gw.proc.poll() is None:
            with gw.client() as client:
                client.post(f"/batches/{batch_id}/cancel")
        gw.stop()


def test_watch_rate_is_the_rate_seen_since_watching(gw: Gateway) -> None:
    batch_id = submit_api(gw, 1500, "w")
    deadline = time.monotonic() + 60
    while settled(gw, batch_id)[0] < 250:  # many lines settled before watching starts
        assert time.monotonic() < deadline, "batch did not get going"
        time.sleep(0.2)
    truth: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:  # the true rate: settled lines through the API, twice a second
        while not stop.is_set():
            truth.append((time.monotonic(), settled(gw, batch_id)[0]))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    child = spawn(cli_env(gw), "batch", "watch", batch_id)
    started = time.monotonic()
    shown: list[tuple[float, float]] = []
    try:
        while time.monotonic() - started < 14:
            child.expect(r"done, \d+ failed +(\d[\d,]*(?:\.\d)?)/s", timeout=30)
            shown.append((time.monotonic(), float(child.match.group(1).replace(",", ""))))
    finally:
        child.terminate(force=True)
        stop.set()
        sampler.join(5)
        with gw.client() as client:
            client.post(f"/batches/{batch_id}/cancel")

    def true_rate(t0: float, t1: float) -> float:
        a = min(truth, key=lambda s: abs(s[0] - t0))
        b = min(truth, key=lambda s: abs(s[0] - t1))
        return (b[1] - a[1]) / (b[0] - a[0])

    late = [(t, r) for t, r in shown if t - started >= 6]
    assert late, shown
    ratios = [r / true_rate(max(started, t - 10), t) for t, r in late]
    assert abs(statistics.median(ratios) - 1) < 0.2, (statistics.median(ratios), late[-5:], truth[-5:])


def test_show_writes_the_batch_to_stdout_with_cost_time_and_tokens(gw: Gateway, tmp_path: Path) -> None:
    batch_id = submit_api(gw, 3, "s", model="mock/echo", session_id="show-me", metadata={"team": "[ml]"})
    deadline = time.monotonic() + 30
    while settled(gw, batch_id)[1] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shown = aistats(cli_env(gw), "batch", "show", batch_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"{batch_id} completed" in text and "3 completed, 0 failed of 3" in text
    # one line each, unwrapped, even in a file: `show ID > f`
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d · started [^\n]* · took \d+:\d\d:\d\d", text), text
    assert re.search(r"tokens \d+ in · \d+ out · \d+ total", text) and re.search(r"cost \$\d", text)
    assert "session show-me" in text and "team=[ml]" in text  # user text printed as written, not as markup


def test_validation_errors_keep_their_brackets_and_say_how_many_more(gw: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "unknown.jsonl"
    path.write_bytes(jsonl([chat_line(f"u{i}", "x", model="nobody/serves-this") for i in range(50)]))
    done = aistats(cli_env(gw), "batch", "submit", str(path), "-e", "/v1/chat/completions", "--wait")
    assert done.returncode == 1, done
    assert "[[providers]]" in done.stdout, done.stdout  # Rich used to eat it: "add a [] entry"
    assert len(re.findall(r"^  line \d+: ", done.stdout, re.M)) == 10
    assert "… and 40 more" in done.stdout


def test_gateway_options_after_the_subcommand_and_help_without_a_key(gw: Gateway) -> None:
    listed = aistats(bare_env(), "batch", "ls", "--json", "--api-key", gw.api_key, "--base-url", gw.base_url)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["object"] == "list"
    before = aistats({**bare_env(), "AI_STATS_API_KEY": "sk-wrong"}, "batch", "--api-key", gw.api_key,
                     "--base-url", gw.base_url, "ls", "--json")
    assert before.returncode == 0, before.stderr  # a flag before the subcommand beats the environment
    helped = aistats(bare_env(), "batch", "submit", "--help")
    assert helped.returncode == 0 and "--api-key" in helped.stdout, helped
    nokey = aistats(bare_env(), "batch", "ls")
    assert nokey.returncode == 2 and "API key is required" in nokey.stderr
    no_v1 = aistats(bare_env(), "batch", "ls", "--api-key", gw.api_key, "--base-url", gw.base_url[:-3])
    assert no_v1.returncode == 2 and "hint: the base URL usually ends in /v1" in no_v1.stderr, no_v1


def test_ls_by_session(gw: Gateway) -> None:
    mine = submit_api(gw, 1, "l", model="mock/echo", session_id="sess-ls-a")
    submit_api(gw, 1, "m", model="mock/echo", session_id="sess-ls-b")
    listed = aistats(cli_env(gw), "batch", "ls", "--session", "sess-ls-a", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [b["id"] for b in json.loads(listed.stdout)["data"]] == [mine]
    table = aistats(cli_env(gw), "batch", "ls", "--session", "sess-ls-a")
    assert mine in table.stdout and "sess-ls-b" not in table.stdout


def test_results_to_a_file_never_empties_it_on_failure(gw: Gateway, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("precious\n")
    missing = aistats(cli_env(gw), "batch", "results", "batch_nope", "-o", str(target))
    assert missing.returncode == 2 and target.read_text() == "precious\n", missing
    unreachable = aistats({**cli_env(gw), "AISTATS_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"},
                          "batch", "results", "batch_nope", "-o", str(target))
    assert unreachable.returncode == 3 and target.read_text() == "precious\n", unreachable
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left behind
    batch_id = submit_api(gw, 2, "o", model="mock/echo")
    deadline = time.monotonic() + 30
    while settled(gw, batch_id)[1] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    done = aistats(cli_env(gw), "batch", "results", batch_id, "-o", str(target), "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"path": str(target), "lines": 2}
    assert sorted(json.loads(x)["custom_id"] for x in target.read_text().splitlines()) == ["o0", "o1"]


def test_every_command_takes_json(gw: Gateway) -> None:
    created = subprocess.run([*CLI, "keys", "create", "--workspace", "json-keys", "--json"], env=gw.env,
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["workspace_id"] == "ws_json-keys" and key["key"].startswith("sk-aistats-")
    assert httpx.get(f"{gw.base_url}/batches", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200
    revoked = subprocess.run([*CLI, "keys", "revoke", key["id"], "--json"], env=gw.env, capture_output=True,
                             text=True, timeout=120)
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked"] == key["id"], revoked
    version = subprocess.run([*CLI, "version", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(version.stdout)["version"]
    migrated = subprocess.run([*CLI, "migrate", "--json"], env=gw.env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0 and json.loads(migrated.stdout)["schema"] == "up to date", migrated
