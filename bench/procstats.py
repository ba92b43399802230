"""What a benchmark needs from the operating system: CPU and memory of a process from /proc, the machine's
busy time, free loopback ports, and child processes that log to a file and are ready when a URL answers.

Shared by every script under bench/ (`batch_throughput.py`, `stream_subscribers.py`, `workloads.py`,
`mock_loadgen.py`); it lives on its own so that they measure the same way.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- /proc readers
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces or parentheses: split after the LAST ')'; fields[0] is field 3 (state).
    return raw[raw.rindex(")") + 2:].split()


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """user+sys of `pid` plus its reaped children (cutime+cstime) and, optionally, live descendants."""
    fields = _stat_fields(pid)
    if fields is None:
        return float("nan")
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    if descendants:
        tree = _ppid_map()
        stack = list(tree.get(pid, []))
        while stack:
            child = stack.pop()
            cf = _stat_fields(child)
            if cf is not None:
                ticks += int(cf[11]) + int(cf[12])
            stack.extend(tree.get(child, []))
    return ticks / CLK_TCK


def cpu_seconds_fast(pid: int) -> float:
    """user+sys(+reaped children) of `pid` alone; cheap enough to call on every poll."""
    fields = _stat_fields(pid)
    if fields is None:
        return float("nan")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """user+sys of one thread (the gateway's event loop runs on its main thread, tid == pid)."""
    try:
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot: /proc/stat minus idle and iowait."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def wait_for_quiet_machine(max_wait: float, threshold: float) -> dict[str, Any]:
    """Wait (up to `max_wait` s) until the machine's busy cores over one second are below `threshold`.

    Other work on a small machine (a test suite, another benchmark) competes with the gateway for
    CPU and silently lowers its figures; this lowers the odds and records what was seen.
    """
    start = time.monotonic()
    busy = float("nan")
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy_seconds() - b0) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if busy < threshold or waited >= max_wait:
            return {"waited_s": round(waited, 1), "busy_cores_last_second": round(busy, 2),
                    "quiet": busy < threshold, "threshold_cores": threshold}


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A subprocess in its own session with its output in a log file; ready when `ready_url` answers."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, ready_url: str,
                 timeout: float = 60.0) -> None:
        self.name = name
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=REPO)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                httpx.get(ready_url, timeout=1.0)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not answer {ready_url} in {timeout}s:\n{self.tail()}") from None
                time.sleep(0.05)

    def tail(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-n:]
        return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


def base_env(src_dir: Path | None = None) -> dict[str, str]:
    """The environment of a child process, with `src_dir` (default: the repository's src/) first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "OPENAI_"))}
    src = str(src_dir or REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
