"""The settings file through real processes: `[retention]` from AISTATS_CONFIG reaches uploads, and a misspelt key
stops `aistats serve` at once, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import Gateway, chat_line, free_port, jsonl


def test_retention_from_the_config_file_sets_upload_expiry(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw", config="[retention]\ninput_files_seconds = 7200\n")
    try:
        with gw.client() as client:
            resp = client.post("/files", files={"file": ("in.jsonl", jsonl([chat_line("a", "hi")]))},
                               data={"purpose": "batch"})
            assert resp.status_code == 200, resp.text
            uploaded = resp.json()
            assert uploaded["expires_at"] == uploaded["created_at"] + 7200
    finally:
        gw.stop()


def test_a_misspelt_key_stops_serve_within_seconds_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[executor]\nconcurency = 12\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "OPENAI_"))}
    env |= {"AISTATS_CONFIG": str(config), "AISTATS_DATA_DIR": str(tmp_path / "data"),
            "AISTATS_PORT": str(free_port())}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "serve"], env=env, capture_output=True,
                         text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "concurency" in said and "did you mean 'concurrency'" in said and str(config) in said, said
    assert elapsed < 5, f"took {elapsed:.1f}s to refuse"
