"""The job table of one cloud: transitions, the histogram-once rule, retention and the cap.

The poller feeds fresh views of jobs (`apply`), reports purged ones (`not_found`) and ends each
cycle with `expire`. Rendering reads immutable `TrackedJob` records through `view()`; a change
replaces a record instead of mutating it, so a snapshot taken on the event loop stays consistent
while another thread renders it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.jobs import Job, JobStatus, with_shared_strings
from exporter.labels import escape_label_value, job_info_labels
from exporter.selfmetrics import JobSummary

if TYPE_CHECKING:
    from exporter.events import JobEvent
    from exporter.selfmetrics import CloudMetrics

log = logging.getLogger(__name__)

STATE_FORMAT = 1

# How far the exporter's clock and CloudStack's `created`/`completed` stamps may disagree
# without double-counting or losing a finish (see _advance_watermark).
SKEW_MARGIN = 900.0

# Observed IDs are pruned with a full pass only once the watermark has moved this much,
# so the per-cycle cost stays proportional to what changed.
_PRUNE_STEP = 60.0

_STATUS_LABELS = tuple(s.label for s in JobStatus)
_PENDING = JobStatus.PENDING  # an enum member looked up on its class is slow on a hot path

# (cmd, instance_type) -> the shared end of the labels; a cloud has a few hundred of them.
_MAX_TAILS = 10_000

# Order of a job's fields in the state file (written once as a header, so a row is a list).
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


@dataclass(frozen=True, slots=True)
class TrackedJob:
    """One tracked job as rendering sees it; replaced, never mutated."""

    job: Job
    finished_at: float | None  # exporter time at which it was first seen final
    # The labels shared by every family are `head + escaped job ID + tail`: head and tail are
    # strings shared by many jobs, so a job keeps no labels string of its own (~160 bytes).
    head: str  # escaped `cloud="..",job_id="`
    tail: str  # escaped `",cmd="..",instance_type=".."`
    # jobs.fingerprint() of the listing entry the job was last read from (None when it came
    # from a query or the state file): an identical entry next cycle needs no parse. Not a
    # property of the job, so records differing only here are equal (no re-render).
    fingerprint: int | None = field(default=None, compare=False)

    @property
    def labels(self) -> str:
        """The escaped `cloud=..,job_id=..,cmd=..,instance_type=..` of every family."""
        return self.head + escape_label_value(self.job.job_id) + self.tail

    @property
    def info_labels(self) -> str:
        """The escaped remaining labels of cloudstack_async_job_info, leading ",". Made when
        asked, not kept: the info line is rendered only when its segment of jobs changes, and
        keeping it would cost about 280 bytes a job."""
        return job_info_labels(self.job)


@dataclass(frozen=True, slots=True)
class TrackerView:
    """An immutable snapshot of one tracker for rendering off the event loop."""

    cloud: str
    now: float  # time of the last poll: ages are as of then
    jobs: list[TrackedJob]
    aggregates: JobSummary | None = None  # kept up to date by the tracker, if it gave them

    def summary(self) -> JobSummary:
        if self.aggregates is not None:
            return self.aggregates
        return summarize(self.cloud, self.now, self.jobs)


def summarize(cloud: str, now: float, jobs: Iterable[TrackedJob]) -> JobSummary:
    """The aggregates of a set of tracked jobs, in one pass."""
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    by_server: dict[str, int] = {}
    oldest_on_server: dict[str, float] = {}
    for tracked in jobs:
        job = tracked.job
        cmd = job.cmd
        key = (cmd, _STATUS_LABELS[job.status])
        counts[key] = counts.get(key, 0) + 1
        if job.status is JobStatus.PENDING:
            server = job.management_server_id
            if server:
                by_server[server] = by_server.get(server, 0) + 1
            if job.created is not None:
                age = now - job.created
                if age > oldest.get(cmd, -math.inf):
                    oldest[cmd] = age
                if server and age > oldest_on_server.get(server, -math.inf):
                    oldest_on_server[server] = age
    return JobSummary(
        cloud=cloud,
        jobs_by_cmd_status=counts,
        oldest_pending_age=oldest,
        pending_by_management_server=by_server,
        oldest_pending_age_by_management_server=oldest_on_server,
    )


class JobTracker:
    """The job table of one cloud."""

    def __init__(
        self,
        cloud: str,
        metrics: CloudMetrics,
        *,
        retention: float,
        max_jobs: int,
        watermark: float,
    ) -> None:
        if retention < 0 or not math.isfinite(retention):
            raise ValueError(f"retention must be a finite number >= 0, got {retention!r}")
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs!r}")
        self.cloud = cloud
        self.metrics = metrics
        self.retention = float(retention)
        self.max_jobs = int(max_jobs)
        self._watermark = float(watermark)
        self._pruned_at = self._watermark
        self._now = -math.inf
        self._jobs: dict[str, TrackedJob] = {}
        self._finished: dict[str, float] = {}  # ID -> finished_at, oldest first
        # ID -> completion (or observation) time of every job observed in the histogram
        # whose completion is after the watermark; see _advance_watermark.
        self._observed: dict[str, float] = {}
        self._configured: set[str] = set()
        self._configured_done: set[str] = set()  # configured, and gone (431) or expired
        self._refused: set[str] = set()  # refused for capacity, counted once each: pending
        # jobs listed (or configured) beyond the cap, so bounded by what CloudStack lists
        # The aggregates, kept up to date as jobs come, change and go (see _count), so that
        # a render does not recount 100,000 jobs.
        self._counts: dict[tuple[str, str], int] = {}  # (cmd, status label) -> jobs
        self._by_server: dict[str, int] = {}  # pending jobs per management server
        self._oldest = _Earliest()  # cmd -> earliest `created` of its pending jobs
        self._oldest_on_server = _Earliest()  # the same per management server
        self._head = f'cloud="{escape_label_value(cloud)}",job_id="'
        self._tails: dict[tuple[str, str], str] = {}
        self.changed = True  # since the last render; the renderer clears it
        self.version = 0
        self._reported_size = -1
        # The event stream, for clouds that have one (see `event`). Sized by the jobs
        # events told of, which are tracked jobs: removed with them.
        self._stream_since: float | None = None  # connected since (exporter time), or None
        self._last_listing: float | None = None  # start of the last applied listing
        self._submitted: dict[str, float] = {}  # job ID -> receipt time of a live submit
        self._heard: set[str] = set()  # jobs some event told of
        self._gap_candidates: dict[str, float] = {}  # listed, never heard of: when listed
        self.gaps = 0  # event gaps found; the stream's metrics count them

    # --- reading -----------------------------------------------------------------------------

    @property
    def watermark(self) -> float:
        return self._watermark

    @property
    def now(self) -> float:
        """Time of the last poll (the latest `now` given); ages are as of then."""
        return self._now if self._now > -math.inf else self._watermark

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def size(self) -> int:
        """Jobs currently tracked."""
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> TrackedJob | None:
        return self._jobs.get(job_id)

    def jobs(self) -> Iterable[TrackedJob]:
        return self._jobs.values()

    def view(self) -> TrackerView:
        """A snapshot for rendering: cheap (a list copy), safe to read from another thread."""
        return TrackerView(self.cloud, self.now, list(self._jobs.values()), self.summary())

    def summary(self) -> JobSummary:
        """The aggregates, equal to `summarize(cloud, now, jobs())`, without a pass over the
        jobs (unless the earliest pending job of a command went: then one pass)."""
        if self._oldest.stale or self._oldest_on_server.stale:
            self._recompute_oldest()
        now = self.now
        return JobSummary(
            cloud=self.cloud,
            jobs_by_cmd_status=dict(self._counts),
            oldest_pending_age=self._oldest.ages(now),
            pending_by_management_server=dict(self._by_server),
            oldest_pending_age_by_management_server=self._oldest_on_server.ages(now),
        )

    def pending_by_management_server(self) -> dict[str, int]:
        """Pending jobs per `managementserverid` (4.19+); jobs without one are left out."""
        return dict(self._by_server)

    # --- feeding -----------------------------------------------------------------------------

    def set_configured(self, job_ids: Iterable[str]) -> None:
        """The statically configured IDs (`jobs` plus `jobs_file`) as of now."""
        configured = {i for i in job_ids if isinstance(i, str) and i}
        # A removed ID that is not tracked is simply no longer queried; a tracked one
        # (pending or finished) stays until it finishes and its retention ends.
        self._configured = configured
        self._configured_done &= configured

    def is_configured(self, job_id: str) -> bool:
        return job_id in self._configured

    def to_query(self, listed: Set[str]) -> list[str]:
        """IDs to query this cycle: tracked pending jobs absent from this cycle's listing
        (absence is no proof of completion: the list moves while it is paged), and
        configured jobs never seen. Finished jobs are never queried again."""
        wanted = [i for i, t in self._jobs.items() if t.finished_at is None and i not in listed]
        jobs, done, refused = self._jobs, self._configured_done, self._refused
        wanted.extend(
            i
            for i in sorted(self._configured)
            if i not in jobs and i not in done and i not in listed and i not in refused
        )
        return wanted

    def apply(
        self,
        job: Job,
        now: float,
        fingerprint: int | None = None,
        source: str = "query",
        *,
        new_finish: bool = False,
    ) -> None:
        """A fresh view of one job, from the pending list (`source` "list", with the entry's
        fingerprint), from a query, or from the query an event asked for ("event").
        `new_finish`: the finish is known to be new (a `complete` received live), whatever
        the watermark says of CloudStack's one-second `completed`."""
        self._touch(now)
        job_id = job.job_id
        old = self._jobs.get(job_id)
        if old is None:
            if source == "list" and job.status.final and self._stale_listed_finish(job):
                return
            if source == "list" and not job.status.final:
                self._maybe_gap(job_id, now)
            self._track_new(job, fingerprint, source, new_finish=new_finish)
            return
        if job.status.final and not job.management_server_id and old.job.management_server_id:
            # CloudStack clears the server when the job ends; keep the one last seen running
            # it, so that a failure can be traced to its management server.
            job = dataclasses.replace(
                job,
                management_server_id=old.job.management_server_id,
                management_server_name=job.management_server_name or old.job.management_server_name,
            )
        if old.job is job or old.job == job:
            if fingerprint is not None and fingerprint != old.fingerprint:
                # Same job, other text (keys reordered, say): remember it, or it is parsed
                # again every cycle. Equal records: nothing to count or re-render.
                self._jobs[job_id] = dataclasses.replace(old, fingerprint=fingerprint)
            return
        if old.job.status.final:
            if not job.status.final:
                # CloudStack never reopens a job; a stale listing page must not undo a finish.
                log.debug(
                    "cloud=%s job_id=%s: ignoring pending view of a finished job",
                    self.cloud,
                    job_id,
                )
                return
            finished_at: float | None = old.finished_at
        elif job.status.final:
            finished_at = self._now
        else:
            finished_at = None
        self._put(job_id, self._tracked(job, finished_at, fingerprint), old)
        if finished_at is not None and old.finished_at is None:
            self._finish(job_id, job, finished_at, seen_pending=True, source=source)
        self._mark()

    def listed_unchanged(self, entry: Any, fingerprint: int | None) -> Job | None:
        """The tracked Job when a listAsyncJobs entry is the very entry it was last read from
        (same jobs.fingerprint), else None: a listed job that did not change costs no
        parse_job, and the poller has nothing to apply."""
        if fingerprint is None or type(entry) is not dict:
            return None
        job_id = entry.get("jobid")
        if type(job_id) is not str:
            return None
        tracked = self._jobs.get(job_id)
        if tracked is not None and tracked.fingerprint == fingerprint:
            return tracked.job
        return None

    def not_found(self, job_id: str, reason: str = "not_found") -> None:
        """CloudStack answered 431: the job was purged (or never existed). Drop and count it.
        `reason="forbidden"` is for 531 (another account's job): it will never be visible."""
        if job_id in self._configured:
            self._configured_done.add(job_id)
        if job_id in self._jobs:
            self._remove(job_id)
            self._report_size()
        self.metrics.dropped(reason, 1)

    def _stale_listed_finish(self, job: Job) -> bool:
        """A finished job that a listing shows (CloudStack up to 4.11 lists finished jobs
        until they are purged, a day by default) and that is past retention already: taking
        it would drop it at the end of the cycle and take it again at the next listing,
        counting a `retention` drop each time. A configured job is shown for retention
        once, however old, unless it has been (`_configured_done`)."""
        if job.job_id in self._configured:
            return job.job_id in self._configured_done
        return job.completed is not None and job.completed <= self._now - self.retention

    def expire(self, now: float) -> None:
        """End of a cycle: drop finished jobs past retention, then enforce the cap."""
        self._touch(now)
        cutoff = self._now - self.retention
        expired = 0
        while self._finished:
            job_id, finished_at = next(iter(self._finished.items()))
            if finished_at > cutoff:
                break
            self._remove(job_id)
            expired += 1
        if expired:
            self.metrics.dropped("retention", expired)
        evicted = 0
        while len(self._jobs) > self.max_jobs and self._finished:
            self._remove(next(iter(self._finished)))
            evicted += 1
        if evicted:
            self.metrics.dropped("capacity", evicted)
        self._advance_watermark()
        self._report_size()

    # --- the event stream (cloudstack-api.md §9) ----------------------------------------------

    def stream_connected(self, now: float) -> None:
        self._stream_since = now
        self._gap_candidates.clear()

    def stream_disconnected(self) -> None:
        # A submit missed while disconnected is not a gap: nobody was listening.
        self._stream_since = None
        self._gap_candidates.clear()

    def listing_applied(self, started: float, listed: Set[str] | None = None) -> None:
        """A listing (every page) was applied; it had started at `started`. A job refused
        for capacity that the listing no longer holds has ended: it is forgotten (it cannot
        be listed pending again), unless configured (queried, not listed)."""
        self._last_listing = started
        if listed is not None and self._refused:
            self._refused = {i for i in self._refused if i in listed or i in self._configured}

    def _maybe_gap(self, job_id: str, now: float) -> None:
        # New in this listing and pending, while the stream has been up since before the
        # previous listing began: the job was submitted after that listing began (else that
        # listing would have shown it), so with the stream up, its submit was published to
        # a bound queue. No clock of CloudStack's is compared. Judged a little later: the
        # submit may still be on its way.
        since, previous = self._stream_since, self._last_listing
        if since is None or previous is None or since > previous or job_id in self._heard:
            return
        self._gap_candidates[job_id] = now

    def judge_gaps(self, now: float, grace: float) -> int:
        """Count the listed jobs whose submit has not come `grace` seconds after listing."""
        if not self._gap_candidates:
            return 0
        due = [i for i, t in self._gap_candidates.items() if now - t >= grace]
        for job_id in due:
            del self._gap_candidates[job_id]
        self.gaps += len(due)
        return len(due)

    def event(self, event: JobEvent, received: float, live: bool) -> bool:
        """Apply one AsyncJobEvent; True when the job's times must come from a query.

        A submit tracks the job at once; a complete ends it at once when its submit was
        received live too (the duration is then the time between the receipts, sharper
        than CloudStack's one-second stamps). Otherwise (backlog, a missed or late submit)
        the caller queries the job, and the answer ends it as a poll would. The body's
        status is trusted over the event type (CloudStack publishes late from 2026).
        """
        self._touch(received)
        job_id = event.job_id
        self._heard.add(job_id)
        self._gap_candidates.pop(job_id, None)
        old = self._jobs.get(job_id)
        if old is not None and old.finished_at is not None:
            return False  # finished already: a duplicate, a redelivery, a late submit
        if event.type == "submit" and live and not event.final:
            self._submitted.setdefault(job_id, received)
        if not event.final:
            if old is None:
                created = received if event.type == "submit" and live else None
                self._track_new(_job_from_event(event, created))
            return False
        submitted = self._submitted.get(job_id)
        if not live or submitted is None:
            return True
        base = old.job if old is not None else _job_from_event(event, submitted)
        job = dataclasses.replace(
            base,
            status=event.status,
            result_code=event.result_code,
            proc_status=event.proc_status,
            error=event.error,
            result_object=event.result_object,
            result_type=base.result_type or "object",
            completed=received,
        )
        duration = received - submitted
        if old is None:
            self._track_new(job, source="event", duration=duration)
            return False
        self._put(job_id, self._tracked(job, received), old)
        self._finish(job_id, job, received, seen_pending=True, source="event", duration=duration)
        self._mark()
        return False

    # --- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state: tracked jobs (finished ones too), observed IDs, the watermark."""
        rows = []
        for tracked in self._jobs.values():
            job = tracked.job
            row: list[Any] = [getattr(job, name) for name in _JOB_FIELDS]
            row[_JOB_FIELDS.index("status")] = int(job.status)
            row.append(tracked.finished_at)
            rows.append(row)
        return {
            "format": STATE_FORMAT,
            "watermark": self._watermark,
            "fields": [*_JOB_FIELDS, "finished_at"],
            "jobs": rows,
            "observed": dict(self._observed),
            "configured_done": sorted(self._configured_done),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what to_state wrote. Restored finished jobs are never observed again; bad
        entries are skipped with a warning (a state file must never stop the exporter)."""
        if not isinstance(state, Mapping):
            log.warning("cloud=%s: ignoring state that is not an object", self.cloud)
            return
        watermark = _number(state.get("watermark"))
        if watermark is not None:
            self._watermark = self._pruned_at = watermark
        observed = state.get("observed")
        if isinstance(observed, Mapping):
            for job_id, when in observed.items():
                when = _number(when)
                if isinstance(job_id, str) and when is not None:
                    self._observed[job_id] = when
        done = state.get("configured_done")
        if isinstance(done, list):
            self._configured_done.update(i for i in done if isinstance(i, str))
        fields = state.get("fields")
        rows = state.get("jobs")
        if not isinstance(fields, list) or not isinstance(rows, list):
            rows = []
            fields = []
        skipped = 0
        restored: list[TrackedJob] = []
        for row in rows:
            tracked = self._tracked_from_row(fields, row)
            if tracked is None:
                skipped += 1
            else:
                restored.append(tracked)
        if skipped:
            log.warning(
                "cloud=%s: skipped %d unreadable job entries in the state file", self.cloud, skipped
            )
        finished = sorted(
            (t for t in restored if t.finished_at is not None),
            key=lambda t: t.finished_at or 0.0,
        )
        for tracked in restored:
            job_id = tracked.job.job_id
            if job_id in self._jobs:
                self._remove(job_id)
            self._put(job_id, tracked)
        for tracked in finished:
            self._finished[tracked.job.job_id] = tracked.finished_at or 0.0
        self._mark()
        self._report_size()

    def _tracked_from_row(self, fields: list[Any], row: Any) -> TrackedJob | None:
        if not isinstance(row, list) or len(row) != len(fields):
            return None
        values = dict(zip(fields, row, strict=True))
        try:
            kwargs: dict[str, Any] = {}
            for spec in dataclasses.fields(Job):
                # A field newer than the file has its default (older state files load).
                default = None if spec.default is dataclasses.MISSING else spec.default
                value = values.get(spec.name, default)
                if spec.name == "status":
                    if not isinstance(value, int):
                        return None
                    kwargs["status"] = JobStatus(value)
                elif spec.name in ("result_code", "proc_status"):
                    if not isinstance(value, int) or isinstance(value, bool):
                        return None
                    kwargs[spec.name] = value
                elif spec.name in ("created", "completed"):
                    number = _number(value)
                    if value is not None and number is None:
                        return None
                    kwargs[spec.name] = number
                else:
                    if not isinstance(value, str):
                        return None
                    kwargs[spec.name] = value
            job = with_shared_strings(Job(**kwargs))
        except (TypeError, ValueError):
            return None
        if not job.job_id:
            return None
        finished_at = _number(values.get("finished_at")) if job.status.final else None
        if job.status.final and finished_at is None:
            return None
        return self._tracked(job, finished_at)

    # --- internals -----------------------------------------------------------------------------

    def _touch(self, now: float) -> None:
        if now > self._now:
            self._now = now
            if self._jobs:
                self._mark()  # ages moved

    def _mark(self) -> None:
        self.changed = True
        self.version += 1

    def _track_new(
        self,
        job: Job,
        fingerprint: int | None = None,
        source: str = "query",
        duration: float | None = None,
        *,
        new_finish: bool = False,
    ) -> bool:
        """Track a job not tracked yet; False if the tracked-jobs cap refused it."""
        job_id = job.job_id
        if len(self._jobs) >= self.max_jobs:
            if self._finished:
                self._remove(next(iter(self._finished)))
                self.metrics.dropped("capacity", 1)
            else:
                # Only pending jobs: they are what the exporter exists to watch, so the
                # newcomer is refused rather than an older pending job evicted.
                # Counted once however often it is listed while there is no room; admitted
                # (and forgotten) when there is. The listing bounds the set: see
                # listing_applied.
                if job_id not in self._refused:
                    self._refused.add(job_id)
                    self.metrics.dropped("capacity", 1)
                return False
        self._refused.discard(job_id)
        self._configured_done.discard(job_id)
        if job.status.final:
            self._put(job_id, self._tracked(job, self._now, fingerprint))
            self._finish(
                job_id,
                job,
                self._now,
                seen_pending=new_finish or duration is not None,
                source=source,
                duration=duration,
            )
        else:
            self._put(job_id, self._tracked(job, None, fingerprint))
        self._mark()
        self._report_size()
        return True

    def _finish(
        self,
        job_id: str,
        job: Job,
        finished_at: float,
        *,
        seen_pending: bool,
        source: str = "query",
        duration: float | None = None,
    ) -> None:
        self._finished[job_id] = finished_at
        self._submitted.pop(job_id, None)
        self._gap_candidates.pop(job_id, None)
        if job_id in self._observed:
            return
        completed = job.completed
        # Observed only when the finish is new to the exporter: it saw the job pending, or
        # the job completed after the watermark. Older history would inflate the counters
        # with finishes an earlier run (or nobody) already counted.
        if seen_pending or (completed is not None and completed > self._watermark):
            self.metrics.job_finished(job, source, duration)
            self._observed[job_id] = completed if completed is not None else finished_at

    def _remove(self, job_id: str) -> None:
        tracked = self._jobs.pop(job_id, None)
        self._finished.pop(job_id, None)
        self._submitted.pop(job_id, None)
        self._heard.discard(job_id)
        self._gap_candidates.pop(job_id, None)
        if tracked is not None:
            self._count(tracked.job, -1)
            if job_id in self._configured:
                self._configured_done.add(job_id)  # finished and gone: never query again
            self._mark()

    def _advance_watermark(self) -> None:
        """Move the watermark to `now - (retention + SKEW_MARGIN)` and forget observed IDs
        that completed before it.

        Why this is safe: a job whose completion is at or before the watermark is observed
        only if it was seen pending, and a job seen pending is tracked, so its own record
        (already final) prevents a second observation. The observed set therefore only
        needs IDs whose completion is after the watermark. The horizon keeps the last
        `retention` of finishes (what the table itself still shows) plus a margin for a
        CloudStack clock running ahead of or behind the exporter's: `completed` is server
        time, the watermark exporter time. After a restart the persisted watermark is
        used, so a job that finished while the exporter was down still counts, once.
        """
        horizon = self.now - (self.retention + SKEW_MARGIN)
        if horizon > self._watermark:
            self._watermark = horizon
        if self._watermark - self._pruned_at >= _PRUNE_STEP:
            watermark = self._watermark
            self._observed = {i: t for i, t in self._observed.items() if t > watermark}
            self._pruned_at = watermark

    def _tracked(
        self, job: Job, finished_at: float | None, fingerprint: int | None = None
    ) -> TrackedJob:
        key = (job.cmd, job.instance_type)
        tail = self._tails.get(key)
        if tail is None:
            e = escape_label_value
            tail = f'",cmd="{e(job.cmd)}",instance_type="{e(job.instance_type)}"'
            if len(self._tails) < _MAX_TAILS:
                self._tails[key] = tail
        return TrackedJob(job, finished_at, self._head, tail, fingerprint)

    def _put(self, job_id: str, tracked: TrackedJob, old: TrackedJob | None = None) -> None:
        """Store a record (replacing `old`, the current one, if given); counts follow."""
        if old is not None:
            self._count(old.job, -1)
        self._jobs[job_id] = tracked
        self._count(tracked.job, 1)

    def _count(self, job: Job, delta: int) -> None:
        """Add (1) or take away (-1) one job from the aggregates."""
        cmd = job.cmd
        key = (cmd, _STATUS_LABELS[job.status])
        count = self._counts.get(key, 0) + delta
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]
        if job.status is not _PENDING:
            return
        server = job.management_server_id
        if server:
            count = self._by_server.get(server, 0) + delta
            if count:
                self._by_server[server] = count
            else:
                del self._by_server[server]
        created = job.created
        if created is None:
            return
        self._oldest.count(cmd, created, delta)
        if server:
            self._oldest_on_server.count(server, created, delta)

    def _recompute_oldest(self) -> None:
        """One pass for every group whose earliest pending job went."""
        by_cmd, by_server = self._oldest.stale, self._oldest_on_server.stale
        found_cmd: dict[str, float] = {}
        found_server: dict[str, float] = {}
        for tracked in self._jobs.values():
            job = tracked.job
            created = job.created
            if job.status is not _PENDING or created is None:
                continue
            if job.cmd in by_cmd and created < found_cmd.get(job.cmd, math.inf):
                found_cmd[job.cmd] = created
            server = job.management_server_id
            if server in by_server and created < found_server.get(server, math.inf):
                found_server[server] = created
        self._oldest.settle(found_cmd)
        self._oldest_on_server.settle(found_server)

    def _report_size(self) -> None:
        size = len(self._jobs)
        if size != self._reported_size:
            self._reported_size = size
            self.metrics.tracked(size)


class _Earliest:
    """The earliest `created` of the pending jobs of each group (a command, a management
    server), kept as jobs come and go. When a group's earliest job goes, which one is now the
    earliest is found when next asked, by JobTracker._recompute_oldest."""

    __slots__ = ("earliest", "stale")

    def __init__(self) -> None:
        self.earliest: dict[str, float] = {}
        self.stale: set[str] = set()

    def count(self, group: str, created: float, delta: int) -> None:
        if group in self.stale:
            return
        earliest = self.earliest.get(group)
        if delta > 0:
            if earliest is None or created < earliest:
                self.earliest[group] = created
        elif created == earliest:
            self.stale.add(group)

    def settle(self, found: Mapping[str, float]) -> None:
        """The earliest of each stale group, from a pass over the pending jobs."""
        for group in self.stale:
            if group in found:
                self.earliest[group] = found[group]
            else:
                self.earliest.pop(group, None)
        self.stale.clear()

    def ages(self, now: float) -> dict[str, float]:
        return {group: now - created for group, created in self.earliest.items()}


def _job_from_event(event: JobEvent, created: float | None) -> Job:
    """What an event tells of a job not tracked yet. `created` is the submit's receipt time
    (None when unknown: the next poll or query fills the times in)."""
    job = Job(
        job_id=event.job_id,
        status=event.status,
        result_code=event.result_code,
        proc_status=event.proc_status,
        cmd_class=event.cmd_class,
        cmd=event.cmd,
        instance_type=event.instance_type,
        instance_id=event.instance_id,
        account_id=event.account_uuid,  # the API's accountid is the UUID too
        user_id=event.user_uuid,
        result_type="object" if event.final and event.result_object else "",
        created=created,
        completed=None,
        error=event.error,
        result_object=event.result_object,
        management_server_id="",  # events name no management server
        account=event.account_name,
    )
    return with_shared_strings(job)


def _number(value: object) -> float | None:
    """A finite JSON number as float, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    return None
