"""The order of /jobs rows, as the page promises it, for any set of jobs.

The default order: pending jobs oldest first (no creation time last), then failed and
cancelled jobs, then succeeded ones, each most recently finished first. A chosen column
sorts by its value, ascending or descending, jobs without a value last; equal values keep
the table's order. `select()` sorts by index for speed; the reference here is the rule
written plainly over whole rows.
"""

from __future__ import annotations

import math
import time
from typing import Any

from factories import api_job
from hypothesis import given
from hypothesis import strategies as st

from exporter.jobs import JobStatus, parse_job
from exporter.jobspage import SORT_FIELDS, parse_query, select
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

NOW = 1_780_000_000.0
GROUP = {JobStatus.PENDING: 0, JobStatus.FAILED: 1, JobStatus.CANCELLED: 1, JobStatus.SUCCEEDED: 2}


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(ts))


job_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # cloud
        st.sampled_from([0, 1, 2, 3]),  # status
        st.one_of(st.none(), st.integers(0, 50)),  # created, minutes ago (few: ties)
        st.integers(0, 20),  # finished this many minutes after creation
        st.sampled_from(["StartVMCmd", "StopVMCmd", "DeployVMCmd"]),
        st.sampled_from(["", "acme", "zeta"]),  # account
        st.sampled_from([0, 530, 533]),  # result code of a finished job
    ),
    max_size=40,
)


def trackers_of(specs: list[tuple[Any, ...]]) -> dict[str, JobTracker]:
    trackers = {
        cloud: JobTracker(
            cloud,
            ExporterMetrics((1.0,)).cloud(cloud),
            retention=86400,
            max_jobs=1000,
            watermark=NOW - 86400,
        )
        for cloud in ("a", "b")
    }
    for n, (cloud, status, created_ago, took, cmd, account, code) in enumerate(specs):
        created = None if created_ago is None else NOW - 60 * created_ago
        fields: dict[str, Any] = {
            "cmd": f"org.apache.cloudstack.api.command.user.vm.{cmd}",
            "account": account or None,
            "created": _date(created) if created is not None else None,
        }
        if status:
            fields["jobresultcode"] = code
            if created is not None:
                fields["completed"] = _date(created + 60 * took)
        job = parse_job(api_job(f"00000000-0000-4000-8000-{n:012d}", status, **fields))
        trackers[cloud].apply(job, NOW + n)  # finished_at differs: a tie-breaker of its own
    return trackers


def reference_value(name: str, cloud: str, job: Any, now: float) -> Any:
    if name == "cloud":
        return cloud
    if name == "status":
        return int(job.status)
    if name == "account":
        return job.account or job.account_id
    if name == "management_server":
        return job.management_server_name or job.management_server_id
    if name == "duration":
        if job.created is None or job.completed is None:
            return None
        return max(0.0, job.completed - job.created)
    if name == "age":
        return None if job.created is None or job.status.final else max(0.0, now - job.created)
    return getattr(job, name)


def reference_order(trackers: dict[str, JobTracker], sort: str | None) -> list[str]:
    rows = [
        (view.cloud, t, view.now)
        for view in (tr.view() for tr in trackers.values())
        for t in view.jobs
    ]
    if sort is None:

        def key(row: Any) -> tuple[int, float]:
            job, finished_at = row[1].job, row[1].finished_at
            group = GROUP[job.status]
            if group == 0:
                return 0, job.created if job.created is not None else math.inf
            return group, -(job.completed or finished_at or 0.0)

        rows.sort(key=key)
    else:
        name, descending = sort.lstrip("-"), sort.startswith("-")

        def value(row: Any) -> Any:
            return reference_value(name, row[0], row[1].job, row[2])

        present = [r for r in rows if value(r) not in (None, "")]
        missing = [r for r in rows if value(r) in (None, "")]
        present.sort(key=value, reverse=descending)
        rows = present + missing
    return [row[1].job.job_id for row in rows]


@given(job_specs, st.sampled_from([None, *SORT_FIELDS, *(f"-{f}" for f in SORT_FIELDS)]))
def test_rows_come_in_the_promised_order(specs: list[tuple[Any, ...]], sort: str | None) -> None:
    trackers = trackers_of(specs)
    params = {"limit": ["1000"], **({"sort": [sort]} if sort else {})}
    page = select([t.view() for t in trackers.values()], parse_query(params))
    assert [row.tracked.job.job_id for row in page.rows] == reference_order(trackers, sort)
    assert page.total == len(specs)


@given(job_specs, st.integers(1, 5), st.integers(1, 7))
def test_pages_cut_the_same_order_into_slices(
    specs: list[tuple[Any, ...]], limit: int, page_number: int
) -> None:
    trackers = trackers_of(specs)
    views = [t.view() for t in trackers.values()]
    everything = reference_order(trackers, None)
    query = parse_query({"limit": [str(limit)], "page": [str(page_number)]})
    page = select(views, query)
    start = (page_number - 1) * limit
    assert [r.tracked.job.job_id for r in page.rows] == everything[start : start + limit]


@given(job_specs)
def test_filters_keep_the_order_of_what_they_keep(specs: list[tuple[Any, ...]]) -> None:
    trackers = trackers_of(specs)
    views = [t.view() for t in trackers.values()]
    query = parse_query({"status": ["failed,pending"], "cloud": ["b"], "limit": ["1000"]})
    shown = [r.tracked.job.job_id for r in select(views, query).rows]
    keep = {
        t.job.job_id
        for t in trackers["b"].jobs()
        if t.job.status in (JobStatus.FAILED, JobStatus.PENDING)
    }
    assert shown == [j for j in reference_order(trackers, None) if j in keep]
