"""A listed job that did not change skips parse_job; the result must be what parsing gives.

`same_pending(job, entry)` may only say True when `parse_job(entry) == job`; these tests try
every field a listing can change, odd types included.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.jobs import parse_job, same_pending

ENTRY: dict[str, Any] = {
    "jobid": "5c7a3b1e-0000-4000-8000-000000000001",
    "cmd": "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin",
    "jobstatus": 0,
    "jobprocstatus": 0,
    "jobresultcode": 0,
    "jobinstancetype": "VirtualMachine",
    "jobinstanceid": "7f1e0000-0000-4000-8000-000000000002",
    "accountid": "a0000000-0000-4000-8000-000000000003",
    "userid": "b0000000-0000-4000-8000-000000000004",
    "created": "2026-04-13T09:42:21-0700",
    "managementserverid": "e3e70682-c209-4cac-a29f-6fbed82c07cd",
}

FIELDS = sorted({*ENTRY, "jobresult", "jobresulttype", "completed"})
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 600),
    st.floats(allow_nan=True),
    st.sampled_from(["", "0", "1", "x", "2026-04-13T09:42:22-0700", "2026-04-13T16:42:21+0000"]),
    st.text(max_size=5),
    st.just({"errortext": "boom"}),
    st.just([1]),
)


def test_an_unchanged_entry_is_recognised() -> None:
    job = parse_job(ENTRY)
    assert same_pending(job, copy.deepcopy(ENTRY))
    # Key order and an absent optional field parse the same, so they match too.
    reordered = dict(reversed(list(ENTRY.items())))
    assert same_pending(job, reordered)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jobprocstatus", 3),
        ("jobresultcode", 530),
        ("jobstatus", 2),
        ("cmd", "org.apache.cloudstack.api.command.user.vm.StopVMCmd"),
        ("jobinstanceid", "other"),
        ("managementserverid", "another-server"),
        ("created", "2026-04-13T09:42:22-0700"),
        ("cmd", None),  # null is malformed for the poller, never "unchanged"
        ("jobstatus", True),
        ("jobprocstatus", "3"),
    ],
)
def test_a_changed_entry_is_parsed(field: str, value: object) -> None:
    job = parse_job(ENTRY)
    assert not same_pending(job, {**ENTRY, field: value})


def test_the_same_instant_in_another_zone_is_unchanged() -> None:
    job = parse_job(ENTRY)
    assert same_pending(job, {**ENTRY, "created": "2026-04-13T16:42:21+0000"})


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4))
def test_unchanged_only_when_parsing_gives_the_same_job(changes: dict[str, Any]) -> None:
    job = parse_job(ENTRY)
    entry = {**ENTRY, **changes}
    if same_pending(job, entry):
        assert parse_job(entry) == job
        assert entry.get("cmd", "") is not None
