"""Nothing lost, nothing twice: kill the gateway at random moments and at every failpoint, restart it,
and check the exactly-once invariants against the upstream's per-custom_id ledger.

Seeded (AISTATS_CRASH_SEED, AISTATS_CRASH_CYCLES to change them). Every cycle starts the gateway on the
same data directory, lets it run until a failpoint kills it or the harness sends SIGKILL (or, in some
cycles, SIGTERM for a graceful stop), then reads the SQLite file to record which lines were settled and
how often the upstream had seen each one at that moment.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, ProcessExited, Receiver, Upstream, jsonl

SEED = int(os.environ.get("AISTATS_CRASH_SEED", "20261129"))
CYCLES = int(os.environ.get("AISTATS_CRASH_CYCLES", "24"))
FAILPOINTS = ["after_lease", "after_upstream", "after_settle", "mid_output_write", "before_publish",
              "after_event_claimed"]
CONFIG = """
[executor]
concurrency = 24
expiry_check_seconds = 0.5
[webhooks]
allow_local = true
retry_schedule_seconds = [0.2, 0.5, 1, 1, 1, 1, 1, 1]
poll_interval_seconds = 0.1
restart_spread_seconds = 0.2
"""
SETTLED = (2, 3)


@dataclass
class Tracked:
    batch_id: str
    custom_ids: list[str]
    # custom_id -> upstream calls seen when the line was first found settled after a kill
    committed_at: dict[str, int] = field(default_factory=dict)
    # custom_id -> kills at which the line had been sent but was not settled (a re-send is allowed)
    in_flight_kills: dict[str, int] = field(default_factory=dict)
    graceful_unsettled_sent: list[str] = field(default_factory=list)


def quiet_ledger(upstream: Upstream, quiet: float = 0.3) -> dict[str, int]:
    """The upstream's ledger once its request count has stopped moving for `quiet` seconds."""
    seen = upstream.stats().get("requests", 0)
    while True:
        time.sleep(quiet)
        now = upstream.stats().get("requests", 0)
        if now == seen:
            return upstream.ledger()
        seen = now


def settled_lines(db: Path, batch_id: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT custom_id, status FROM items WHERE batch_id = ?", (batch_id,)).fetchall()
    return {cid: status for cid, status in rows}


def make_lines(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{prefix} {i}"}],
                      "max_tokens": 16, "x_fault": {"key": f"{prefix}-{i}"}}} for i in range(n)]


def check_batch(api: httpx.Client, tracked: Tracked, ledger: dict[str, int]) -> dict[str, Any]:
    batch = api.get(f"/batches/{tracked.batch_id}").json()
    assert batch["status"] == "completed", batch
    seen: dict[str, str] = {}
    counts = {"output": 0, "errors": 0}
    for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")):
        if not batch[key]:
            continue
        text = api.get(f"/files/{batch[key]}/content").text
        for raw in text.splitlines():
            line = json.loads(raw)  # every line is valid JSON
            cid = line["custom_id"]
            assert cid not in seen, f"{cid} appears twice ({seen[cid]} and {kind})"
            seen[cid] = kind
            counts[kind] += 1
    assert sorted(seen) == sorted(tracked.custom_ids), "output + error files must hold every input line once"
    rc = batch["request_counts"]
    assert {k: rc[k] for k in ("total", "completed", "failed")} == {
        "total": len(tracked.custom_ids), "completed": counts["output"], "failed": counts["errors"]}
    # the extensions split the same lines: what ran and succeeded, what ran and failed, what never ran
    assert rc["succeeded"] == rc["completed"] and rc["errored"] + rc["cancelled"] + rc["expired"] == rc["failed"]
    for cid in tracked.custom_ids:
        calls = ledger.get(cid, 0)
        assert calls >= 1 or seen[cid] == "errors"
        if cid in tracked.committed_at:
            assert calls == tracked.committed_at[cid], f"{cid} was sent again after its result was committed"
        extra = calls - 1
        assert extra <= tracked.in_flight_kills.get(cid, 0), \
            f"{cid}: {calls} upstream calls, but it was in flight at only {tracked.in_flight_kills.get(cid, 0)} kills"
    assert tracked.graceful_unsettled_sent == [], "after SIGTERM no line may be left sent-but-unsettled"
    return batch


@pytest.mark.slow
def test_seeded_kill_restart_cycles(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    upstream = Upstream(tmp_path / "upstream.log", latency_ms=8)
    receiver = Receiver(tmp_path / "receiver.log", secret="whsec_crash")
    data = tmp_path / "data"
    db = data / "gateway.db"
    batches: list[Tracked] = []
    finished: list[dict[str, Any]] = []
    report = {"cycles": 0, "sigkill": 0, "sigterm": 0, "failpoints": {}, "batches": 0}
    gw: Gateway | None = None

    attempts = itertools.count()

    def new_batch(api: httpx.Client, index: int) -> Tracked:
        # A fresh prefix per attempt: a create cut short by a failpoint may still have stored its batch, and
        # a retry must not reuse its custom_ids (the upstream ledger counts per custom_id).
        lines = make_lines(f"b{index}a{next(attempts)}", rng.randint(800, 1600))
        file_id = api.post("/files", files={"file": (f"b{index}.jsonl", jsonl(lines))},
                           data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "webhook": {"url": receiver.url, "secret": "whsec_crash",
                                                       "events": ["batch.created", "batch.progress",
                                                                  "batch.completed"]}}).json()
        return Tracked(batch["id"], [line["custom_id"] for line in lines])

    env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-up"}
    try:
        # Every failpoint first (twice over), then a seeded mix of SIGKILL, failpoints and SIGTERM.
        plan = ["failpoint"] * (2 * len(FAILPOINTS)) + [
            rng.choice(["sigkill", "sigkill", "failpoint", "sigterm"]) for _ in range(CYCLES - 2 * len(FAILPOINTS))]
        for cycle, mode in enumerate(plan):
            failpoint = None
            extra_env = dict(env)
            ledger_before = quiet_ledger(upstream)
            if mode == "failpoint":
                failpoint = FAILPOINTS[cycle % len(FAILPOINTS)]
                late = failpoint in ("mid_output_write", "before_publish")
                hits = 1 if late else rng.randint(1, {"after_event_claimed": 3, "after_settle": 4}.get(failpoint, 30))
                extra_env["AISTATS_FAILPOINTS"] = f"{failpoint}:{hits}"
            try:
                gw = Gateway(data, env=extra_env, config=CONFIG)
            except ProcessExited as exc:  # the failpoint fired while the restart was recovering
                assert exc.returncode == 86, str(exc)
                report["failpoints"][failpoint] = report["failpoints"].get(failpoint, 0) + 1  # type: ignore[index]
                gw = None
            if gw is not None:
                api = gw.client()
                try:
                    if not batches or api.get(f"/batches/{batches[-1].batch_id}").json()["status"] == "completed":
                        if batches:
                            finished.append(check_batch(api, batches[-1], upstream.ledger()))
                        batches.append(new_batch(api, len(batches)))
                except httpx.TransportError:  # a failpoint fired between "ready" and this request
                    assert gw.proc.wait(10) == 86
                if mode == "failpoint":
                    try:
                        # finalization points need the batch to reach its end: give those longer
                        gw.proc.wait(timeout=20.0 if failpoint in ("mid_output_write", "before_publish")
                                     else rng.uniform(2.0, 6.0))
                    except Exception:
                        gw.stop(signal.SIGKILL)  # the point was not reached this time
                    else:
                        assert gw.proc.returncode == 86, f"gateway exited {gw.proc.returncode}, not at a failpoint"
                        report["failpoints"][failpoint] = report["failpoints"].get(failpoint, 0) + 1  # type: ignore[index]
                        gw.stop()
                else:
                    time.sleep(rng.uniform(0.2, 1.6))
                    gw.stop(signal.SIGKILL if mode == "sigkill" else signal.SIGTERM, timeout=60)
                    report[mode] += 1  # type: ignore[operator]
            current = batches[-1]
            gw = None
            report["cycles"] += 1  # type: ignore[operator]
            # What survived the kill: settled lines and the upstream's counts once it has read every request
            # the dead process had already written to its sockets (they can arrive after the kill).
            ledger = quiet_ledger(upstream)
            states = settled_lines(db, current.batch_id)
            for cid in current.custom_ids:
                if states.get(cid) in SETTLED:
                    current.committed_at.setdefault(cid, ledger.get(cid, 0))
                elif ledger.get(cid, 0) > 0:
                    current.in_flight_kills[cid] = current.in_flight_kills.get(cid, 0) + 1
                    if mode == "sigterm" and ledger.get(cid, 0) > ledger_before.get(cid, 0):
                        current.graceful_unsettled_sent.append(cid)  # sent in this run, yet not settled
        # A last, clean run: everything still open must finish without a manual step.
        gw = Gateway(data, env=env, config=CONFIG)
        api = gw.client()
        deadline = time.monotonic() + 60
        while api.get(f"/batches/{batches[-1].batch_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the batch did not finish after the last restart"
            time.sleep(0.1)
        ledger = upstream.ledger()
        for tracked in batches:
            finished.append(check_batch(api, tracked, ledger))
        # Webhooks: after de-duplication by event id, each batch's created and completed event arrived.
        deadline = time.monotonic() + 30
        while True:
            events = {json.loads(d["body"])["id"]: json.loads(d["body"]) for d in receiver.received()}
            done = {(e["data"]["id"], e["type"]) for e in events.values()}
            if all((t.batch_id, "batch.completed") in done for t in batches) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for tracked in batches:
            assert (tracked.batch_id, "batch.created") in done and (tracked.batch_id, "batch.completed") in done
        keys = [(e["data"]["id"], e["delivery"]["key"]) for e in events.values()]
        assert len(keys) == len(set(keys)), "one event id per (batch, delivery key)"
        report["batches"] = len(batches)
        extras = sum(max(0, ledger.get(c, 0) - 1) for t in batches for c in t.custom_ids)
        print(f"\ncrash harness (seed {SEED}): {json.dumps(report)}; lines {sum(len(t.custom_ids) for t in batches)}, "
              f"re-sent after kills {extras}")
        assert report["cycles"] >= 20
        assert set(report["failpoints"]) == set(FAILPOINTS), f"not every failpoint fired: {report['failpoints']}"
    finally:
        if gw is not None:
            gw.stop()
        upstream.stop()
        receiver.stop()
