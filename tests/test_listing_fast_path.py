"""A listed job that did not change skips parse_job; the result must be what parsing gives.

The poller skips the parse when an entry's `fingerprint` equals the one the tracked job was
read from; these tests check that the fingerprint tells every change apart, odd types
included, and that the poller then really does not parse.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from exporter_harness import Exporter, cloud_yaml, write_config
from factories import api_job
from hypothesis import given
from hypothesis import strategies as st
from simulator_fixtures import SimHandle

from exporter import poller as poller_module
from exporter.jobs import fingerprint, parse_job
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

pytest_plugins = ["simulator_fixtures"]

ENTRY: dict[str, Any] = api_job(
    "5c7a3b1e-0000-4000-8000-000000000001",
    created="2026-04-13T09:42:21-0700",
    jobinstanceid="7f1e0000-0000-4000-8000-000000000002",
    accountid="a0000000-0000-4000-8000-000000000003",
    userid="b0000000-0000-4000-8000-000000000004",
    managementserverid="e3e70682-c209-4cac-a29f-6fbed82c07cd",
)

FIELDS = sorted({*ENTRY, "jobresult", "jobresulttype", "completed", "account", "domainpath"})
WITH_NULL = {**{k: None for k in FIELDS if k not in ENTRY}, **ENTRY, "jobinstanceid": None}
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


def test_an_unchanged_entry_has_the_same_fingerprint() -> None:
    assert fingerprint(copy.deepcopy(ENTRY)) == fingerprint(ENTRY)


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
        ("cmd", None),
        # Equal in Python, different JSON: each parses differently (or not at all).
        ("jobstatus", False),
        ("jobstatus", 0.0),
        ("jobprocstatus", "0"),
        ("account", "ops"),
    ],
)
def test_a_changed_entry_has_another_fingerprint(field: str, value: object) -> None:
    assert fingerprint({**ENTRY, field: value}) != fingerprint(ENTRY)


def test_a_reordered_entry_is_merely_parsed_again() -> None:
    # Conservative: another text is another fingerprint, even when it parses the same.
    reordered = dict(reversed(list(ENTRY.items())))
    assert fingerprint(reordered) != fingerprint(ENTRY)
    assert parse_job(reordered) == parse_job(ENTRY)


def test_what_json_cannot_carry_has_no_fingerprint() -> None:
    # What only the stdlib's fallback decoder lets in: huge integers, NaN and infinities
    # (which orjson would write as null, the fingerprint of another entry).
    assert fingerprint({**ENTRY, "jobprocstatus": 2**70}) is None
    for odd in (math.nan, math.inf, -math.inf):
        assert fingerprint({**ENTRY, "jobprocstatus": odd}) is None
        assert fingerprint({**ENTRY, "jobresult": {"x": [1, odd]}}) is None
    assert fingerprint({**ENTRY, "jobresult": None}) is not None


@given(
    st.sampled_from([ENTRY, WITH_NULL]),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4),
)
def test_same_fingerprint_means_same_job(base: dict[str, Any], changes: dict[str, Any]) -> None:
    entry = {**base, **changes}
    if fingerprint(entry) is not None and fingerprint(entry) == fingerprint(base):
        assert parse_job(entry) == parse_job(base)


def test_the_tracker_recognises_only_the_entry_it_was_read_from() -> None:
    tracker = JobTracker(
        "c", ExporterMetrics().cloud("c"), retention=3600, max_jobs=10, watermark=0.0
    )
    job = parse_job(ENTRY)
    tracker.apply(job, 1000.0, fingerprint(ENTRY))
    assert tracker.listed_unchanged(copy.deepcopy(ENTRY), fingerprint(ENTRY)) is job
    changed = {**ENTRY, "jobprocstatus": 1}
    assert tracker.listed_unchanged(changed, fingerprint(changed)) is None
    # A job that came from a query has no entry to compare with.
    other = {**ENTRY, "jobid": "5c7a3b1e-0000-4000-8000-000000000009"}
    tracker.apply(parse_job(other), 1000.0)
    assert tracker.listed_unchanged(other, fingerprint(other)) is None


def test_a_reordered_entry_is_remembered_without_a_new_record() -> None:
    tracker = JobTracker(
        "c", ExporterMetrics().cloud("c"), retention=3600, max_jobs=10, watermark=0.0
    )
    tracker.apply(parse_job(ENTRY), 1000.0, fingerprint(ENTRY))
    (before,) = tracker.jobs()
    reordered = dict(reversed(list(ENTRY.items())))
    tracker.apply(parse_job(reordered), 1001.0, fingerprint(reordered))
    (after,) = tracker.jobs()
    assert after == before  # nothing to re-render
    assert tracker.listed_unchanged(reordered, fingerprint(reordered)) is after.job


async def test_a_quiet_listing_parses_only_what_changed(
    simulator: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the simulator: a cycle over the same pending jobs parses none of them; one
    whose progress moved is parsed, and shown."""
    created = await simulator.create_jobs(30)
    calls: list[str] = []
    real = poller_module.parse_job

    def counting(obj: Any) -> Any:
        calls.append(obj.get("jobid") if isinstance(obj, dict) else "?")
        return real(obj)

    monkeypatch.setattr(poller_module, "parse_job", counting)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        assert sorted(calls) == sorted(created)  # the first cycle parsed each job once
        calls.clear()
        await exporter.cycle()
        assert calls == []
        await simulator.set_procstatus(created[0], 2)
        await exporter.cycle()
        assert calls == [created[0]]
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_async_job_proc_status", job_id=created[0]) == 2
        assert len(metrics.job_ids("a")) == 30
