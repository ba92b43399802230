"""The shutdown helper (tasks.py) and the internal error tree (errors.py)."""

from __future__ import annotations

import asyncio

from aistats_gateway import errors
from aistats_gateway.tasks import cancel_and_wait


def test_cancel_and_wait_ends_every_task_even_when_one_fails() -> None:
    ended: list[str] = []

    async def sleeper(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append(name)

    async def failing() -> None:
        raise RuntimeError("boom")

    async def main() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(sleeper("a")), asyncio.create_task(failing()), asyncio.create_task(sleeper("b"))]
        await asyncio.sleep(0)
        await cancel_and_wait([None, *tasks])
        return tasks

    tasks = asyncio.run(main())
    assert sorted(ended) == ["a", "b"]
    assert all(task.done() for task in tasks)


def test_internal_errors_form_one_tree_apart_from_the_api_errors() -> None:
    assert issubclass(errors.StaleTransition, errors.StorageError)
    assert issubclass(errors.InputFileUnavailable, errors.StorageError)
    assert issubclass(errors.UpstreamUnavailable, errors.ProviderError)
    assert issubclass(errors.Rejected, errors.NativeError) and issubclass(errors.Unavailable, errors.NativeError)
    assert issubclass(errors.NativeError, errors.ProviderError)
    for cls in (errors.StorageError, errors.ProviderError):
        assert issubclass(cls, errors.InternalError) and not issubclass(cls, errors.GatewayError)
