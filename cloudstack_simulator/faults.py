"""Fault injection: what can go wrong between a client and a management server, on demand.

A fault has a kind, an optional scope (API command names) and an optional budget (a number of
requests); it stays until its budget is spent or it is cleared. The app asks `pick()` for the
faults that hit one request and applies them; body faults that corrupt a real answer are applied
here by `corrupt()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Faults that replace the exchange before the server does anything.
TRANSPORT_KINDS = ("outage", "reset")
# Faults that replace the answer with another one (the request is not processed).
ANSWER_KINDS = ("http_error", "proxy_502", "empty", "not_json")
# Faults that process the request, then corrupt the real answer.
CORRUPT_KINDS = (
    "xml",  # the real answer, as XML: as if response=json had been dropped on the way
    "truncated",
    "jobstatus_abc",
    "created_yesterday",
    "cmd_null",
    "asyncjobs_not_list",
    "count_string",
    "entries_not_objects",
)
KINDS = ("latency", *TRANSPORT_KINDS, *ANSWER_KINDS, *CORRUPT_KINDS)

PROXY_502_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class FaultError(ValueError):
    """A fault specification that cannot be used; the message names the field."""


@dataclass
class Fault:
    id: int
    kind: str
    commands: frozenset[str] | None = None  # None: every API command
    remaining: int | None = None  # None: until cleared
    seconds: float = 0.0  # latency to add
    status: int = 503  # http_error's status
    hits: int = field(default=0)

    def matches(self, command: str) -> bool:
        return self.commands is None or command in self.commands

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "commands": None if self.commands is None else sorted(self.commands),
            "remaining": self.remaining,
            "seconds": self.seconds,
            "status": self.status,
            "hits": self.hits,
        }


class Faults:
    """The active faults, in the order they were set."""

    def __init__(self) -> None:
        self._faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)

    def add(self, spec: Mapping[str, Any]) -> Fault:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultError(f"kind: one of {', '.join(KINDS)}")
        unknown = set(spec) - {"kind", "commands", "count", "seconds", "status"}
        if unknown:
            raise FaultError(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
        commands = spec.get("commands")
        if isinstance(commands, str):
            commands = [commands]
        if commands is not None and (
            not isinstance(commands, list) or not all(isinstance(c, str) for c in commands)
        ):
            raise FaultError("commands: a list of API command names")
        count = spec.get("count")
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise FaultError("count: a positive integer (or absent: until cleared)")
        seconds = spec.get("seconds", 0.0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise FaultError("seconds: a non-negative number")
        status = spec.get("status", 503)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise FaultError("status: an HTTP status code")
        if kind == "latency" and not seconds:
            raise FaultError("seconds: latency needs a positive number of seconds")
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            commands=None if commands is None else frozenset(commands),
            remaining=count,
            seconds=float(seconds),
            status=status,
        )
        self._faults[fault.id] = fault
        return fault

    def remove(self, fault_id: int) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> int:
        count = len(self._faults)
        self._faults.clear()
        return count

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._faults.values()]

    def active(self, kind: str) -> Fault | None:
        for fault in self._faults.values():
            if fault.kind == kind:
                return fault
        return None

    def pick(self, command: str) -> tuple[float, Fault | None]:
        """(latency to add, the first other fault) that hit a request for `command`.

        Each fault that hits spends one unit of its budget; spent faults disappear.
        """
        latency = 0.0
        chosen: Fault | None = None
        for fault in list(self._faults.values()):
            if not fault.matches(command):
                continue
            if fault.kind == "latency":
                latency += fault.seconds
            elif chosen is None and fault.kind != "outage":
                chosen = fault
            else:
                continue
            self._spend(fault)
        return latency, chosen

    def _spend(self, fault: Fault) -> None:
        fault.hits += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(fault.id, None)


def corrupt(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """An answer with ill-typed fields, as a buggy proxy or server might send."""
    inner = next(iter(body.values()), None) if len(body) == 1 else None
    if not isinstance(inner, dict):
        return body
    jobs: list[Any] = inner["asyncjobs"] if isinstance(inner.get("asyncjobs"), list) else [inner]
    if kind == "jobstatus_abc":
        for job in jobs:
            job["jobstatus"] = "abc"
    elif kind == "created_yesterday":
        for job in jobs:
            job["created"] = "yesterday"
    elif kind == "cmd_null":
        for job in jobs:
            job["cmd"] = None
    elif kind == "asyncjobs_not_list":
        inner["asyncjobs"] = {"not": "a list"}
    elif kind == "count_string":
        inner["count"] = f"{inner.get('count', 0)} jobs"
    elif kind == "entries_not_objects" and "asyncjobs" in inner:
        inner["asyncjobs"] = [42, "job", None, *inner["asyncjobs"][1:]]
    return body


def truncate(data: bytes) -> bytes:
    """Cut a body in the middle, like a dropped connection behind a buffering proxy."""
    return data[: max(1, len(data) // 2)]
