"""Settings: environment over TOML over defaults; providers from OPENAI_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistats_gateway.config import ConfigError, Settings


def test_defaults_and_env(tmp_path: Path) -> None:
    s = Settings.load({"HOME": str(tmp_path)})
    assert s.port == 8787 and s.host == "127.0.0.1"
    assert s.data_dir == tmp_path / ".local" / "share" / "aistats"
    assert [p.name for p in s.providers] == ["mock"]
    s = Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_PORT": "9000", "OPENAI_API_KEY": "k",
                       "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"})
    assert s.port == 9000 and s.sqlalchemy_url.endswith("gateway.db")
    openai = next(p for p in s.providers if p.name == "openai")
    assert openai.base_url == "http://127.0.0.1:8000/v1" and openai.api_key == "k"


def test_toml_file_and_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        '[server]\nport = 9100\n[executor]\nconcurrency = 8\n'
        '[[providers]]\nname = "vllm"\nkind = "openai"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        'api_key_env = "VLLM_KEY"\nmodels = ["llama*"]\n'
    )
    s = Settings.load({"AISTATS_CONFIG": str(cfg), "AISTATS_DATA_DIR": str(tmp_path), "AISTATS_PORT": "9200",
                       "VLLM_KEY": "secret"})
    assert s.port == 9200 and s.executor.concurrency == 8
    vllm = next(p for p in s.providers if p.name == "vllm")
    assert vllm.api_key == "secret" and vllm.models == ["llama*"]


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load({"AISTATS_CONFIG": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("[executor]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match=r"executor\.concurrency"):
        Settings.load({"AISTATS_CONFIG": str(bad), "AISTATS_DATA_DIR": str(tmp_path)})
