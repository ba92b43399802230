"""Scale-out settings: parsed from the environment and TOML, URLs normalized, bad ones refused at start
with the setting's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistats_gateway.config import ConfigError, Settings


def test_scale_out_settings_from_the_environment(tmp_path: Path) -> None:
    s = Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_DATABASE_URL": "postgresql://u:p@db:5432/gw",
                       "AISTATS_BLOB_URL": "s3://bucket/prod", "AISTATS_S3_ENDPOINT_URL": "http://minio:9000",
                       "AISTATS_S3_ACCESS_KEY_ID": "ak", "AISTATS_S3_SECRET_ACCESS_KEY": "sk",
                       "AISTATS_REDIS_URL": "redis://cache:6379/1", "AISTATS_REDIS_PREFIX": "gw1:",
                       "AISTATS_LEASE_SECONDS": "12.5"})
    assert s.sqlalchemy_url == "postgresql+asyncpg://u:p@db:5432/gw" and s.is_postgresql
    assert (s.blob_url, s.s3.endpoint_url, s.s3.access_key_id, s.s3.secret_access_key) == (
        "s3://bucket/prod", "http://minio:9000", "ak", "sk")
    assert (s.redis_url, s.redis.key_prefix, s.executor.lease_seconds) == ("redis://cache:6379/1", "gw1:", 12.5)
    assert Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_DATABASE_URL": "postgres://x@h/d"}
                         ).sqlalchemy_url == "postgresql+asyncpg://x@h/d"
    default = Settings.load({"AISTATS_DATA_DIR": str(tmp_path)})
    assert default.sqlalchemy_url.startswith("sqlite+aiosqlite:///") and not default.is_postgresql
    assert default.blob_url is None and default.redis_url is None


def test_scale_out_settings_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[storage]\ndatabase_url = "postgresql://a@b/c"\nblob_url = "s3://files"\n'
                      'redis_url = "redis://r:6379/0"\n[s3]\npart_size_bytes = 16777216\n[redis]\nkey_prefix = "x:"\n')
    s = Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_CONFIG": str(config)})
    assert (s.blob_url, s.s3.part_size_bytes, s.redis.key_prefix) == ("s3://files", 16 * 1024 * 1024, "x:")


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("AISTATS_DATABASE_URL", "mysql://x@y/z", "AISTATS_DATABASE_URL"),
    ("AISTATS_BLOB_URL", "gs://bucket", "AISTATS_BLOB_URL"),
    ("AISTATS_BLOB_URL", "s3:///prefix-without-bucket", "s3://BUCKET"),
    ("AISTATS_REDIS_URL", "127.0.0.1:6379", "AISTATS_REDIS_URL"),
    ("AISTATS_LEASE_SECONDS", "-1", "executor.lease_seconds"),
])
def test_unusable_urls_are_refused_naming_the_setting(tmp_path: Path, var: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        Settings.load({"AISTATS_DATA_DIR": str(tmp_path), var: value})
