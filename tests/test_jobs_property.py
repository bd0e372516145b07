"""Properties of `parse_job`: whatever a server sends, the answer is a Job or MalformedJob, and a
well-formed job object reads back exactly what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.jobs import ERROR_TEXT_LIMIT, Job, JobStatus, MalformedJob, parse_job, short_cmd

FIELDS = [
    "jobid", "jobstatus", "jobresultcode", "jobprocstatus", "cmd", "jobinstancetype",
    "jobinstanceid", "accountid", "userid", "jobresulttype", "jobresult", "created",
    "completed", "managementserverid",
]  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.loads accepts them
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Values that look almost right are the interesting ones.
near_values = (
    json_values
    | st.sampled_from(["0", "1", "2", "3", " 1 ", "abc", "", "1e3", "٣", "yesterday", "-0"])
    | st.sampled_from(
        [
            "2026-04-13T09:42:21-0700",
            "2026-04-13T09:42:21",
            "0001-01-01T00:00:00+1400",
            "9999-12-31T23:59:59-1400",
            "2026-02-30T00:00:00+0000",
            "2026-04-13T09:42:21+0000\x00",
        ]
    )
)
job_like = st.dictionaries(st.sampled_from(FIELDS), near_values, max_size=len(FIELDS)) | st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"jobid": st.text(min_size=1, max_size=10), "jobstatus": near_values}),
    st.dictionaries(st.sampled_from(FIELDS), near_values),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, job_like))
def test_any_json_is_a_job_or_malformed_never_another_error(obj: Any) -> None:
    try:
        job = parse_job(obj)
    except MalformedJob as exc:
        assert str(exc)  # names what is wrong
        return
    assert isinstance(job, Job)
    assert isinstance(job.status, JobStatus)
    assert isinstance(job.job_id, str) and job.job_id
    assert job.completed is None or job.status.final
    assert len(job.error) <= ERROR_TEXT_LIMIT


# -- round trip ------------------------------------------------------------------------------

ids = st.uuids().map(str)
cmd_classes = st.sampled_from(
    [
        "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
        "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin",
        "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
        "com.cloud.vm.VmWorkMigrate",
    ]
)
# CloudStack's dates are whole seconds with a +HHMM offset (the server's zone).
offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15)
instants = st.integers(min_value=946_684_800, max_value=4_102_444_800)  # 2000..2100


def cs_date(unix: int, offset_minutes: int) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(unix, UTC).astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S%z")


@st.composite
def api_jobs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(an API job object as CloudStack writes it, the Job fields it must give)."""
    status = draw(st.sampled_from(list(JobStatus)))
    offset = draw(offsets)
    created = draw(instants)
    cmd = draw(st.one_of(st.none(), cmd_classes))  # None: a pseudo job, no `cmd` at all
    obj: dict[str, Any] = {
        "jobid": draw(ids),
        "accountid": draw(ids),
        "userid": draw(ids),
        "jobstatus": int(status),
        "jobprocstatus": draw(st.integers(0, 10)),
        "jobresultcode": 0,
        "created": cs_date(created, offset),
    }
    if cmd is not None:
        obj["cmd"] = cmd
    if draw(st.booleans()):
        obj["jobinstancetype"] = draw(st.sampled_from(["VirtualMachine", "Volume", "Snapshot"]))
        obj["jobinstanceid"] = draw(ids)
    error, result_object, completed = "", "", None
    if status.final:
        completed = created + draw(st.integers(0, 86_400))
        obj["completed"] = cs_date(completed, offset)
    if status is JobStatus.SUCCEEDED:
        result_object = draw(st.sampled_from(["virtualmachine", "volume", "snapshot"]))
        obj["jobresulttype"] = "object"
        obj["jobresult"] = {result_object: {"id": draw(ids)}}
    elif status is JobStatus.FAILED:
        obj["jobresultcode"] = draw(st.sampled_from([530, 533, 534, 535]))
        error = draw(st.text(max_size=400))
        obj["jobresulttype"] = "object"
        obj["jobresult"] = {"errorcode": obj["jobresultcode"], "errortext": error}
        error = error[:ERROR_TEXT_LIMIT]
    if status is JobStatus.PENDING and draw(st.booleans()):
        obj["managementserverid"] = draw(ids)
    fields = {
        "job_id": obj["jobid"],
        "status": status,
        "result_code": obj["jobresultcode"],
        "proc_status": obj["jobprocstatus"],
        "cmd_class": cmd or "",
        "cmd": short_cmd(cmd or ""),
        "instance_type": obj.get("jobinstancetype", ""),
        "instance_id": obj.get("jobinstanceid", ""),
        "account_id": obj["accountid"],
        "user_id": obj["userid"],
        "result_type": obj.get("jobresulttype", ""),
        "created": float(created),
        "completed": None if completed is None else float(completed),
        "error": error,
        "result_object": result_object,
        "management_server_id": obj.get("managementserverid", ""),
    }
    return obj, fields


@settings(max_examples=300, deadline=None)
@given(api_jobs())
def test_well_formed_jobs_read_back_exactly(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    obj, fields = case
    assert parse_job(obj) == Job(**fields)
    # The same object with its numbers as strings (as some proxies rewrite them) reads the same.
    as_text = {k: str(v) if isinstance(v, int) else v for k, v in obj.items()}
    assert parse_job(as_text) == Job(**fields)
