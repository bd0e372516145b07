"""The job table: transitions, the histogram-once rule, retention, the cap, 431s, restarts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import api_job

from exporter.jobs import Job, parse_job
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import SKEW_MARGIN, JobTracker

T0 = 1_776_000_000.0  # exporter start (the watermark of a first start)
CMD = "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin"


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def job(
    job_id: str,
    status: int = 0,
    *,
    created: float = T0 - 60,
    completed: float | None = None,
    code: int = 0,
    cmd: str = CMD,
    result: Any = None,
    **extra: Any,
) -> Job:
    """A job as CloudStack's AsyncJobResponse would carry it."""
    raw = api_job(job_id, status, cmd=cmd, created=iso(created), jobresultcode=code)
    if status:
        raw["completed"] = iso(completed if completed is not None else created + 30)
    if result is not None:
        raw["jobresulttype"] = "object"
        raw["jobresult"] = result
    raw.update(extra)
    return parse_job(raw)


@pytest.fixture
def metrics() -> ExporterMetrics:
    return ExporterMetrics()


def make(metrics: ExporterMetrics, **kw: Any) -> JobTracker:
    options: dict[str, Any] = {"retention": 3600.0, "max_jobs": 1000, "watermark": T0}
    options.update(kw)
    cloud = options.pop("cloud", "prod")
    return JobTracker(cloud, metrics.cloud(cloud), **options)


def value(metrics: ExporterMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, {"cloud": "prod", **labels})
    return 0.0 if found is None else found


def finished(metrics: ExporterMetrics, status: str, code: str, cmd: str = "StartVMCmd") -> float:
    return value(
        metrics,
        "cloudstack_async_jobs_finished_total",
        cmd=cmd,
        status=status,
        result_code=code,
    )


def observed_durations(metrics: ExporterMetrics, status: str, cmd: str = "StartVMCmd") -> float:
    return value(metrics, "cloudstack_async_job_duration_seconds_count", cmd=cmd, status=status)


def dropped(metrics: ExporterMetrics, reason: str) -> float:
    return value(metrics, "cloudstack_exporter_jobs_dropped_total", reason=reason)


# --- transitions for every shape CloudStack produces -------------------------------------------

FINAL_SHAPES = {
    "success": (
        {"status": 1, "result": {"virtualmachine": {"id": "x"}}},
        ("succeeded", "0", ""),
    ),
    "failure with code": (
        {
            "status": 2,
            "code": 533,
            "result": {"errorcode": 533, "errortext": "Insufficient capacity"},
        },
        ("failed", "533", "Insufficient capacity"),
    ),
    "killed by a management-server restart": ({"status": 2, "code": 530}, ("failed", "530", "")),
    "cancelled for blocking a queue": ({"status": 2, "code": 0}, ("failed", "0", "")),
    "cancelled by an admin": (
        {"status": 3, "code": 0, "result": {"errorcode": 0, "errortext": "Cancelled by admin"}},
        ("cancelled", "0", ""),  # the error label is a failure's errortext only
    ),
}


@pytest.mark.parametrize("shape", FINAL_SHAPES)
def test_pending_then_final_counts_and_observes_once(metrics: ExporterMetrics, shape: str) -> None:
    fields, (status, code, error) = FINAL_SHAPES[shape]
    tracker = make(metrics)
    tracker.apply(job("j1", created=T0 + 10), T0 + 15)
    assert tracker.get("j1").finished_at is None  # type: ignore[union-attr]

    final = job("j1", created=T0 + 10, completed=T0 + 130, **fields)
    tracker.apply(final, T0 + 200)

    tracked = tracker.get("j1")
    assert tracked is not None
    assert tracked.job.status.label == status
    assert tracked.job.error == error
    assert tracked.finished_at == T0 + 200
    assert finished(metrics, status, code) == 1
    assert observed_durations(metrics, status) == 1
    assert (
        value(metrics, "cloudstack_async_job_duration_seconds_sum", cmd="StartVMCmd", status=status)
        == 120
    )


def test_repeated_views_of_a_finished_job_observe_once(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job("j1"), T0 + 1)
    done = job("j1", 1, completed=T0 + 5, result={"success": True})
    for step in range(5):
        tracker.apply(done, T0 + 10 + step)
    assert finished(metrics, "succeeded", "0") == 1
    assert observed_durations(metrics, "succeeded") == 1


def test_history_before_the_watermark_is_shown_but_not_observed(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.set_configured(["old"])
    tracker.apply(job("old", 1, created=T0 - 7200, completed=T0 - 3600), T0 + 5)
    assert tracker.get("old") is not None  # its series are there...
    assert finished(metrics, "succeeded", "0") == 0  # ...but it is not a new finish
    assert observed_durations(metrics, "succeeded") == 0


def test_unseen_job_completed_after_the_watermark_is_observed(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.set_configured(["new"])
    tracker.apply(job("new", 2, code=530, created=T0 - 100, completed=T0 + 20), T0 + 30)
    assert finished(metrics, "failed", "530") == 1
    assert observed_durations(metrics, "failed") == 1


def test_job_seen_pending_is_observed_even_with_an_early_completed(
    metrics: ExporterMetrics,
) -> None:
    # A server clock behind the exporter's: `completed` before the watermark, yet the
    # exporter watched the job run, so the finish is new.
    tracker = make(metrics)
    tracker.apply(job("j1", created=T0 - 600), T0 + 1)
    tracker.apply(job("j1", 1, created=T0 - 600, completed=T0 - 300), T0 + 20)
    assert finished(metrics, "succeeded", "0") == 1


def test_negative_or_unknown_duration_counts_without_a_histogram_sample(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics)
    tracker.apply(job("j1", created=T0 + 100), T0 + 1)
    tracker.apply(job("j1", 1, created=T0 + 100, completed=T0 + 50), T0 + 120)
    assert finished(metrics, "succeeded", "0") == 1
    assert observed_durations(metrics, "succeeded") == 0


def test_a_stale_pending_view_does_not_reopen_a_finished_job(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job("j1"), T0 + 1)
    tracker.apply(job("j1", 1, completed=T0 + 5), T0 + 10)
    tracker.apply(job("j1"), T0 + 11)
    tracked = tracker.get("j1")
    assert tracked is not None and tracked.job.status.final
    assert tracker.to_query(set()) == []


# --- what to query ------------------------------------------------------------------------------


def test_to_query_pending_not_listed_and_configured_never_seen(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.set_configured(["conf-a", "conf-b"])
    tracker.apply(job("listed"), T0 + 1)
    tracker.apply(job("gone-from-list"), T0 + 1)
    tracker.apply(job("done", 1, completed=T0 + 2), T0 + 3)
    tracker.apply(job("conf-b"), T0 + 1)

    assert tracker.to_query({"listed", "conf-b"}) == ["gone-from-list", "conf-a"]
    # Absence from a listing is no proof of completion: listed pending jobs still need no query,
    # unlisted ones are queried every cycle until they are final.
    assert tracker.to_query(set()) == ["listed", "gone-from-list", "conf-b", "conf-a"]


def test_configured_job_removed_before_being_seen_is_forgotten(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.set_configured(["a", "b"])
    tracker.apply(job("b"), T0 + 1)
    tracker.set_configured([])
    # "a" was never seen: forgotten. "b" is tracked and pending: still followed to its end.
    assert tracker.to_query(set()) == ["b"]


def test_configured_job_finished_and_expired_is_not_queried_again(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics, retention=60)
    tracker.set_configured(["c"])
    tracker.apply(job("c", 1, completed=T0 + 5), T0 + 10)
    tracker.expire(T0 + 100)
    assert tracker.get("c") is None
    assert tracker.to_query(set()) == []


# --- 431 ----------------------------------------------------------------------------------------


def test_not_found_drops_the_job_and_counts_it(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.set_configured(["typo"])
    tracker.apply(job("purged"), T0 + 1)
    tracker.not_found("purged")
    tracker.not_found("typo")
    assert tracker.get("purged") is None
    assert dropped(metrics, "not_found") == 2
    assert tracker.to_query(set()) == []  # neither is asked about again
    assert value(metrics, "cloudstack_exporter_tracked_jobs") == 0


# --- retention and the cap ----------------------------------------------------------------------


def test_retention_counts_from_when_the_exporter_saw_the_finish(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, retention=600)
    tracker.apply(job("p"), T0)
    # Completed long ago by CloudStack's clock, but seen finished only now.
    tracker.apply(job("f", 1, created=T0 - 9000, completed=T0 - 8000), T0 + 100)
    tracker.expire(T0 + 699)
    assert tracker.get("f") is not None
    tracker.expire(T0 + 700)
    assert tracker.get("f") is None
    assert tracker.get("p") is not None  # pending jobs never expire
    assert dropped(metrics, "retention") == 1


def test_a_listed_finish_past_retention_is_not_taken_unless_configured(
    metrics: ExporterMetrics,
) -> None:
    # Up to 4.11 listings carry finished jobs until purge (cloudstack-api.md §5).
    tracker = make(metrics, retention=600)
    tracker.set_configured(["c"])
    old = {"created": T0 - 9000, "completed": T0 - 8000}
    tracker.apply(job("f", 1, **old), T0 + 100, source="list")
    tracker.apply(job("c", 1, **old), T0 + 100, source="list")
    tracker.apply(job("g", 1, completed=T0 + 50), T0 + 100, source="list")
    assert tracker.get("f") is None  # it would only be dropped at the end of the cycle
    assert tracker.get("c") is not None  # configured: shown for retention once
    assert tracker.get("g") is not None  # within retention: shown
    tracker.expire(T0 + 800)
    assert dropped(metrics, "retention") == 2
    for now in (T0 + 900, T0 + 2000):  # listed again, cycle after cycle: not taken again
        for job_id in ("f", "c"):
            tracker.apply(job(job_id, 1, **old), now, source="list")
        tracker.apply(job("g", 1, completed=T0 + 50), now, source="list")
        tracker.expire(now)
    assert [t.job.job_id for t in tracker.jobs()] == []
    assert dropped(metrics, "retention") == 2


def test_cap_evicts_the_oldest_finished_job_first(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, max_jobs=3)
    tracker.apply(job("f1", 1, completed=T0 + 1), T0 + 1)
    tracker.apply(job("f2", 1, completed=T0 + 2), T0 + 2)
    tracker.apply(job("p1"), T0 + 3)
    tracker.apply(job("p2"), T0 + 4)
    assert {t.job.job_id for t in tracker.jobs()} == {"f2", "p1", "p2"}
    assert dropped(metrics, "capacity") == 1


def test_cap_full_of_pending_jobs_refuses_newcomers_and_counts_each_once(
    metrics: ExporterMetrics,
) -> None:
    tracker = make(metrics, max_jobs=2)
    tracker.apply(job("p1"), T0)
    tracker.apply(job("p2"), T0)
    for cycle in range(3):
        tracker.apply(job("p3"), T0 + cycle)
        tracker.expire(T0 + cycle)
    assert tracker.get("p3") is None
    assert dropped(metrics, "capacity") == 1

    tracker.apply(job("p1", 1, completed=T0 + 5), T0 + 10)
    tracker.expire(T0 + 5000)  # p1's retention ends: room again
    tracker.apply(job("p3"), T0 + 5001)
    assert tracker.get("p3") is not None


def test_jobs_beyond_the_cap_are_counted_once_however_many_and_however_long(
    metrics: ExporterMetrics,
) -> None:
    # Three times more pending jobs than the cap, listed cycle after cycle.
    tracker = make(metrics, max_jobs=4, retention=10)
    pending = [f"p{i}" for i in range(12)]

    def cycle(now: float) -> None:
        for job_id in pending:
            tracker.apply(job(job_id), now, source="list")
        tracker.listing_applied(now, set(pending))
        tracker.expire(now)

    for n in range(10):
        cycle(T0 + n)
    assert dropped(metrics, "capacity") == 8  # p4-p11, once each
    # p0 ends and leaves the list: the next listing's first refused job takes its place
    # (the cap evicts finished jobs first), the others wait and are not counted again.
    tracker.apply(job("p0", 1, completed=T0 + 10), T0 + 10)
    pending.remove("p0")
    for n in range(11, 40):
        cycle(T0 + n)
    assert tracker.get("p0") is None and tracker.get("p4") is not None
    assert dropped(metrics, "capacity") == 9  # p4-p11 refused once each, p0 evicted

    # A refused job that left the list has ended: forgotten, so the set stays bounded.
    tracker.listing_applied(T0 + 50, {"p1", "p2", "p3", "p4"})
    assert tracker._refused == set()


def test_expire_enforces_a_lowered_cap(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, max_jobs=10)
    for i in range(5):
        tracker.apply(job(f"f{i}", 1, completed=T0 + i), T0 + i)
    tracker.apply(job("p"), T0 + 6)
    tracker.max_jobs = 2
    tracker.expire(T0 + 7)
    assert {t.job.job_id for t in tracker.jobs()} == {"f4", "p"}
    assert dropped(metrics, "capacity") == 4


# --- restart ------------------------------------------------------------------------------------


def restarted(metrics: ExporterMetrics, tracker: JobTracker, now: float) -> JobTracker:
    """A new process: state through JSON, new registry, tracker built with a fresh start."""
    state = json.loads(json.dumps(tracker.to_state()))
    fresh = make(metrics, watermark=now, retention=tracker.retention)
    fresh.restore(state)
    return fresh


def test_restart_does_not_observe_again(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, retention=60)
    tracker.set_configured(["conf"])
    tracker.apply(job("kept", created=T0 + 1), T0 + 2)
    tracker.apply(job("kept", 1, created=T0 + 1, completed=T0 + 9), T0 + 10)
    tracker.apply(job("conf", 1, created=T0 + 1, completed=T0 + 20), T0 + 21)
    tracker.expire(T0 + 50)
    tracker.expire(T0 + 75)  # "kept" expired, "conf" still within retention
    assert tracker.get("kept") is None and tracker.get("conf") is not None
    assert finished(metrics, "succeeded", "0") == 2

    after = ExporterMetrics()
    again = restarted(after, tracker, T0 + 78)
    again.set_configured(["conf"])
    assert again.get("conf") is not None
    assert again.to_query(set()) == []
    # Even if both were seen again, both finishes were already counted before the restart.
    again.apply(job("conf", 1, created=T0 + 1, completed=T0 + 20), T0 + 79)
    again.apply(job("kept", 1, created=T0 + 1, completed=T0 + 9), T0 + 79)
    assert finished(after, "succeeded", "0") == 0


def test_restart_observes_what_finished_while_down(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job("running", created=T0 + 1), T0 + 2)
    tracker.set_configured(["unseen"])
    after = ExporterMetrics()
    again = restarted(after, tracker, T0 + 1000)
    assert again.watermark == T0  # the persisted watermark, not the new start
    again.set_configured(["unseen"])
    assert again.to_query(set()) == ["running", "unseen"]
    again.apply(job("running", 1, created=T0 + 1, completed=T0 + 500), T0 + 1001)
    again.apply(job("unseen", 1, created=T0 + 100, completed=T0 + 600), T0 + 1001)
    assert finished(after, "succeeded", "0") == 2


def test_restore_keeps_finished_jobs_with_their_retention(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, retention=600)
    tracker.apply(job("f", 1, completed=T0 + 5), T0 + 10)
    again = restarted(ExporterMetrics(), tracker, T0 + 300)
    again.expire(T0 + 300)
    assert again.get("f") is not None
    again.expire(T0 + 610)
    assert again.get("f") is None


def test_restore_skips_unreadable_entries(metrics: ExporterMetrics, caplog: Any) -> None:
    tracker = make(metrics)
    tracker.apply(job("good"), T0 + 1)
    state = tracker.to_state()
    state["jobs"].append(["only", "three", "fields"])
    state["jobs"].append([None] * len(state["fields"]))
    state["observed"] = {"x": "not a time", "y": 5}
    fresh = make(ExporterMetrics())
    fresh.restore(state)
    fresh.restore({"jobs": 7, "fields": "no"})  # not even lists: ignored, no crash
    assert [t.job.job_id for t in fresh.jobs()] == ["good"]
    assert "skipped 2 unreadable job entries" in caplog.text


def test_observed_ids_stay_bounded_over_a_long_run(metrics: ExporterMetrics) -> None:
    tracker = make(metrics, retention=600)
    now = T0
    for i in range(400):
        now = T0 + i * 60  # one finish a minute for 6h40m
        tracker.apply(job(f"j{i}", created=now - 20), now - 10)
        tracker.apply(job(f"j{i}", 1, created=now - 20, completed=now - 1), now)
        tracker.expire(now)
    assert finished(metrics, "succeeded", "0") == 400
    assert tracker.watermark == pytest.approx(now - 600 - SKEW_MARGIN)
    # Retention (10 min) plus the skew margin plus one pruning step's worth, not 400.
    assert len(tracker.to_state()["observed"]) <= (600 + SKEW_MARGIN + 60) / 60 + 1


# --- change tracking and summaries -------------------------------------------------------------


def test_changed_flag_only_for_real_changes(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job("j"), T0 + 1)
    tracker.changed = False
    version = tracker.version
    tracker.apply(job("j"), T0 + 1)
    assert not tracker.changed and tracker.version == version
    tracker.apply(job("j", jobprocstatus=3), T0 + 1)
    assert tracker.changed
    tracker.changed = False
    tracker.expire(T0 + 15)  # a later poll: ages moved
    assert tracker.changed


def test_summary_and_pending_by_management_server(metrics: ExporterMetrics) -> None:
    tracker = make(metrics)
    tracker.apply(job("a", created=T0 - 100, managementserverid="ms-1"), T0)
    tracker.apply(job("b", created=T0 - 40, managementserverid="ms-1"), T0)
    tracker.apply(job("c", created=T0 - 10, managementserverid="ms-2"), T0)
    tracker.apply(job("d", 1, completed=T0), T0)
    tracker.apply(job("e", cmd="org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd"), T0)
    summary = tracker.summary()
    assert summary.jobs_by_cmd_status == {
        ("StartVMCmd", "pending"): 3,
        ("StartVMCmd", "succeeded"): 1,
        ("CreateVolumeCmd", "pending"): 1,
    }
    assert summary.oldest_pending_age == {"StartVMCmd": 100, "CreateVolumeCmd": 60}
    assert tracker.pending_by_management_server() == {"ms-1": 2, "ms-2": 1}
    assert summary.pending_by_management_server == {"ms-1": 2, "ms-2": 1}
    assert summary.oldest_pending_age_by_management_server == {"ms-1": 100, "ms-2": 10}
    # The oldest job on ms-1 finishes: the next one there is the oldest.
    tracker.apply(job("a", 1, created=T0 - 100, completed=T0 + 5), T0 + 5)
    summary = tracker.summary()
    assert summary.oldest_pending_age_by_management_server == {"ms-1": 45, "ms-2": 15}


def test_invalid_settings_are_refused(metrics: ExporterMetrics) -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        make(metrics, max_jobs=0)
    with pytest.raises(ValueError, match="retention"):
        make(metrics, retention=-1)
