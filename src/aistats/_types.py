"""Returned objects: dicts that also allow attribute access, so `batch.id` and `batch["id"]` both work
and every field the server sends (including ones this SDK version does not know yet) is kept."""

from __future__ import annotations

from typing import Any


class APIObject(dict[str, Any]):
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


class Batch(APIObject):
    """A batch object (see the gateway's API.md for the fields)."""


class FileObject(APIObject):
    """A file object."""


class Page(APIObject):
    """A list page: `data`, `first_id`, `last_id`, `has_more`."""
