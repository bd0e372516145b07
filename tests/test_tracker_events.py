"""The job table fed by AsyncJobEvents beside polling: what each event does, the once-only
rule whatever the order, and when a listed job is an event gap. No broker: events are built
with the parser from bodies as CloudStack sends them (cloudstack-api.md §9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_tracker import CMD, T0, job, make, value

from exporter.events import JobEvent, parse_event
from exporter.jobs import JobStatus
from exporter.selfmetrics import ExporterMetrics

JOB = "6f3b0c7e-0000-4000-8000-0000000000a1"


@pytest.fixture
def metrics() -> ExporterMetrics:
    metrics = ExporterMetrics()
    metrics.cloud("prod").events()  # a cloud with `events` configured, as the service makes it
    return metrics


def event(kind: str, status: str, job_id: str = JOB, **extra: Any) -> JobEvent:
    body = {
        "jobId": job_id,
        "command": CMD,
        "commandEventType": "VM.START",
        "status": status,
        "resultCode": "530" if status == "FAILED" else "0",
        "processStatus": "0",
        "instanceType": "VirtualMachine",
        "instanceUuid": "51df4992-7374-41f7-ac03-6a4eee654b63",
        "user": "user-uuid",
        "account": "account-uuid",
        **extra,
    }
    key = f"management-server.AsyncJobEvent.{kind}.VirtualMachine.51df4992"
    return parse_event(key, json.dumps(body).encode())


def finished(metrics: ExporterMetrics, **labels: str) -> float:
    return value(metrics, "cloudstack_async_jobs_finished_total", cmd="StartVMCmd", **labels)


def by_source(metrics: ExporterMetrics, source: str) -> float:
    return value(metrics, "cloudstack_exporter_jobs_finished_by_source_total", source=source)


def histogram(metrics: ExporterMetrics) -> tuple[float, float]:
    labels = {"cmd": "StartVMCmd", "status": "succeeded"}
    return (
        value(metrics, "cloudstack_async_job_duration_seconds_count", **labels),
        value(metrics, "cloudstack_async_job_duration_seconds_sum", **labels),
    )


def test_submit_then_complete_live_ends_the_job_with_the_time_between_receipts(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics)
    assert tracker.event(event("submit", "IN_PROGRESS"), T0 + 10.0, live=True) is False
    tracked = tracker.get(JOB)
    assert tracked is not None and tracked.job.status is JobStatus.PENDING
    assert tracked.job.created == T0 + 10.0  # the receipt: the API's stamp comes with a poll
    assert tracked.job.account_id == "account-uuid"
    failure = {"errorcode": 530, "errortext": "host down", "class": "Exception", "object": "null"}
    done = event("complete", "FAILED", jobResult=failure)
    assert tracker.event(done, T0 + 12.25, live=True) is False
    tracked = tracker.get(JOB)
    assert tracked is not None and tracked.job.status is JobStatus.FAILED
    assert (tracked.job.result_code, tracked.job.error) == (530, "host down")
    assert finished(metrics, status="failed", result_code="530") == 1
    labels = {"cmd": "StartVMCmd", "status": "failed"}
    total = value(metrics, "cloudstack_async_job_duration_seconds_sum", **labels)
    assert total == 2.25
    assert by_source(metrics, "event") == 1


def test_a_second_complete_or_a_late_submit_changes_nothing(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.event(event("submit", "IN_PROGRESS"), T0 + 1, live=True)
    tracker.event(event("complete", "SUCCEEDED"), T0 + 2, live=True)
    before = tracker.get(JOB)
    assert tracker.event(event("complete", "SUCCEEDED"), T0 + 3, live=False) is False
    assert tracker.event(event("submit", "IN_PROGRESS"), T0 + 4, live=True) is False
    assert tracker.get(JOB).job.status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
    assert finished(metrics, status="succeeded", result_code="0") == 1
    assert histogram(metrics) == (1, 1.0)
    assert tracker.get(JOB) is before  # the same record: nothing to render anew


def test_a_complete_without_its_submit_asks_for_a_query(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    # complete before submit, a backlog, a missed submit: the times come from the API.
    assert tracker.event(event("complete", "SUCCEEDED"), T0 + 5, live=True) is True
    assert tracker.get(JOB) is None
    assert finished(metrics, status="succeeded", result_code="0") == 0
    queried = job(JOB, 1, created=T0 + 1, completed=T0 + 4)
    tracker.apply(queried, T0 + 5.1, source="event", new_finish=True)
    assert finished(metrics, status="succeeded", result_code="0") == 1
    assert histogram(metrics) == (1, 3.0)  # CloudStack's completed - created
    assert by_source(metrics, "event") == 1


def test_a_backlogged_complete_of_a_job_listed_before_counts_once(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics)
    tracker.apply(job(JOB, created=T0 - 30), T0 + 1, source="list")
    # The exporter was away: the complete waited in the queue; it is not live.
    assert tracker.event(event("complete", "SUCCEEDED"), T0 + 50, live=False) is True
    tracker.apply(job(JOB, 1, created=T0 - 30, completed=T0 + 20), T0 + 50.1, source="event")
    tracker.apply(job(JOB, 1, created=T0 - 30, completed=T0 + 20), T0 + 60, source="query")
    assert finished(metrics, status="succeeded", result_code="0") == 1
    assert histogram(metrics) == (1, 50.0)
    assert (by_source(metrics, "event"), by_source(metrics, "query")) == (1, 0)


def test_a_listing_after_the_event_finish_counts_nothing_again(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job(JOB, created=T0 - 30), T0 + 1, source="list")
    tracker.event(event("submit", "IN_PROGRESS"), T0 + 1.5, live=True)
    tracker.event(event("complete", "SUCCEEDED"), T0 + 9.5, live=True)
    # An old server lists finished jobs: the listing shows it final too.
    tracker.apply(job(JOB, 1, created=T0 - 30, completed=T0 + 9), T0 + 15, source="list")
    assert finished(metrics, status="succeeded", result_code="0") == 1
    assert histogram(metrics) == (1, 8.0)  # between the receipts
    assert by_source(metrics, "list") == 0


def test_a_job_listed_without_its_submit_while_connected_is_a_gap(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics)
    tracker.stream_connected(T0)
    tracker.apply(job("a" * 8, created=T0 - 600), T0 + 1, source="list")  # before: not judged
    tracker.listing_applied(T0 + 0.5)
    # Jobs new in the next listing were submitted after the previous one began.
    tracker.apply(job("b" * 8, created=T0 + 5), T0 + 15, source="list")
    tracker.apply(job("c" * 8, created=T0 + 6), T0 + 15, source="list")
    tracker.event(event("submit", "IN_PROGRESS", job_id="c" * 8), T0 + 15.2, live=True)
    tracker.listing_applied(T0 + 14.9)
    assert tracker.judge_gaps(T0 + 16, grace=5.0) == 0  # the submit may be on its way
    assert tracker.judge_gaps(T0 + 30, grace=5.0) == 1  # b: never heard of
    assert tracker.judge_gaps(T0 + 45, grace=5.0) == 0  # counted once


def test_no_gap_is_judged_while_or_after_the_stream_was_down(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.listing_applied(T0)  # a listing before the stream came up
    tracker.stream_connected(T0 + 1)
    tracker.apply(job("d" * 8, created=T0 + 0.5), T0 + 15, source="list")
    tracker.listing_applied(T0 + 14)
    tracker.apply(job("e" * 8, created=T0 + 20), T0 + 30, source="list")
    tracker.stream_disconnected()
    assert tracker.judge_gaps(T0 + 60, grace=5.0) == 0
