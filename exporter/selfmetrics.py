"""The prometheus_client registry of the exporter's low-cardinality metrics.

Health, API calls, finished-job counters and histograms live in one `CollectorRegistry`
owned by `ExporterMetrics` (never the global one, so several instances can coexist in one
process, as tests do). The per-cloud job aggregates come from a custom collector that reads
job summaries at collection time. Per-job series are not here: rendering writes them by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import platform
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter import __version__
from exporter.config import DEFAULT_DURATION_BUCKETS

if TYPE_CHECKING:
    from exporter.jobs import Job

API_LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
DROP_REASONS = ("retention", "capacity", "not_found", "forbidden")
FINISH_SOURCES = ("event", "list", "query")
EVENT_TYPES = ("submit", "update", "complete")
STATUS_LABELS = ("pending", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The aggregates of one cloud's tracked jobs at one moment."""

    cloud: str
    jobs_by_cmd_status: Mapping[tuple[str, str], int] = field(default_factory=dict)
    oldest_pending_age: Mapping[str, float] = field(default_factory=dict)  # cmd -> seconds
    pending_by_management_server: Mapping[str, int] = field(default_factory=dict)
    # management server -> seconds
    oldest_pending_age_by_management_server: Mapping[str, float] = field(default_factory=dict)


def aggregate_families(summaries: Iterable[JobSummary]) -> list[Metric]:
    """cloudstack_async_jobs and friends, from the job summaries of one snapshot."""
    jobs = GaugeMetricFamily(
        "cloudstack_async_jobs",
        "Async jobs the exporter tracks, by command and state (pending, succeeded, failed, "
        "cancelled); finished jobs stay for the retention period. Every state of a "
        "command with at least one tracked job is present, 0 when empty.",
        labels=("cloud", "cmd", "status"),
    )
    oldest = GaugeMetricFamily(
        "cloudstack_async_jobs_oldest_pending_age_seconds",
        "Age of the oldest pending async job of the command, as of the last poll; absent "
        "when none of that command is pending.",
        labels=("cloud", "cmd"),
    )
    by_server = GaugeMetricFamily(
        "cloudstack_async_jobs_pending_by_management_server",
        "Pending async jobs per CloudStack management server (managementserverid, "
        "reported by CloudStack 4.19 and later while a job runs).",
        labels=("cloud", "management_server_id"),
    )
    oldest_on_server = GaugeMetricFamily(
        "cloudstack_async_jobs_oldest_pending_age_by_management_server_seconds",
        "Age of the oldest pending async job running on the CloudStack management server "
        "(managementserverid, CloudStack 4.19 and later), as of the last poll: a server "
        "that stopped working through its jobs shows as this growing.",
        labels=("cloud", "management_server_id"),
    )
    for summary in summaries:
        cloud = summary.cloud
        cmds = sorted({cmd for cmd, _ in summary.jobs_by_cmd_status})
        for cmd in cmds:
            for status in STATUS_LABELS:
                count = summary.jobs_by_cmd_status.get((cmd, status), 0)
                jobs.add_metric((cloud, cmd, status), count)
        for cmd, age in sorted(summary.oldest_pending_age.items()):
            oldest.add_metric((cloud, cmd), round(age, 3))
        for server, count in sorted(summary.pending_by_management_server.items()):
            by_server.add_metric((cloud, server), count)
        for server, age in sorted(summary.oldest_pending_age_by_management_server.items()):
            oldest_on_server.add_metric((cloud, server), round(age, 3))
    return [jobs, oldest, by_server, oldest_on_server]


class _Exposition:
    """What one exposition collects: a registry's metrics, then the aggregate families."""

    def __init__(self, source: CollectorRegistry | _WithoutCreated, families: list[Metric]):
        self._source = source
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()
        yield from self._families


class _WithoutCreated:
    """The registry minus `_created` samples, for the Prometheus text format.

    prometheus_client.disable_created_metrics() would do it process-wide (a module global);
    filtering at collection keeps it per registry and leaves `_created` in OpenMetrics,
    where it belongs to the counter and histogram families.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            if any(s.name == created for s in metric.samples):
                copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                copy.samples = [s for s in metric.samples if s.name != created]
                yield copy
            else:
                yield metric


class CloudMetrics:
    """The metrics of one cloud, with label children bound once."""

    def __init__(self, owner: ExporterMetrics, name: str) -> None:
        self._owner = owner
        self.name = name
        self._up = owner.up.labels(name)
        self._poll_duration = owner.poll_duration.labels(name)
        # Bound on the first success: a 0 (1970) before it would read as "never polled
        # successfully for 56 years" rather than "not yet".
        self._last_success: Gauge | None = None
        self._tracked = owner.tracked_jobs.labels(name)
        self._dropped = {r: owner.jobs_dropped.labels(name, r) for r in DROP_REASONS}
        self._malformed = owner.malformed_jobs.labels(name)
        self._requests: dict[tuple[str, str], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._finished: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._skipped: dict[str, Counter] = {}
        # How finishes were learned: an event-stream series (metrics.md), made with events().
        self._by_source: dict[str, Counter] = {}
        self._events: EventMetrics | None = None

    def events(self) -> EventMetrics:
        """The event-stream series of this cloud, created on first use (clouds with
        `events` configured only)."""
        if self._events is None:
            self._events = EventMetrics(self._owner, self.name)
            self._by_source = {
                s: self._owner.finished_by_source.labels(self.name, s) for s in FINISH_SOURCES
            }
        return self._events

    def api_request(self, command: str, code: str, seconds: float) -> None:
        """One API call and its outcome (usable as the client's RequestObserver)."""
        key = (command, code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self._owner.api_requests.labels(
                self.name, command, code
            )
        counter.inc()
        latency = self._latency.get(command)
        if latency is None:
            latency = self._latency[command] = self._owner.api_latency.labels(self.name, command)
        latency.observe(max(seconds, 0.0))

    def poll_finished(self, ok: bool, seconds: float, now: float) -> None:
        self._up.set(1 if ok else 0)
        self._poll_duration.set(seconds)
        if ok:
            if self._last_success is None:
                self._last_success = self._owner.last_success.labels(self.name)
            self._last_success.set(now)

    def job_finished(self, job: Job, source: str = "query", duration: float | None = None) -> None:
        """Count a finished job and observe its duration (the tracker calls this once).
        `duration` overrides `completed - created` (the receipt times of its events)."""
        by_source = self._by_source.get(source)
        if by_source is not None:
            by_source.inc()
        status = job.status.label
        key = (job.cmd, status, str(job.result_code))
        counter = self._finished.get(key)
        if counter is None:
            counter = self._finished[key] = self._owner.jobs_finished.labels(self.name, *key)
        counter.inc()
        if duration is None:
            if job.created is None or job.completed is None:
                return
            duration = job.completed - job.created
        if duration < 0:  # clock trouble on the server: no honest duration to record
            return
        hkey = (job.cmd, status)
        histogram = self._durations.get(hkey)
        if histogram is None:
            histogram = self._durations[hkey] = self._owner.job_duration.labels(self.name, *hkey)
        # OpenMetrics shows each bucket's latest observation: the way from a slow bucket of a
        # heatmap to the job behind it. An exemplar's labels are limited to 128 characters.
        exemplar = {"job_id": job.job_id} if len(job.job_id) <= 100 else None
        histogram.observe(duration, exemplar=exemplar)

    def dropped(self, reason: str, n: int = 1) -> None:
        if reason not in self._dropped:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
        if n > 0:
            self._dropped[reason].inc(n)

    def malformed(self, n: int = 1) -> None:
        if n > 0:
            self._malformed.inc(n)

    def skipped(self, reason: str, n: int = 1) -> None:
        """Listed jobs left out on purpose (`reason`: e.g. pseudo, internal, filtered)."""
        if n <= 0:
            return
        counter = self._skipped.get(reason)
        if counter is None:
            counter = self._skipped[reason] = self._owner.jobs_skipped.labels(self.name, reason)
        counter.inc(n)

    def tracked(self, n: int) -> None:
        self._tracked.set(n)

    def _remove(self) -> None:
        owner, name = self._owner, self.name
        for metric in (owner.up, owner.poll_duration, owner.last_success, owner.tracked_jobs,
                       owner.malformed_jobs):  # fmt: skip
            _discard(metric, name)
        for reason in DROP_REASONS:
            _discard(owner.jobs_dropped, name, reason)
        for command, code in self._requests:
            _discard(owner.api_requests, name, command, code)
        for command in self._latency:
            _discard(owner.api_latency, name, command)
        for key in self._finished:
            _discard(owner.jobs_finished, name, *key)
        for hkey in self._durations:
            _discard(owner.job_duration, name, *hkey)
        for reason in self._skipped:
            _discard(owner.jobs_skipped, name, reason)
        self.remove_events()

    def remove_events(self) -> None:
        """Remove the event-stream series (a reload took `events` away from this cloud)."""
        if self._events is not None:
            self._events._remove()
            self._events = None
        for source in self._by_source:
            _discard(self._owner.finished_by_source, self.name, source)
        self._by_source = {}


class EventMetrics:
    """The event-stream series of one cloud."""

    def __init__(self, owner: ExporterMetrics, name: str) -> None:
        self._owner = owner
        self.name = name
        self._connected = owner.events_connected.labels(name)
        self._connected.set(0)
        self._received = {t: owner.events_received.labels(name, t) for t in EVENT_TYPES}
        self._malformed = owner.events_malformed.labels(name)
        self._gaps = owner.event_gaps.labels(name)
        self._last: Gauge | None = None  # bound on the first event, like the last poll

    def connected(self, up: bool) -> None:
        self._connected.set(1 if up else 0)

    def received(self, event_type: str, now: float) -> None:
        counter = self._received.get(event_type)
        if counter is not None:
            counter.inc()
        if self._last is None:
            self._last = self._owner.last_event.labels(self.name)
        self._last.set(now)

    def malformed(self) -> None:
        self._malformed.inc()

    def gaps(self, n: int = 1) -> None:
        if n > 0:
            self._gaps.inc(n)

    def _remove(self) -> None:
        owner, name = self._owner, self.name
        for metric in (owner.events_connected, owner.events_malformed, owner.event_gaps,
                       owner.last_event):  # fmt: skip
            _discard(metric, name)
        for event_type in EVENT_TYPES:
            _discard(owner.events_received, name, event_type)


def _discard(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(b) for b in buckets)
    if not values:
        raise ValueError("histogram buckets: at least one bucket is needed")
    if any(not math.isfinite(b) or b <= 0 for b in values):
        raise ValueError("histogram buckets: every bound must be a positive number")
    if any(a >= b for a, b in itertools.pairwise(values)):
        raise ValueError("histogram buckets: bounds must be strictly increasing")
    return values


class ExporterMetrics:
    """Owns the registry and every non-per-job metric."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS) -> None:
        self.buckets = _check_buckets(buckets)
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.up = Gauge(
            "cloudstack_up",
            "1 if the last poll of the CloudStack management server (listAsyncJobs and the "
            "queryAsyncJobResult calls of the cycle) succeeded, else 0.",
            ("cloud",),
            registry=reg,
        )
        self.api_requests = Counter(
            "cloudstack_api_requests",
            "CloudStack API calls by command and outcome: the HTTP/CloudStack status code "
            "(200, 401, 429, 431, 530, ...) or 'error' for transport failures and unreadable "
            "answers.",
            ("cloud", "command", "code"),
            registry=reg,
        )
        self.api_latency = Histogram(
            "cloudstack_api_request_duration_seconds",
            "Time a CloudStack API call took, from request to complete answer, retries after "
            "throttling included.",
            ("cloud", "command"),
            buckets=API_LATENCY_BUCKETS,
            registry=reg,
        )
        self.poll_duration = Gauge(
            "cloudstack_exporter_poll_duration_seconds",
            "Duration of the last poll cycle of the cloud: listing pending async jobs and "
            "querying the ones that left the list.",
            ("cloud",),
            registry=reg,
        )
        self.last_success = Gauge(
            "cloudstack_exporter_last_successful_poll_timestamp_seconds",
            "When the last successful poll cycle of the cloud ended, in Unix seconds.",
            ("cloud",),
            registry=reg,
        )
        self.tracked_jobs = Gauge(
            "cloudstack_exporter_tracked_jobs",
            "Async jobs the exporter currently tracks for the cloud: pending ones, and "
            "finished ones within their retention.",
            ("cloud",),
            registry=reg,
        )
        self.jobs_dropped = Counter(
            "cloudstack_exporter_jobs_dropped",
            "Async jobs the exporter stopped tracking or refused: 'retention' (finished longer "
            "ago than the retention), 'capacity' (the tracked-jobs cap), 'not_found' "
            "(CloudStack answered 431: the job was purged or never existed), 'forbidden' "
            "(531: another account's job, never visible with these credentials).",
            ("cloud", "reason"),
            registry=reg,
        )
        self.malformed_jobs = Counter(
            "cloudstack_exporter_malformed_jobs",
            "Async job entries from listAsyncJobs or queryAsyncJobResult that could not be "
            "read (missing jobid, unknown jobstatus, bad date...) and were skipped.",
            ("cloud",),
            registry=reg,
        )
        self.jobs_skipped = Counter(
            "cloudstack_exporter_jobs_skipped",
            "Listed async jobs left out on purpose, by reason: pseudo jobs without a cmd, "
            "internal VM work jobs, or jobs outside the configured command filter.",
            ("cloud", "reason"),
            registry=reg,
        )
        # A gauge, not an Info: the contract types it gauge in both exposition formats.
        self.build_info = Gauge(
            "cloudstack_exporter_build_info",
            "Version of the CloudStack job exporter and of the Python running it; always 1.",
            ("version", "python_version"),
            registry=reg,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.jobs_finished = Counter(
            "cloudstack_async_jobs_finished",
            "Async jobs seen to finish, by command, final state and jobresultcode; each job "
            "counts once, and only finishes new to the exporter count (not history it found "
            "at start-up).",
            ("cloud", "cmd", "status", "result_code"),
            registry=reg,
        )
        self.job_duration = Histogram(
            "cloudstack_async_job_duration_seconds",
            "Duration of finished async jobs (completed - created as CloudStack reports them), "
            "observed once per job, when the exporter first sees it finished.",
            ("cloud", "cmd", "status"),
            buckets=self.buckets,
            registry=reg,
        )
        self.finished_by_source = Counter(
            "cloudstack_exporter_jobs_finished_by_source",
            "How each finish counted in cloudstack_async_jobs_finished_total was learned: 'event' "
            "(an AsyncJobEvent complete), 'list' (listAsyncJobs showed it final already), "
            "'query' (queryAsyncJobResult of a job that left the pending list).",
            ("cloud", "source"),
            registry=reg,
        )
        self.events_connected = Gauge(
            "cloudstack_exporter_events_connected",
            "1 while the exporter is connected to the cloud's event bus (RabbitMQ) with its "
            "queue bound to the AsyncJobEvent messages, else 0.",
            ("cloud",),
            registry=reg,
        )
        self.events_received = Counter(
            "cloudstack_exporter_events_received",
            "AsyncJobEvent messages consumed from the cloud's event bus, by type (submit, "
            "update, complete, from the routing key).",
            ("cloud", "type"),
            registry=reg,
        )
        self.events_malformed = Counter(
            "cloudstack_exporter_events_malformed",
            "Event bus messages that could not be read as an AsyncJobEvent; rejected without "
            "requeue.",
            ("cloud",),
            registry=reg,
        )
        self.last_event = Gauge(
            "cloudstack_exporter_last_event_timestamp_seconds",
            "When the last AsyncJobEvent of the cloud was received, in Unix seconds.",
            ("cloud",),
            registry=reg,
        )
        self.event_gaps = Counter(
            "cloudstack_exporter_event_gaps",
            "Jobs that polling found pending although their AsyncJobEvent submit never "
            "arrived while the stream was connected: events were lost (jobs that start and "
            "end while events are lost cannot be counted).",
            ("cloud",),
            registry=reg,
        )
        self.config_reload_ok = Gauge(
            "cloudstack_exporter_config_last_reload_successful",
            "1 if the last load of the configuration file (at start or on SIGHUP) succeeded; "
            "0 if a reload was refused and the previous configuration still runs.",
            registry=reg,
        )
        self.config_reload_time = Gauge(
            "cloudstack_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in Unix seconds.",
            registry=reg,
        )
        self.state_write_failures = Counter(
            "cloudstack_exporter_state_write_failures",
            "Failed writes of the state file (the job table kept across restarts); the "
            "exporter keeps running and tries again after the next poll.",
            registry=reg,
        )
        self._without_created = _WithoutCreated(reg)
        self._clouds: dict[str, CloudMetrics] = {}
        self._lock = threading.Lock()

    def cloud(self, name: str) -> CloudMetrics:
        """The metrics of one cloud (the same object on every call with that name)."""
        with self._lock:
            metrics = self._clouds.get(name)
            if metrics is None:
                metrics = self._clouds[name] = CloudMetrics(self, name)
            return metrics

    def remove_cloud(self, name: str) -> None:
        """Remove every series of a cloud (a reload dropped it from the configuration)."""
        with self._lock:
            metrics = self._clouds.pop(name, None)
        if metrics is not None:
            metrics._remove()

    def config_loaded(self, ok: bool, now: float) -> None:
        self.config_reload_ok.set(1 if ok else 0)
        if ok:
            self.config_reload_time.set(now)

    def generate(self, summaries: Iterable[JobSummary] = (), openmetrics: bool = False) -> bytes:
        """The registry plus the aggregates of `summaries` (the trackers' at one snapshot) in
        the Prometheus text format (without `_created` series) or in OpenMetrics (with
        `# EOF`)."""
        families = aggregate_families(summaries)
        if openmetrics:
            return generate_openmetrics(_Exposition(self.registry, families))
        return generate_text(_Exposition(self._without_created, families))
