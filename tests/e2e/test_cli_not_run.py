"""The CLI on a cancelled batch (issue 18, item 1): the bar of `watch` ends at what ran, not at 100 %, and
`watch`, `show` and `ls` say how many lines never ran instead of counting them as failed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pexpect
import pytest

from tests.e2e.test_cli_live import CONFIG, aistats, cli_env, spawn, submit_api
from tests.harness import Gateway, wait_for_batch


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("cli-not-run") / "data", config=CONFIG)
    yield g
    g.stop()


def test_a_cancelled_batch_reports_lines_not_run(gw: Gateway) -> None:
    batch_id = submit_api(gw, 2000, "c")
    child = spawn(cli_env(gw), "batch", "watch", batch_id)
    try:
        child.expect(r"in_progress[^\r]*? [1-9]\d*/2000 done", timeout=60)
        with gw.client() as client:
            assert client.post(f"/batches/{batch_id}/cancel").status_code == 200
            final = wait_for_batch(client, batch_id)
        counts = final["request_counts"]
        ran, never = counts["completed"], counts["cancelled"]
        assert ran + never == 2000 and 0 < ran < 1000
        child.expect(rf"cancelled[^\r\n]*? (\d+)% {ran}/2000 done, 0 failed · {never:,} not run \(cancelled\)",
                     timeout=30)
        assert abs(int(child.match.group(1)) - ran * 100 / 2000) <= 1  # the bar shows what ran, never 100 %
        child.expect(rf"completed, 0 failed · {never:,} not run \(cancelled\) of 2000")
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)

    show = aistats(cli_env(gw), "batch", "show", batch_id)
    assert f"— {ran} completed, 0 failed · {never:,} not run (cancelled) of 2000" in show.stdout, show.stdout
    listing = aistats(cli_env(gw), "batch", "ls")
    row = next(line for line in listing.stdout.splitlines() if batch_id in line)
    assert f"{ran}/0/2000 ({never:,} not run)" in row and f"{ran * 100 // 2000}%" in row, row
    assert re.search(r"\b100%", row) is None
