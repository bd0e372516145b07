"""The aggregates the tracker keeps up to date equal a recount of its jobs, whatever happened.

`JobTracker.summary()` (what every render uses) is maintained as jobs arrive, change, finish,
expire, are evicted or purged; `summarize()` recounts the table from scratch. They must agree
after any sequence of events, the earliest pending job of a command leaving included.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.jobs import Job, JobStatus
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker, summarize

T0 = 1_776_000_000.0
CMDS = ("StartVMCmd", "StopVMCmd", "CreateVolumeCmd")
SERVERS = ("", "ms-1", "ms-2")


def make_job(job_id: int, status: int, cmd: int, created: int | None, server: int) -> Job:
    name = CMDS[cmd]
    return Job(
        job_id=f"job-{job_id}",
        status=JobStatus(status),
        result_code=530 if status == 2 else 0,
        proc_status=0,
        cmd_class=f"org.apache.cloudstack.api.command.user.{name}",
        cmd=name,
        instance_type="VirtualMachine",
        instance_id=f"vm-{job_id}",
        account_id="acct",
        user_id="user",
        result_type="",
        created=None if created is None else T0 - created,
        completed=T0 + 1 if status else None,
        error="",
        result_object="",
        management_server_id=SERVERS[server] if status == 0 else "",
    )


EVENTS = st.lists(
    st.one_of(
        st.tuples(
            st.just("apply"),
            st.integers(0, 7),  # job ID: a few, so that the same job comes back
            st.integers(0, 3),  # status
            st.integers(0, 2),  # cmd
            st.one_of(st.none(), st.integers(0, 5)),  # created, seconds before T0
            st.integers(0, 2),  # management server
        ),
        st.tuples(st.just("not_found"), st.integers(0, 7)),
        st.tuples(st.just("expire"), st.integers(0, 3)),
    ),
    max_size=40,
)


@given(EVENTS)
@settings(max_examples=300, deadline=None)
def test_kept_aggregates_equal_a_recount(events: list[tuple]) -> None:
    tracker = JobTracker(
        "c", ExporterMetrics().cloud("c"), retention=10.0, max_jobs=5, watermark=T0 - 3600
    )
    now = T0
    for event in events:
        if event[0] == "apply":
            _, job_id, status, cmd, created, server = event
            tracker.apply(make_job(job_id, status, cmd, created, server), now)
        elif event[0] == "not_found":
            tracker.not_found(f"job-{event[1]}")
        else:
            now += 5 * event[1]
            tracker.expire(now)
        expected = summarize("c", tracker.now, tracker.jobs())
        assert tracker.summary() == expected
        assert tracker.view().summary() == expected
        assert tracker.pending_by_management_server() == dict(expected.pending_by_management_server)
