"""Upload bodies as the routes read them: the JSON form's `file` and `purpose`, multipart streams."""

from __future__ import annotations

import pytest

from aistats_gateway.api.uploads import json_upload_content
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.services.files import check_purpose


@pytest.mark.parametrize(("body", "code"), [
    ({}, "missing_required_parameter"), ({"file": None}, "missing_required_parameter"), ({"file": 1}, "invalid_type"),
    ({"file": ["{}"]}, "invalid_type"), ({"file": "data:x;base64,@@"}, "invalid_file"),
    ({"file": "data:no-comma"}, "invalid_file"),
])
def test_json_upload_file_errors_say_what_is_wrong(body: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        json_upload_content(body)
    assert (err.value.code, err.value.param) == (code, "file")


@pytest.mark.parametrize(("purpose", "code"), [(None, "missing_required_parameter"), ("", "missing_required_parameter"),
                                               (["batch"], "invalid_type"), (1, "invalid_type"),
                                               ("nope", "invalid_purpose")])
def test_purpose_errors_say_what_is_wrong(purpose: object, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_purpose(purpose)
    assert (err.value.code, err.value.param) == (code, "purpose")
