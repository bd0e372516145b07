"""CloudStack's AsyncJobEvent messages: the typed event and its parser (cloudstack-api.md §9).

One parser for both body forms: from 4.16 `cmdInfo` and `jobResult` are JSON objects, before
they are strings (`jobResult` as "<class>/<object>/<json>"). `cmdInfo` holds the caller's
request parameters, session key and signature included: it is dropped unread, never kept,
logged or exported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import orjson

from exporter.jobs import ERROR_TEXT_LIMIT, JobStatus, is_job_id, short_cmd, text_field

EVENT_TYPES = ("submit", "update", "complete")
# The binding that selects every AsyncJobEvent whatever its publisher's first word.
BINDING_KEY = "*.AsyncJobEvent.#"
MAX_BODY = 1 << 20  # a job event is a few KB; anything this large is not one

_STATUS_NAMES = {
    "IN_PROGRESS": JobStatus.PENDING,
    "SUCCEEDED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED,
}
# resourceType words that mean "no instance" (routing key and instanceType alike).
_NO_INSTANCE = frozenset({"", "None", "unknown", "*", "null"})


class MalformedEvent(ValueError):
    """A message that is not a readable AsyncJobEvent; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    type: str  # submit, update or complete: from the routing key, a hint only
    job_id: str
    status: JobStatus  # what the body says: trusted over the type (PR #12971)
    result_code: int
    proc_status: int
    cmd_class: str
    cmd: str
    instance_type: str  # "" for None/unknown
    instance_id: str
    account_uuid: str
    user_uuid: str
    error: str  # a failure's errortext, cut like the API's
    result_object: str  # e.g. "virtualmachine" for a success
    # Present only with CloudStack's event.accountinfo=true.
    account_name: str = ""
    domain_name: str = ""

    @property
    def final(self) -> bool:
        return self.status.final


def event_type(routing_key: str) -> str:
    """`management-server.AsyncJobEvent.<type>.<resourceType>.<uuid>` -> type."""
    words = routing_key.split(".")
    if len(words) != 5 or words[1] != "AsyncJobEvent":
        raise MalformedEvent(f"routing key: not an AsyncJobEvent key: {routing_key[:120]!r}")
    if words[2] not in EVENT_TYPES:
        raise MalformedEvent(f"routing key: unknown event type {words[2][:40]!r}")
    return words[2]


def _text(obj: dict[str, Any], key: str) -> str:
    return text_field(obj, key, MalformedEvent)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise MalformedEvent(f"{key}: expected an integer string, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise MalformedEvent(f"{key}: expected an integer string, got {value!r:.40}")


def _result(value: Any, status: JobStatus) -> tuple[str, str]:
    """(error text, object name) from `jobResult` in either form."""
    if value is None or value == "":
        return "", ""
    if isinstance(value, str):  # before 4.16: "<class>/<object>/<json>"
        _cls, _, rest = value.partition("/")
        obj_name, _, payload = rest.partition("/")
        fields: dict[str, Any] = {"object": obj_name}
        if payload:
            try:
                decoded = orjson.loads(payload)
            except orjson.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict):
                fields.update(decoded)
        value = fields
    if not isinstance(value, dict):
        raise MalformedEvent(f"jobResult: expected an object, got {type(value).__name__}")
    if status is JobStatus.FAILED:
        text = value.get("errortext")
        return (text[:ERROR_TEXT_LIMIT] if isinstance(text, str) else ""), ""
    name = value.get("object")
    if status is JobStatus.SUCCEEDED and isinstance(name, str) and name != "null":
        return "", sys.intern(name)
    return "", ""


def parse_event(routing_key: str, body: bytes) -> JobEvent:
    """The JobEvent of one message; raises MalformedEvent naming what is wrong."""
    kind = event_type(routing_key)
    if len(body) > MAX_BODY:
        raise MalformedEvent(f"body: {len(body)} bytes, more than {MAX_BODY}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"body: not JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise MalformedEvent(f"body: expected a JSON object, got {type(obj).__name__}")
    obj.pop("cmdInfo", None)  # the caller's secrets: gone before anything else reads the body
    job_id = obj.get("jobId")
    if not is_job_id(job_id):
        raise MalformedEvent(f"jobId: expected a job id, got {job_id!r:.64}")
    raw_status = obj.get("status")
    status = _STATUS_NAMES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise MalformedEvent(f"status: unknown value {raw_status!r:.40}")
    cmd_class = sys.intern(_text(obj, "command"))
    instance_type = _text(obj, "instanceType")
    if instance_type in _NO_INSTANCE:
        instance_type = ""
    error, result_object = _result(obj.get("jobResult"), status)
    return JobEvent(
        type=kind,
        job_id=job_id,
        status=status,
        result_code=_int(obj, "resultCode"),
        proc_status=_int(obj, "processStatus"),
        cmd_class=cmd_class,
        cmd=short_cmd(cmd_class) if cmd_class else "",
        instance_type=sys.intern(instance_type),
        instance_id=_text(obj, "instanceUuid"),
        account_uuid=sys.intern(_text(obj, "account")),
        user_uuid=sys.intern(_text(obj, "user")),
        error=error,
        result_object=result_object,
        account_name=sys.intern(_text(obj, "accountname")),
        domain_name=sys.intern(_text(obj, "domainname")),
    )
