"""The execution-mode rules (domain/execution.py): which mode a batch gets, and the plan its lines pay."""

from __future__ import annotations

import pytest

from aistats_gateway.domain import execution
from aistats_gateway.domain.execution import BATCH, STANDARD, ExecutionMode

DAY = 24 * 3600


@pytest.mark.parametrize(("requested", "window", "providers", "expected"), [
    (None, DAY, ["openai"], "managed"),  # rows from before execution existed
    ("managed", DAY, ["openai"], "managed"),
    ("auto", DAY, ["openai"], "native"),
    ("auto", DAY, ["openai", "anthropic"], "native"),
    ("auto", DAY - 60, ["openai"], "managed"),  # under the providers' 24h window
    ("auto", 7 * DAY, ["openai", "vllm"], "managed"),  # one provider without a batch API
    ("auto", DAY, [], "managed"),
    ("native", 3600, ["openai"], "native"),  # explicit: any window
    ("native", DAY, ["vllm"], "managed"),  # its provider lost batch_api since create
])
def test_execution_rule(requested: str | None, window: int, providers: list[str], expected: str) -> None:
    assert execution.resolve(requested, window, providers, {"openai", "anthropic"}) == expected


@pytest.mark.parametrize(("requested", "window", "batch_api", "expected"), [
    (ExecutionMode.AUTO, DAY, True, ExecutionMode.AUTO),  # resolved at validation, from the lines' providers
    (ExecutionMode.AUTO, DAY - 60, True, ExecutionMode.MANAGED),  # auto needs the providers' 24h
    (ExecutionMode.AUTO, 7 * DAY, False, ExecutionMode.MANAGED),  # no provider has a batch API
    (ExecutionMode.NATIVE, 3600, True, ExecutionMode.NATIVE),  # explicit: any window
    (ExecutionMode.MANAGED, DAY, True, ExecutionMode.MANAGED),
])
def test_mode_at_create(requested: ExecutionMode, window: int, batch_api: bool, expected: ExecutionMode) -> None:
    assert execution.at_create(requested, window, batch_api) is expected


def test_native_lines_are_priced_at_the_batch_plan_and_the_rest_standard() -> None:
    assert execution.pricing_plan("native") == BATCH
    for mode in ("managed", "auto", None, "something old"):
        assert execution.pricing_plan(mode) == STANDARD


def test_provider_window_is_the_providers_24h_when_ours_allows_it() -> None:
    assert execution.provider_window(7 * DAY, "168h") == "24h"
    assert execution.provider_window(DAY, "24h") == "24h"
    assert execution.provider_window(3600, "1h") == "1h"


def test_native_job_state_table() -> None:
    from aistats_gateway.domain import native_job
    from aistats_gateway.domain.native_job import NativeJobState as S
    from aistats_gateway.domain.transitions import IllegalTransition

    for move in [(S.CREATING, S.RUNNING), (S.CREATING, S.COLLECTING), (S.CREATING, S.DONE),
                 (S.RUNNING, S.COLLECTING), (S.COLLECTING, S.DONE)]:
        native_job.check(*move)
    for current, target in [(S.DONE, S.RUNNING), (S.RUNNING, S.DONE), (S.COLLECTING, S.RUNNING),
                            (S.RUNNING, S.CREATING)]:
        with pytest.raises(IllegalTransition):
            native_job.check(current, target)
    assert {s for s in S if s.at_provider} == {S.CREATING, S.RUNNING}
