from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway on the embedded default (SQLite + local files + mock), shared by read-mostly tests."""
    gw = Gateway(tmp_path_factory.mktemp("gw") / "data")
    yield gw
    gw.stop()


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
