"""The job parser: every shape CloudStack answers with, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from factories import api_job

from exporter.jobs import (
    Job,
    JobStatus,
    MalformedJob,
    is_api_job,
    parse_date,
    parse_job,
    short_cmd,
)

ADMIN_STOP = "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin"


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jobid": "7a3a1a5e-1c52-4f57-a1ab-0e2e1a7c2f10",
        "cmd": ADMIN_STOP,
        "accountid": "acc-uuid",
        "userid": "user-uuid",
        "jobinstancetype": None,
        "jobinstanceid": None,
    }
    return api_job(**{**base, **fields})


@pytest.mark.parametrize(
    ("cmd_class", "short"),
    [
        (ADMIN_STOP, "StopVMCmd"),
        ("org.apache.cloudstack.api.command.user.vm.DeployVMCmd", "DeployVMCmd"),
        ("com.cloud.vm.VmWorkMigrateVolume", "VmWorkMigrateVolume"),
        ("ByAdmin", "ByAdmin"),
        ("", ""),
    ],
)
def test_short_cmd(cmd_class: str, short: str) -> None:
    assert short_cmd(cmd_class) == short


def test_api_jobs_are_told_from_pseudo_and_work_jobs() -> None:
    assert is_api_job(ADMIN_STOP)
    assert not is_api_job("")
    assert not is_api_job("com.cloud.vm.VmWorkStart")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-04-13T09:42:21+0000", datetime(2026, 4, 13, 9, 42, 21, tzinfo=UTC)),
        ("2012-07-05T12:18:27-0700", datetime(2012, 7, 5, 19, 18, 27, tzinfo=UTC)),
        ("2026-04-13T15:12:21+0530", datetime(2026, 4, 13, 9, 42, 21, tzinfo=UTC)),
        ("2026-04-13T09:42:21Z", datetime(2026, 4, 13, 9, 42, 21, tzinfo=UTC)),
    ],
)
def test_dates_honour_the_server_offset(text: str, expected: datetime) -> None:
    assert parse_date(text) == expected.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2026-04-13T09:42:21", "", "2026-13-40T00:00:00Z"])
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text)


def test_pending_job() -> None:
    job = parse_job(entry(jobprocstatus=2, jobinstancetype="VirtualMachine", jobinstanceid="vm-1"))
    assert job.status is JobStatus.PENDING and not job.status.final
    assert job.cmd == "StopVMCmd" and job.cmd_class == ADMIN_STOP
    assert (job.instance_type, job.instance_id) == ("VirtualMachine", "vm-1")
    assert (job.account_id, job.user_id) == ("acc-uuid", "user-uuid")
    assert job.proc_status == 2
    assert job.created == datetime(2026, 4, 13, 9, 42, 21, tzinfo=UTC).timestamp()
    assert job.completed is None
    assert (job.error, job.result_type, job.result_object) == ("", "", "")


def test_success_with_an_object_result() -> None:
    job = parse_job(
        entry(
            jobstatus=1,
            jobresulttype="object",
            jobresult={"virtualmachine": {"id": "vm-1", "state": "Stopped"}},
            completed="2026-04-13T09:43:01+0000",
            managementserverid="ms-7",
        )
    )
    assert job.status is JobStatus.SUCCEEDED
    assert job.result_object == "virtualmachine" and job.result_type == "object"
    assert job.completed is not None and job.created is not None
    assert job.completed - job.created == 40
    assert job.management_server_id == "ms-7"


def test_failure_carries_code_and_errortext_cut_to_256() -> None:
    text = "Insufficient capacity " + "x" * 400
    job = parse_job(
        entry(
            jobstatus=2,
            jobresultcode=533,
            jobresulttype="object",
            jobresult={"errorcode": 533, "errortext": text},
            completed="2026-04-13T09:43:01+0000",
        )
    )
    assert job.status is JobStatus.FAILED and job.result_code == 533
    assert job.error == text[:256]


@pytest.mark.parametrize("code", [530, 0])
def test_failures_without_jobresult(code: int) -> None:
    # Killed by a management-server restart (530) or cancelled for blocking a queue (0).
    job = parse_job(entry(jobstatus=2, jobresultcode=code, completed="2026-04-13T09:43:01+0000"))
    assert job.status is JobStatus.FAILED and job.result_code == code
    assert job.error == "" and job.result_type == ""


def test_old_text_results_and_cancelled_jobs() -> None:
    job = parse_job(entry(jobstatus=2, jobresultcode=530, jobresulttype="text", jobresult="boom"))
    assert job.error == "boom"
    cancelled = parse_job(entry(jobstatus=3, jobresult={"errortext": "cancelled by admin"}))
    assert cancelled.status is JobStatus.CANCELLED and cancelled.status.label == "cancelled"
    assert cancelled.error == ""  # the error label is a failure's errortext only


def test_pseudo_job_without_cmd_and_unknown_fields() -> None:
    job = parse_job(entry(cmd=None, managementservername="ms-a", domainpath="/", future=[1]))
    assert (job.cmd_class, job.cmd) == ("", "")


def test_numbers_as_strings_are_accepted() -> None:
    job = parse_job(entry(jobstatus="2", jobresultcode="530", jobprocstatus=1.0))
    assert (job.status, job.result_code, job.proc_status) == (JobStatus.FAILED, 530, 1)


def test_completed_of_a_pending_job_is_ignored() -> None:
    assert parse_job(entry(completed="2026-04-13T09:43:01+0000")).completed is None


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("not an object", "job entry"),
        ({"jobstatus": 0}, "jobid"),
        (entry(jobid=""), "jobid"),
        (entry(jobid=5), "jobid"),
        (entry(jobstatus="abc"), "jobstatus"),
        (entry(jobstatus=7), "jobstatus"),
        (entry(jobstatus=True), "jobstatus"),
        (entry(jobstatus=None), "jobstatus"),
        (entry(created="yesterday"), "created"),
        (entry(created=1776073341), "created"),
        (entry(cmd=["x"]), "cmd"),
        ({**entry(), "cmd": None}, "cmd"),
        (entry(jobresultcode=1.5), "jobresultcode"),
        (entry(jobstatus=2, jobresult=[1]), "jobresult"),
    ],
)
def test_malformed_entries_name_the_field(bad: Any, field: str) -> None:
    with pytest.raises(MalformedJob, match=field):
        parse_job(bad)


def test_repeating_strings_are_shared_between_jobs() -> None:
    """At 100,000 jobs, a copy of each command, account or server string per job would cost
    tens of MB: parse_job and with_shared_strings hand out one object per value."""
    import json

    from exporter.jobs import SHARED_FIELDS, with_shared_strings

    fields = {
        "jobresulttype": "object",
        "jobresult": {"virtualmachine": {}},
        "completed": "2026-04-13T09:43:21+0000",
        "managementserverid": "ms-1",
        "account": "ops",
        "domainid": "d-1",
        "domainpath": "ROOT/Ops",
        "managementservername": "ms-one",
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": "vm-1",
    }
    # Each parse gets its own decoded strings, as from two pages of a listing.
    first = parse_job(json.loads(json.dumps(entry(jobstatus=1, **fields))))
    second = parse_job(json.loads(json.dumps(entry(jobid="other", jobstatus=1, **fields))))
    for name in SHARED_FIELDS:
        assert getattr(first, name), name  # the test gives every field a value
        assert getattr(first, name) is getattr(second, name), name
    copied = Job(**{f: json.loads(json.dumps(getattr(first, f))) for f in Job.__slots__})
    restored = with_shared_strings(copied)
    assert restored == first
    assert all(getattr(restored, f) is getattr(first, f) for f in SHARED_FIELDS)
