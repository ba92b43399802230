"""A first start as a newcomer sees it (issue 18, item 4): `aistats serve` on an empty data directory
prints, once it accepts connections, a boxed one-time key after the startup logs and a ready line with
the API and dashboard URLs, and `GET /v1` answers an index instead of a 404."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import pexpect

from tests.harness import free_port


def test_first_start_prints_a_boxed_key_and_where_to_go(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "AI_STATS_", "OPENAI_"))}
    env.update({"AISTATS_DATA_DIR": str(tmp_path / "data"), "AISTATS_PORT": str(port), "NO_COLOR": "1"})
    child = pexpect.spawn(sys.executable, ["-m", "aistats_gateway.cli.main", "serve", "--log-format", "text"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(40, 160))
    try:
        child.expect(r"ready: API (\S+) · dashboard (\S+) · health (\S+)")
        api, dashboard, health = child.match.groups()
        before = child.before
        assert (api, dashboard) == (f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/ui/")
        box = before[before.rindex("╔"):].strip().splitlines()
        key = next(m.group(0) for line in box if (m := re.search(r"sk-aistats-\S+", line)))
        assert box[-1].startswith("╚") and "shown only this once" in before
        assert not re.search(r"(?i)migrat|startup complete", before[before.rindex("╔"):])  # no log inside or after

        index = httpx.get(api, timeout=10)  # the URL printed answers, without a key
        assert index.status_code == 200, index.text
        body = index.json()
        assert body["dashboard"] == dashboard and body["health"] == health and "/v1/batches" in body["endpoints"]
        assert httpx.get(f"{api}/batches", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        assert httpx.get(dashboard, timeout=10).status_code == 200
    finally:
        child.terminate(force=True)
