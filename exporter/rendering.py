"""Turns the trackers and the registry into the `/metrics` bytes, once per change.

A scrape never walks the job table: `render()` (after a poll) builds the body and `body()`
hands out cached bytes. The per-job families are written by hand from label strings each
tracked job carries pre-escaped: at 100,000 jobs prometheus_client would build, sort and
escape a label dict for every sample of every scrape, which costs far more than the scrape
itself may. The registry part (health, API calls, aggregates, histograms) is small and comes
from prometheus_client's own exposition functions.

Threading: `snapshot()` must run on the event loop (it copies references, which is cheap);
`build(snapshot)` only reads immutable data and may run in a thread executor, and installing
the result is a single reference swap. `render_async()` does exactly that, so a render at
100,000 jobs does not stall the loop; `render()` does it all in the calling thread.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.selfmetrics import ExporterMetrics, JobSummary

if TYPE_CHECKING:
    from exporter.jobs import Job
    from exporter.tracker import JobTracker, TrackerView

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Speed over size: the text is so repetitive that level 1 already shrinks it about tenfold,
# and a body of 100 MB must compress within a poll interval.
GZIP_LEVEL = 1

_EOF = b"# EOF\n"

# (name, HELP) of the per-job families, in output order.
PER_JOB_FAMILIES: tuple[tuple[str, str], ...] = (
    (
        "cloudstack_async_job_status",
        "State of the async job as CloudStack reports it (jobstatus): 0 pending, "
        "1 succeeded, 2 failed, 3 cancelled.",
    ),
    (
        "cloudstack_async_job_result_code",
        "jobresultcode of the async job: 0 while pending or on success, the CloudStack "
        "error code on failure (e.g. 530 internal error, 533 insufficient capacity).",
    ),
    (
        "cloudstack_async_job_age_seconds",
        "Seconds since CloudStack created the async job, as of the exporter's last poll.",
    ),
    (
        "cloudstack_async_job_created_timestamp_seconds",
        "When CloudStack created the async job (created), in Unix seconds.",
    ),
    (
        "cloudstack_async_job_completed_timestamp_seconds",
        "When the async job finished (completed), in Unix seconds; only for finished jobs.",
    ),
    (
        "cloudstack_async_job_proc_status",
        "jobprocstatus of the async job: the progress information CloudStack reports while "
        "the job runs.",
    ),
    (
        "cloudstack_async_job_info",
        "Identity of the async job, always 1: command class, instance, account and user IDs, "
        "result type, and the errortext of a failure (cut to 256 characters).",
    ),
)


def escape_label_value(value: str) -> str:
    """A label value for both text formats: backslash, double quote and newline escaped.

    Text that cannot be UTF-8 (lone surrogates from a JSON `\\ud800`) is replaced rather
    than left to fail the whole scrape at encoding time.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """HELP text for the Prometheus text format (backslash and newline)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def job_label_strings(cloud: str, job: Job) -> tuple[str, str]:
    """The pre-escaped label strings of one job: (labels shared by every per-job family,
    the extra labels of cloudstack_async_job_info starting with a comma)."""
    e = escape_label_value
    labels = (
        f'cloud="{e(cloud)}",job_id="{e(job.job_id)}",cmd="{e(job.cmd)}",'
        f'instance_type="{e(job.instance_type)}"'
    )
    info = (
        f',cmd_class="{e(job.cmd_class)}",instance_id="{e(job.instance_id)}",'
        f'account_id="{e(job.account_id)}",user_id="{e(job.user_id)}",'
        f'result_type="{e(job.result_type)}",error="{e(job.error)}"'
    )
    return labels, info


def _num(value: float) -> str:
    # Whole seconds print as integers; %.17g keeps any fraction exact.
    return f"{value:.17g}"


def _family_lines(index: int, name: str, views: Iterable[TrackerView]) -> str:
    """Every sample line of one per-job family over all clouds (contiguous by design)."""
    out: list[str] = []
    add = out.extend
    for view in views:
        jobs = view.jobs
        if index == 0:
            add([f"{name}{{{t.labels}}} {t.job.status:d}\n" for t in jobs])
        elif index == 1:
            add([f"{name}{{{t.labels}}} {t.job.result_code:d}\n" for t in jobs])
        elif index == 2:
            now = view.now
            add(
                [
                    f"{name}{{{t.labels}}} {now - t.job.created:.3f}\n"
                    for t in jobs
                    if t.job.created is not None
                ]
            )
        elif index == 3:
            add(
                [
                    f"{name}{{{t.labels}}} {_num(t.job.created)}\n"
                    for t in jobs
                    if t.job.created is not None
                ]
            )
        elif index == 4:
            add(
                [
                    f"{name}{{{t.labels}}} {_num(t.job.completed)}\n"
                    for t in jobs
                    if t.job.completed is not None
                ]
            )
        elif index == 5:
            add([f"{name}{{{t.labels}}} {t.job.proc_status:d}\n" for t in jobs])
        else:
            add([f"{name}{{{t.labels}{t.info_labels}}} 1\n" for t in jobs])
    return "".join(out)


def render_per_job(views: Iterable[TrackerView]) -> list[bytes]:
    """The per-job families for a set of trackers, valid in both text formats, one bytes
    object per family (joined once, into the final body, to avoid another full copy)."""
    views = list(views)
    parts: list[bytes] = []
    for index, (name, help_text) in enumerate(PER_JOB_FAMILIES):
        header = f"# HELP {name} {escape_help(help_text)}\n# TYPE {name} gauge\n"
        # Encoding one family at a time keeps the transient copy small.
        parts.append((header + _family_lines(index, name, views)).encode("utf-8"))
    return parts


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a render needs, taken on the event loop."""

    views: list[TrackerView]
    per_job_series: bool
    sequence: int


class Rendered:
    """One render's output. The text body is built eagerly; the OpenMetrics body and the
    gzip variants are made on first request and cached until the next render."""

    def __init__(self, text: bytes, registry_text_len: int, registry_om: bytes) -> None:
        self.text = text
        self._registry_text_len = registry_text_len
        # OpenMetrics = its own registry part + the per-job part of the text body + "# EOF".
        # The per-job part is shared by slicing, so the big per-job bytes exist once.
        self._registry_om = registry_om.removesuffix(_EOF)
        self._cache: dict[tuple[bool, bool], bytes] = {(False, False): text}
        self._lock = threading.Lock()

    def _om_pieces(self) -> list[bytes | memoryview]:
        per_job = memoryview(self.text)[self._registry_text_len :]
        return [self._registry_om, per_job, _EOF]

    def variant(self, openmetrics: bool, gzip: bool) -> bytes:
        key = (openmetrics, gzip)
        body = self._cache.get(key)
        if body is not None:
            return body
        with self._lock:
            body = self._cache.get(key)
            if body is None:
                pieces: list[bytes | memoryview] = self._om_pieces() if openmetrics else [self.text]
                if gzip:
                    # wbits 31: a gzip member, streamed over the pieces without joining them.
                    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                    out = [compressor.compress(p) for p in pieces]
                    out.append(compressor.flush())
                    body = b"".join(out)
                else:
                    body = b"".join(pieces)
                self._cache[key] = body
            return body


TrackerSource = Callable[[], Mapping[str, "JobTracker"]] | Mapping[str, "JobTracker"]


class Renderer:
    """Builds and caches the `/metrics` bodies."""

    def __init__(
        self,
        metrics: ExporterMetrics,
        trackers: TrackerSource,
        per_job_series: bool = True,
    ) -> None:
        self.metrics = metrics
        self._trackers = trackers
        self.per_job_series = per_job_series
        self._sequence = itertools.count(1)
        self._installed_sequence = 0
        self._current: Rendered | None = None
        self._install_lock = threading.Lock()
        self._pinned = threading.local()
        # Variants asked for since the last render are prepared by the next render, off the
        # loop; only the first request for a variant pays for it inline.
        self._wanted: set[tuple[bool, bool]] = set()
        metrics.set_job_source(self._summaries)

    # --- the loop side --------------------------------------------------------------------

    def trackers(self) -> Mapping[str, JobTracker]:
        source = self._trackers
        return source() if callable(source) else source

    def changed(self) -> bool:
        """True when a render would produce something new for the job table."""
        return self._current is None or any(t.changed for t in self.trackers().values())

    def snapshot(self) -> Snapshot:
        """Must run where the trackers are fed (the event loop); cheap."""
        views = []
        for tracker in self.trackers().values():
            views.append(tracker.view())
            tracker.changed = False
        return Snapshot(views, self.per_job_series, next(self._sequence))

    def render(self) -> None:
        """Rebuild the bodies in the calling thread."""
        self._install(self.build(self.snapshot()))

    async def render_async(self) -> None:
        """Rebuild the bodies in a worker thread; the loop only takes the snapshot."""
        snapshot = self.snapshot()
        built = await asyncio.to_thread(self.build, snapshot)
        self._install(built)

    def body(self, openmetrics: bool = False, gzip: bool = False) -> bytes:
        """The cached `/metrics` body; renders first if nothing was rendered yet."""
        current = self._current
        if current is None:
            self.render()
            current = self._current
            assert current is not None
        self._wanted.add((openmetrics, gzip))
        return current.variant(openmetrics, gzip)

    @staticmethod
    def content_type(openmetrics: bool) -> str:
        return CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT

    # --- the thread side ------------------------------------------------------------------

    def build(self, snapshot: Snapshot) -> tuple[int, Rendered]:
        """Everything expensive; reads only the snapshot and the thread-safe registry."""
        self._pinned.summaries = [view.summary() for view in snapshot.views]
        try:
            registry_text = self.metrics.generate(openmetrics=False)
            registry_om = self.metrics.generate(openmetrics=True)
        finally:
            self._pinned.summaries = None
        per_job = render_per_job(snapshot.views) if snapshot.per_job_series else []
        rendered = Rendered(b"".join([registry_text, *per_job]), len(registry_text), registry_om)
        for openmetrics, gzip in list(self._wanted):
            rendered.variant(openmetrics, gzip)
        return snapshot.sequence, rendered

    def _summaries(self) -> Iterable[JobSummary]:
        pinned = getattr(self._pinned, "summaries", None)
        if pinned is not None:
            return list(pinned)
        # Outside a build (someone collecting the registry directly): the live trackers.
        return [tracker.summary() for tracker in self.trackers().values()]

    def _install(self, built: tuple[int, Rendered]) -> None:
        sequence, rendered = built
        with self._install_lock:
            # A slow older build finishing after a newer one must not replace it.
            if sequence > self._installed_sequence:
                self._installed_sequence = sequence
                self._current = rendered
                self._wanted = set()
