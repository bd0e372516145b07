"""The typed job record, and the parser from a CloudStack API job object to it.

One parser serves both listAsyncJobs entries and queryAsyncJobResult answers: CloudStack
uses the same fields in both (AsyncJobResponse).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, TypeGuard

import orjson

ERROR_TEXT_LIMIT = 256

# The job-ID rules. CloudStack's IDs are UUIDs; what an answer or an event carries is taken
# as text (every label is escaped) and only bounded, while an ID an operator writes (the
# config's `jobs`, a `jobs_file`) must look like one, so a mangled file does not become
# thousands of queries.
MAX_JOB_ID_LENGTH = 128
_OPERATOR_JOB_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_JOB_ID_LENGTH - 1}}}")


def is_job_id(value: object) -> TypeGuard[str]:
    """A job ID as CloudStack may send it: a non-empty string of bounded length."""
    return isinstance(value, str) and 0 < len(value) <= MAX_JOB_ID_LENGTH


def is_operator_job_id(value: str) -> bool:
    """A job ID as an operator may write it: letters, digits, `.`, `_`, `-`."""
    return _OPERATOR_JOB_ID.fullmatch(value) is not None


class JobStatus(IntEnum):
    """`jobstatus` as CloudStack reports it."""

    PENDING = 0
    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3  # only from the admin cancelAsyncJob API (4.23)

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def final(self) -> bool:
        return self is not JobStatus.PENDING


class MalformedJob(ValueError):
    """An API job object that cannot be turned into a Job. The message names the field."""


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    status: JobStatus
    result_code: int
    proc_status: int
    cmd_class: str  # full Java class name; "" for pseudo jobs, which have no cmd
    cmd: str  # short name: no package, no trailing ByAdmin
    instance_type: str
    instance_id: str
    account_id: str
    user_id: str
    result_type: str
    created: float | None  # Unix seconds
    completed: float | None  # Unix seconds; only for finished jobs
    error: str  # errortext of a failure, cut to ERROR_TEXT_LIMIT; "" otherwise
    result_object: str  # object name of a success result, e.g. "virtualmachine"
    management_server_id: str  # 4.19+, only while the job runs
    # Newer servers name the owner and the management server too; "" when absent.
    account: str = ""
    domain_id: str = ""
    domain_path: str = ""
    management_server_name: str = ""  # 4.21+


def short_cmd(cmd_class: str) -> str:
    """`org.apache...admin.vm.StartVMCmdByAdmin` -> `StartVMCmd`."""
    name = _SHORT_CMDS.get(cmd_class)
    if name is not None:
        return name
    name = cmd_class.rpartition(".")[2]
    if name.endswith("ByAdmin") and len(name) > len("ByAdmin"):
        name = name[: -len("ByAdmin")]
    name = sys.intern(name)
    if len(_SHORT_CMDS) < _MAX_SHORT_CMDS:
        _SHORT_CMDS[cmd_class] = name
    return name


# cmd class -> short name. A cloud has a few hundred commands; the bound is for hostile servers.
_SHORT_CMDS: dict[str, str] = {}
_MAX_SHORT_CMDS = 10_000


def is_api_job(cmd_class: str) -> bool:
    """False for pseudo jobs (no cmd) and internal VM work jobs (com.cloud.vm.VmWork*)."""
    return bool(cmd_class) and not short_cmd(cmd_class).startswith("VmWork")


def parse_date(value: str) -> float:
    """CloudStack's `yyyy-MM-dd'T'HH:mm:ssZ` (server local time with offset) to Unix seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a CloudStack date: {value!r:.64}") from None
    if parsed.tzinfo is None:
        # Without an offset the server's time zone is unknown: refuse rather than guess.
        raise ValueError(f"date without a time-zone offset: {value!r:.64}")
    return parsed.timestamp()


def text_field(obj: dict[str, Any], key: str, error: type[Exception] | None = None) -> str:
    """A text field of an API job or an event body: absent is "", a number is its digits
    (CloudStack sends some IDs as numbers); anything else raises `error` (MalformedJob)."""
    value = obj.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise (error or MalformedJob)(f"{key}: expected a string, got {type(value).__name__}")


_text = text_field


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key)
    if value is None:
        if default is None:
            raise MalformedJob(f"{key}: missing")
        return default
    if isinstance(value, bool):
        raise MalformedJob(f"{key}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise MalformedJob(f"{key}: expected an integer, got {value!r:.64}")


def _date(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedJob(f"{key}: expected a date string, got {type(value).__name__}")
    try:
        return _cached_date(value)
    except ValueError as exc:
        raise MalformedJob(f"{key}: {exc}") from None


# The Job fields whose values repeat across jobs; parse_job shares them (see _shared).
SHARED_FIELDS = (
    "cmd_class",
    "cmd",
    "instance_type",
    "account_id",
    "user_id",
    "result_type",
    "result_object",
    "management_server_id",
    "account",
    "domain_id",
    "domain_path",
    "management_server_name",
)


def with_shared_strings(job: Job) -> Job:
    """A Job made elsewhere than parse_job (restored from the state file, say) with its
    repeating strings shared as parse_job shares them."""
    shared: dict[str, Any] = {f: sys.intern(getattr(job, f)) for f in SHARED_FIELDS}
    return dataclasses.replace(job, **shared)


def _shared(obj: dict[str, Any], key: str) -> str:
    """A text field whose values repeat across jobs (command, account, server...): one
    string object for all of them. At 100,000 jobs the copies would cost tens of MB, all the
    more as a whole listing is parsed before it is applied."""
    return sys.intern(_text(obj, key))


def _result(obj: dict[str, Any], status: JobStatus) -> tuple[str, str]:
    """(error text, success object name) from `jobresult`, tolerating every known shape."""
    result = obj.get("jobresult")
    if result is None:
        return "", ""
    # The error label is a failure's errortext, empty otherwise (metrics.md): a cancelled
    # job's reason is not a failure.
    if isinstance(result, str):  # old servers: jobresulttype "text"
        return (result[:ERROR_TEXT_LIMIT], "") if status is JobStatus.FAILED else ("", "")
    if not isinstance(result, dict):
        raise MalformedJob(f"jobresult: expected an object, got {type(result).__name__}")
    if status is JobStatus.FAILED:
        text = result.get("errortext")
        return (text[:ERROR_TEXT_LIMIT] if isinstance(text, str) else ""), ""
    if status is JobStatus.SUCCEEDED:
        names = [k for k in result if isinstance(k, str)]
        return "", (names[0] if len(names) == 1 else "")
    return "", ""


def fingerprint(obj: Any) -> int | None:
    """A fingerprint of an API job object's exact JSON, or None if it has none.

    The steady state of a big cloud is the same pending jobs listed cycle after cycle. A
    listed entry whose fingerprint equals that of the entry a tracked job was parsed from is
    the same JSON text, byte for byte (to a 64-bit hash), so parse_job would return the same
    Job: the poller skips the parse. Re-serialising is exact where comparing decoded values
    is not (`0`, `0.0` and `false` are equal in Python); a reordered object only costs a parse.
    """
    try:
        text = orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: integers beyond 64 bits, say
        return None
    # orjson writes NaN and infinities as null; only the stdlib's fallback decoding lets
    # them in, and CloudStack omits nulls, so the rare text with a null is looked at.
    if b"null" in text and _non_finite(obj):
        return None
    return hash(text)


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


# CloudStack lists jobs by ID, that is in creation order, so neighbours in a listing often
# share their `created` second: the last date parsed is kept, and its float shared.
_last_date: tuple[str, float] = ("", 0.0)


def _cached_date(value: str) -> float:
    global _last_date
    last = _last_date
    if value == last[0]:
        return last[1]
    parsed = parse_date(value)
    _last_date = (value, parsed)
    return parsed


def parse_job(obj: Any) -> Job:
    """Turn one API job object into a Job; raise MalformedJob naming the bad field."""
    if not isinstance(obj, dict):
        raise MalformedJob(f"job entry: expected an object, got {type(obj).__name__}")
    job_id = obj.get("jobid")
    if not is_job_id(job_id):
        raise MalformedJob(f"jobid: expected a job id, got {job_id!r:.64}")
    raw_status = _int(obj, "jobstatus")
    try:
        status = JobStatus(raw_status)
    except ValueError:
        raise MalformedJob(f"jobstatus: unknown value {raw_status}") from None
    if "cmd" in obj and obj["cmd"] is None:
        # CloudStack leaves out what it lacks (pseudo jobs have no cmd) and never sends null;
        # a null cmd read as "no command" would relabel a known job.
        raise MalformedJob("cmd: null")
    cmd_class = _shared(obj, "cmd")
    error, result_object = _result(obj, status)
    return Job(
        job_id=job_id,
        status=status,
        result_code=_int(obj, "jobresultcode", 0),
        proc_status=_int(obj, "jobprocstatus", 0),
        cmd_class=cmd_class,
        cmd=short_cmd(cmd_class),
        instance_type=_shared(obj, "jobinstancetype"),
        instance_id=_text(obj, "jobinstanceid"),
        account_id=_shared(obj, "accountid"),
        user_id=_shared(obj, "userid"),
        result_type=_shared(obj, "jobresulttype"),
        created=_date(obj, "created"),
        completed=_date(obj, "completed") if status.final else None,
        error=error,
        result_object=sys.intern(result_object),
        management_server_id=_shared(obj, "managementserverid"),
        account=_shared(obj, "account"),
        domain_id=_shared(obj, "domainid"),
        domain_path=_shared(obj, "domainpath"),
        management_server_name=_shared(obj, "managementservername"),
    )
