"""The small toolkit both configuration files are checked with (config.py, webconfig.py).

Every problem is collected, not raised, so that an operator sees all of them at once, each as
"key.path: what is wrong", in one style: "must be a string, not a number", "unknown key (did
you mean listall?)". Why not pydantic: its messages name types the way Python does ("Input
should be a valid string") and put the path in a second line; rewriting every message back
into this form, and keeping the document order and the "did you mean" hints, would be more
code than these few functions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def type_name(value: object) -> str:
    """The kind of a YAML value, for messages: "a string", "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key_message(key: object, known: Iterable[str]) -> str:
    """ "unknown key", with the closest known key when one is close: typos must not pass."""
    hint = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"unknown key (did you mean {hint[0]}?)" if hint else "unknown key"


class Problems:
    """Collects "path: message" lines; `items` in the order they were found."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def __bool__(self) -> bool:
        return bool(self.items)

    # ---- the checks both files need

    def known_keys(
        self, value: dict[Any, Any], path: str, known: tuple[str, ...]
    ) -> dict[str, Any]:
        """The entries whose key is known; each other key is a problem."""
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in known:
                out[key] = item
            else:
                shown = key[:40] if isinstance(key, str) else repr(key)[:40]
                self.add(join(path, shown), unknown_key_message(key, known))
        return out

    def mapping(self, value: object, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        """A mapping of known keys; absent (None) is empty."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path or "(top level)", f"must be a mapping of keys, not {type_name(value)}")
            return {}
        return self.known_keys(value, path, known)

    def string(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type_name(value)}")
            return None
        return value

    def boolean(self, value: object, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, not {type_name(value)}")
            return default
        return value

    def string_list(self, value: object, path: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.add(path, f"must be a list, not {type_name(value)}")
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(f"{path}[{i}]", f"must be a string, not {type_name(item)}")
                return None
        return tuple(value)
