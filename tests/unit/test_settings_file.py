"""Strict settings (config.py, config_file.py): every TOML example in the README is read, value by value; an
unknown key or table stops the load with its name, its place and a close match; settings are frozen."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aistats_gateway.config import ConfigError, Settings
from aistats_gateway.config_file import GROUPS

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)


def _load(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return Settings.load({"AISTATS_CONFIG": str(path), "AISTATS_DATA_DIR": str(tmp_path / "data"), **env})


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(actual, BaseModel):
        return all(_same(v, getattr(actual, k)) for k, v in expected.items())
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(actual, Path):
        return actual == Path(expected).expanduser()
    return bool(actual == expected)


def test_the_readme_has_toml_examples() -> None:
    assert len(_examples()) >= 3


@pytest.mark.parametrize("index", range(len(_examples())))
def test_every_readme_toml_example_arrives_value_by_value(tmp_path: Path, index: int) -> None:
    text = _examples()[index]
    toml = tomllib.loads(text)
    settings = _load(tmp_path, text)
    checked = 0
    for table, values in toml.items():
        if table in GROUPS:
            for key, value in values.items():
                if key == "data_dir":
                    continue  # the test's AISTATS_DATA_DIR wins over the file, as documented
                assert _same(value, getattr(settings, key)), (table, key)
                checked += 1
        elif table == "providers":
            by_name = {p.name: p for p in settings.providers}
            for entry in values:
                assert _same(entry, by_name[entry["name"]]), entry
                checked += 1
        elif table == "prices":
            assert _same(values, settings.prices)
            checked += 1
        else:
            section = getattr(settings, table)
            for key, value in values.items():
                assert _same(value, getattr(section, key)), (table, key)
                checked += 1
    assert checked > 0


def test_retention_from_the_file_is_read(tmp_path: Path) -> None:
    settings = _load(tmp_path, "[retention]\ninput_files_seconds = 7200\n")
    assert settings.retention.input_files_seconds == 7200


@pytest.mark.parametrize(("text", "needles"), [
    ("[executor]\nconcurency = 12\n", ["'concurency'", "[executor]", "gateway.toml", "did you mean 'concurrency'"]),
    ("[excutor]\nconcurrency = 12\n", ["'excutor'", "did you mean 'executor'"]),
    ("[server]\nhots = '0.0.0.0'\n", ["'hots'", "[server]", "did you mean 'host'"]),
    ("[[providers]]\nname = 'x'\nkind = 'openai'\nmodles = ['*']\n",
     ["'modles'", "[[providers]] #1", "did you mean 'models'"]),
    ("[[providers]]\nname = 'x'\nkind = 'openai'\n[providers.limits.'gpt-4o']\nrpmm = 5\n",
     ["'rpmm'", "did you mean 'rpm'"]),
    ("[executor]\nconcurrency = 0\n", ["executor.concurrency", "[executor]", "greater than or equal to 1"]),
    ("verbose = true\n", ["'verbose'"]),
])
def test_unknown_or_invalid_settings_stop_the_load_naming_the_key(tmp_path: Path, text: str,
                                                                  needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_settings_are_frozen_values(tmp_path: Path) -> None:
    settings = _load(tmp_path, "[executor]\nconcurrency = 12\n", OPENAI_API_KEY="sk-x")
    with pytest.raises(ValidationError):
        settings.executor.concurrency = 13  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.providers[0].api_key = "other"  # type: ignore[misc]


def test_a_key_named_by_its_variable_is_read_at_load(tmp_path: Path) -> None:
    text = "[[providers]]\nname = 'vllm'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9/v1'\napi_key_env = 'VK'\n"
    settings = _load(tmp_path, text, VK="sk-from-env")
    assert {p.name: p.api_key for p in settings.providers}["vllm"] == "sk-from-env"


def test_home_in_the_data_dir_is_expanded(tmp_path: Path) -> None:
    settings = Settings.load({"AISTATS_DATA_DIR": "~/aistats-test-data", "HOME": str(tmp_path)})
    assert "~" not in str(settings.data_dir)
