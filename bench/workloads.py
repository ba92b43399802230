#!/usr/bin/env python3
"""Workloads W1–W4 of the benchmark issue: the gateway and two baseline clients on one mock upstream.

    .venv/bin/python bench/workloads.py --workload W1 [--scale 0.1] [--json out.json]
    .venv/bin/python bench/workloads.py --workload all --scale 0.1
    .venv/bin/python bench/workloads.py --workload W3a --runners gateway --pyspy /tmp/prof

For each workload (see workload_data.py) it writes the input JSONL into a temporary directory,
starts one mock upstream process (`aistats_gateway.testing.mock_upstream`, with the workload's
latency and RPM/TPM) and runs, one after the other against it (reset in between):

* `gateway`: a fresh gateway process, the batch uploaded, created and polled to a terminal status
  (workload_runners.py says exactly what is timed and measured);
* `naive`: `AsyncOpenAI` + `asyncio.Semaphore(64)` (baselines.py);
* `tokenbucket`: a cookbook-style rate-limited client given the same limits (baselines.py).

W4 runs the gateway only and cancels the batch as soon as validation is over (`--w4-complete` lets
it run). It prints one markdown table per workload, then each target of the issue with its
measured value, and writes everything to `--json` (default bench/results/workloads-<time>.json).
A benchmark, not a test: it never fails because something was slow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from batch_throughput import machine_info, wait_for_quiet_machine
from procstats import REPO
from workload_data import WORKLOADS, InputFile, Workload, ideal_seconds, write_input
from workload_runners import Mock, run_baseline, run_gateway

RUNNERS = ("gateway", "naive", "tokenbucket")


def _f(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:{spec}}{unit}"


def _mib(kb: Any) -> str:
    return _f(kb / 1024 if kb is not None else None, ",.0f", " MiB")


COLUMNS: list[tuple[str, Any]] = [
    ("runner", lambda r: r["runner"]),
    ("ok / failed (by 429)", lambda r: f"{_f(r.get('ok'), ',')} / {_f(r.get('failed'), ',')} "
                                       f"({_f(r.get('failed_429'), ',')})"),
    ("upload", lambda r: _f(r.get("upload_s"), ".2f", " s")),
    ("time", lambda r: _f(r.get("time_s"), ".2f", " s")),
    ("items/s", lambda r: _f(r.get("items_per_s"))),
    ("gateway CPU-µs/item", lambda r: _f(r.get("gateway_cpu_us_per_item"))),
    ("client CPU-µs/item", lambda r: _f(r.get("client_cpu_us_per_item"))),
    ("peak RSS (growth)", lambda r: f"{_mib(r.get('peak_rss_kb'))} (+{_mib(r.get('rss_growth_kb'))})"),
    ("429s (% of requests)", lambda r: f"{_f(r.get('throttled_429'), ',')} ({_f(r.get('throttled_pct'), '.2f')} %)"),
    ("max accepted in 1 s", lambda r: _f(r.get("max_accepted_in_1s"), ",")),
    ("dup accepts", lambda r: _f(r.get("dup_accepted_lines"), ",")),
    ("efficiency", lambda r: _f(100 * r["efficiency"] if r.get("efficiency") else None, ".1f", " %")),
    ("mock CPU-µs/req", lambda r: _f(r.get("mock_cpu_us_per_request"), ".1f")),
    ("other load", lambda r: _f(r.get("other_processes_cores"), ".2f", " cores")),
]


def print_table(w: Workload, data: InputFile, rows: list[dict[str, Any]]) -> None:
    ideal = ideal_seconds(w, data)
    print(f"\n### {w.name}: {w.title}\n")
    print(f"{data.lines:,} lines, {data.bytes / 1e6:,.1f} MB, mock charge {data.cost_tokens:,} tokens; "
          f"latency {w.latency_ms:g} ms; rpm {w.rpm or '—'}, tpm {w.tpm or '—'}; "
          f"ideal time {_f(ideal, '.1f', ' s')}\n")
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|")
    for r in rows:
        print("| " + " | ".join(str(fn(r)) if "error" not in r or i == 0 else "" for i, (_, fn) in enumerate(COLUMNS))
              + " |")
    for r in rows:
        if r.get("error"):
            print(f"\n[{w.name} {r['runner']}] ERROR: {r['error']}")
        if r.get("validation_s") is not None:
            print(f"\n[{w.name} gateway] status {r.get('status')}; validation (create → in_progress) "
                  f"{r['validation_s']:.2f} s = {_f(r.get('validation_mb_per_s'), ',.1f')} MB/s; "
                  f"each custom_id exactly once in the output: {r.get('each_custom_id_once', '— (cancelled)')}")
        if r.get("profile"):
            print(f"[{w.name} gateway] py-spy profile: {r['profile']} — summary: .venv/bin/python "
                  f"bench/pyspy_summary.py {r['profile']} --cpu-seconds {r.get('gateway_cpu_s', 0):.2f} "
                  f"--items {data.lines}")


def targets(w: Workload, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the gateway row, each with its measured value and whether it is met."""
    gw = next((r for r in rows if r["runner"] == "gateway" and "error" not in r), None)
    if gw is None:
        return []
    out: list[dict[str, Any]] = []

    def check(what: str, value: Any, ok: bool | None) -> None:
        out.append({"workload": w.name, "target": what, "value": value, "met": ok})

    if w.name == "W1":
        check("≥ 3,000 items/s end to end", gw.get("items_per_s"), (gw.get("items_per_s") or 0) >= 3000)
        check("≤ 300 gateway CPU-µs per item", gw.get("gateway_cpu_us_per_item"),
              (gw.get("gateway_cpu_us_per_item") or 1e9) <= 300)
    if w.name in ("W3a", "W3b"):
        check("efficiency ≥ 97 %", gw.get("efficiency"), (gw.get("efficiency") or 0) >= 0.97)
        check("429s ≤ 0.1 % of requests", gw.get("throttled_pct"), (gw.get("throttled_pct") or 0) <= 0.1)
        check("no line failed by a 429", gw.get("failed_429"), gw.get("failed_429") == 0)
    if w.name == "W4":
        check("peak RSS growth ≤ 100 MB", gw.get("rss_growth_kb"), (gw.get("rss_growth_kb") or 1e12) <= 100 * 1024)
        check("validation ≥ 200 MB/s", gw.get("validation_mb_per_s"), (gw.get("validation_mb_per_s") or 0) >= 200)
    return out


def run_workload(w: Workload, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / w.name
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{w.name}: writing {w.lines:,} lines …", file=sys.stderr, flush=True)
    data = write_input(w, workdir / "input.jsonl")
    mock = Mock(w, workdir, args.latency_dist)
    rows: list[dict[str, Any]] = []
    try:
        for runner in args.runners:
            if runner != "gateway" and not w.baselines:
                continue
            if args.quiet_wait > 0:
                wait_for_quiet_machine(args.quiet_wait, args.quiet_cores)
            print(f"{w.name}: {runner} …", file=sys.stderr, flush=True)
            rundir = workdir / runner
            rundir.mkdir(exist_ok=True)
            row = (run_gateway(w, data, mock, args, rundir) if runner == "gateway"
                   else run_baseline(runner, w, data, mock, args, rundir))
            rows.append(row)
    finally:
        mock.stop()
    print_table(w, data, rows)
    return {"workload": w.__dict__, "input": {"lines": data.lines, "bytes": data.bytes,
                                              "cost_tokens": data.cost_tokens},
            "ideal_s": ideal_seconds(w, data), "rows": rows, "targets": targets(w, rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workload", default="all", help="W1, W2, W3a, W3b, W4, a comma list, or all")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply line counts (and W4's size) by this")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma list of gateway, naive, tokenbucket")
    parser.add_argument("--json", default=None, help="results file (default bench/results/workloads-<UTC>.json)")
    parser.add_argument("--concurrency", type=int, default=None, help="gateway [executor] concurrency (default 64)")
    parser.add_argument("--latency-dist", choices=("fixed", "longtail"), default="fixed",
                        help="the mock's latency distribution where a workload has latency (W2)")
    parser.add_argument("--tb-burst-seconds", type=float, default=1.0,
                        help="token-bucket baseline: capacity in seconds of rate (the cookbook keeps 60)")
    parser.add_argument("--tb-pause-after-429", type=float, default=15.0,
                        help="token-bucket baseline: pause after a 429 (cookbook: 15)")
    parser.add_argument("--w4-complete", action="store_true", help="let W4's batch run instead of cancelling it")
    parser.add_argument("--pyspy", default=None, metavar="DIR", help="record the gateway with py-spy (if installed)")
    parser.add_argument("--poll-ms", type=float, default=100.0)
    parser.add_argument("--settle-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--quiet-wait", type=float, default=0.0,
                        help="before each runner, wait up to this many seconds for an idle machine")
    parser.add_argument("--quiet-cores", type=float, default=0.3)
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    names = list(WORKLOADS) if args.workload == "all" else [n.strip() for n in args.workload.split(",")]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)} or all")
    args.runners = [r.strip() for r in args.runners.split(",")]
    if any(r not in RUNNERS for r in args.runners):
        parser.error(f"--runners: choose from {RUNNERS}")

    started = dt.datetime.now(dt.UTC)
    out = Path(args.json) if args.json else REPO / "bench" / "results" / (
        f"workloads-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["workloads.py", *argv])
    root = Path(tempfile.mkdtemp(prefix="aistats-workloads-"))
    results = []
    try:
        for name in names:
            results.append(run_workload(WORKLOADS[name].scaled(args.scale), args, root))
    finally:
        if args.keep_workdir:
            print(f"work directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    all_targets = [t for r in results for t in r["targets"]]
    if all_targets:
        print("\n### Targets (gateway)\n\n| workload | target | measured | met |\n|---|---|---:|---|")
        for t in all_targets:
            v = t["value"]
            shown = f"{100 * v:.1f} %" if "efficiency" in t["target"] and v is not None else (
                _mib(v) if "RSS" in t["target"] else _f(v, ",.2f" if isinstance(v, float) else ","))
            print(f"| {t['workload']} | {t['target']} | {shown} | {'yes' if t['met'] else 'NO'} |")
    if args.scale != 1.0:
        print(f"\n(scale {args.scale}: line counts and W4's size were multiplied by it; the mock's buckets start "
              "full, so a run can beat the ideal time by up to 1 s and short runs overstate efficiency)")
    doc = {"benchmark": "workloads", "started_utc": started.isoformat(timespec="seconds"), "command": command,
           "args": vars(args), "machine": machine_info(), "workloads": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nresults: {out}\ncommand: {command}")
    errors = [r for res in results for r in res["rows"] if r.get("error")]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
