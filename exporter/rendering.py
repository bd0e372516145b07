"""Turns the trackers and the registry into the `/metrics` bytes, once per change.

A scrape never walks the job table: `render()` (after a poll) builds the body and `body()`
hands out cached bytes. The per-job families are written by hand from pre-escaped label parts each
tracked job points to: at 100,000 jobs prometheus_client would build, sort and
escape a label dict for every sample of every scrape, which costs far more than the scrape
itself may. The body is held compressed, in pieces, and the pieces of jobs that did not
change are reused from the last render (see the sections below). The registry part
(health, API calls, aggregates, histograms) is small and comes from prometheus_client's own
exposition functions.

Threading: `snapshot()` must run on the event loop (it copies references and exposes the small
registry, so both parts of a body come from one moment);
`build(snapshot)` only reads immutable data and may run in a thread executor, and installing
the result is a single reference swap. `render_async()` does exactly that, so a render at
100,000 jobs does not stall the loop; `render()` does it all in the calling thread.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.labels import escape_label_value
from exporter.selfmetrics import ExporterMetrics

if TYPE_CHECKING:
    from exporter.tracker import JobTracker, TrackedJob, TrackerView

    codec = zlib
else:
    try:
        # Intel ISA-L's deflate: the same format, and at level 1 about five times faster
        # than zlib on these lines (12 against 64 ms for the ages of 100,000 jobs, which
        # are compressed at every render), and smaller. zlib where it has no wheel.
        from isal import isal_zlib as codec
    except ImportError:
        codec = zlib

# The two formats this module writes: media type and version each defined here only (the web
# layer negotiates with the same names and versions).
TEXT_MEDIA_TYPE, TEXT_VERSION = "text/plain", "0.0.4"
OPENMETRICS_MEDIA_TYPE, OPENMETRICS_VERSION = "application/openmetrics-text", "1.0.0"
CONTENT_TYPE_TEXT = f"{TEXT_MEDIA_TYPE}; version={TEXT_VERSION}; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = f"{OPENMETRICS_MEDIA_TYPE}; version={OPENMETRICS_VERSION}; charset=utf-8"

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
        "result type, the errortext of a failure (cut to 256 characters), the object a "
        "success returned (jobresult), and, from newer servers, the account name, domain and "
        "the management server running the job (once it finished, the one last seen running "
        "it).",
    ),
)


def escape_help(text: str) -> str:
    """HELP text for the Prometheus text format (backslash and newline)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _num(value: float) -> str:
    # Whole seconds print as integers; %.17g keeps any fraction exact.
    return f"{value:.17g}"


def _family_lines(index: int, name: str, jobs: Sequence[TrackedJob], labels: Sequence[str]) -> str:
    """The sample lines of one per-job family but the ages (see _age_template) for some
    jobs of one cloud; `labels` are the jobs' `TrackedJob.labels`, made once for every
    family."""
    pairs = zip(labels, jobs, strict=True)
    if index == 0:
        return "".join([f"{name}{{{lb}}} {t.job.status:d}\n" for lb, t in pairs])
    if index == 1:
        return "".join([f"{name}{{{lb}}} {t.job.result_code:d}\n" for lb, t in pairs])
    if index == 3:
        return "".join(
            [
                f"{name}{{{lb}}} {_num(t.job.created)}\n"
                for lb, t in pairs
                if t.job.created is not None
            ]
        )
    if index == 4:
        return "".join(
            [
                f"{name}{{{lb}}} {_num(t.job.completed)}\n"
                for lb, t in pairs
                if t.job.completed is not None
            ]
        )
    if index == 5:
        return "".join([f"{name}{{{lb}}} {t.job.proc_status:d}\n" for lb, t in pairs])
    return "".join([f"{name}{{{lb}{t.info_labels}}} 1\n" for lb, t in pairs])


def _labels(jobs: Sequence[TrackedJob]) -> list[str]:
    e = escape_label_value
    return [t.head + e(t.job.job_id) + t.tail for t in jobs]


def _age_template(
    jobs: Sequence[TrackedJob], labels: Sequence[str]
) -> tuple[bytes, tuple[float, ...]]:
    """The age lines of some jobs as a %-template with a `%.3f` for each age, and the
    creation times that fill it. Ages are the only lines redrawn at every render: filling a
    template made once per segment is a single C call instead of a line-by-line format."""
    name = PER_JOB_FAMILIES[AGE][0]
    pairs = [(lb, t.job.created) for lb, t in zip(labels, jobs, strict=True)]
    text = "".join(
        [f"{name}{{{lb.replace('%', '%%')}}} %.3f\n" for lb, c in pairs if c is not None]
    )
    return text.encode("utf-8"), tuple([c for _, c in pairs if c is not None])


def _age_lines(segment: _Segment, now: float) -> bytes:
    return segment.ages % tuple([now - created for created in segment.created])


# --- compressed pieces -------------------------------------------------------------------
#
# The body is kept as pieces of raw deflate, each ended by a sync flush and none final, so
# that pieces compressed on their own concatenate into one valid deflate stream: the gzip
# variants are a header, the pieces, an empty final block and a trailer, with no
# recompression; the plain variants are inflated from them when asked for. At 100,000 jobs
# this keeps about 4 MB in memory instead of a 110 MB text body.


@dataclass(frozen=True, slots=True)
class Piece:
    data: bytes  # raw deflate, sync-flushed, not final
    crc: int  # CRC-32 of the text
    size: int  # length of the text


def deflate(text: bytes) -> Piece:
    compressor = codec.compressobj(GZIP_LEVEL, codec.DEFLATED, -15)
    data = compressor.compress(text) + compressor.flush(codec.Z_SYNC_FLUSH)
    return Piece(data, zlib.crc32(text), len(text))


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS
_FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed codes
_zeros = bytes(1 << 16)
_EOF_PIECE = deflate(_EOF)


def crc_combine(crc1: int, crc2: int, size2: int) -> int:
    """CRC-32 of A+B from those of A and B (B of size2 bytes). CRC-32 is affine in its start
    value, so shifting crc1 through size2 zero bytes and cancelling the zeros' own CRC does
    it; zlib's crc32_combine is not exposed to Python."""
    global _zeros
    if len(_zeros) < size2:
        _zeros = bytes(size2)  # a module-wide scratch buffer; replacing it is thread-safe
    zeros = memoryview(_zeros)[:size2]
    return zlib.crc32(zeros, crc1) ^ zlib.crc32(zeros) ^ crc2


def gzip_pieces(pieces: Iterable[Piece]) -> bytes:
    out = [_GZIP_HEADER]
    crc = size = 0
    for piece in pieces:
        if piece.size:
            out.append(piece.data)
            crc = crc_combine(crc, piece.crc, piece.size)
            size += piece.size
    out.append(_FINAL_BLOCK)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


def inflate_pieces(pieces: Iterable[Piece]) -> bytes:
    """The text of the pieces, whole. Only for callers that need one bytes object: a scrape
    streams them through `inflate_chunks` instead."""
    return b"".join(inflate_chunks(pieces))


# The largest slice of text one `inflate_chunks` step holds: a scrape keeps this much per
# connection instead of the whole uncompressed body (125 MB at 100,000 jobs).
INFLATE_SLICE = 1 << 20


def inflate_chunks(pieces: Iterable[Piece], limit: int | None = None) -> Iterator[bytes]:
    """The text of the pieces, in slices of at most `limit` bytes (INFLATE_SLICE). Each piece
    was compressed by a compressor of its own, so it inflates on its own too."""
    limit = limit or INFLATE_SLICE
    # Pieces are small (a segment of one family, about 100 KB of text): joined into slices,
    # a plain scrape at 100,000 jobs is about 120 writes instead of 1,500, each a thread hop
    # and a drain.
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        if not piece.size:
            continue
        inflater = codec.decompressobj(-15)
        data = piece.data
        while True:
            chunk = inflater.decompress(data, limit - size)
            data = inflater.unconsumed_tail
            if chunk:
                held.append(chunk)
                size += len(chunk)
                if size >= limit:
                    yield held[0] if len(held) == 1 else b"".join(held)
                    held, size = [], 0
            elif not data:
                # All input taken and nothing more out: output may still be pending while
                # the input is used up, so stopping at empty input would lose text.
                break
    if held:
        yield b"".join(held)


@dataclass(frozen=True, slots=True)
class Body:
    """One variant of one render, ready to be written: its length is known before the first
    byte (Content-Length) and `chunks()` produces the same bytes every time it is called."""

    length: int
    _whole: bytes | None  # a gzip variant, cached whole (a few MB)
    _pieces: tuple[Piece, ...]  # or the pieces a plain variant is inflated from

    def chunks(self) -> Iterator[bytes]:
        if self._whole is not None:
            view = memoryview(self._whole)
            for start in range(0, len(view), INFLATE_SLICE):
                yield bytes(view[start : start + INFLATE_SLICE])
        else:
            yield from inflate_chunks(self._pieces)


# --- per-job pieces, cached by segment ---------------------------------------------------
#
# A render at 100,000 jobs mostly repeats the last one: only ages move. The jobs of a cloud
# are cut into segments where a job ID's hash has its low bits clear (content-defined, so
# a job arriving or leaving changes one segment, not every later one), and the compressed
# lines of a segment are reused while its TrackedJob records are the same objects (a change
# replaces a record). Ages depend on the poll time and are rendered every time.

AGE = 2
SEGMENT_MASK = 511  # about 512 jobs a segment


@dataclass(frozen=True, slots=True)
class _Segment:
    jobs: tuple[TrackedJob, ...]
    pieces: tuple[Piece, ...]  # one per family; the age piece is not reused
    ages: bytes  # the age lines, a template (see _age_template)
    created: tuple[float, ...]  # what fills it, less the poll time


def _segments(jobs: Sequence[TrackedJob]) -> list[tuple[TrackedJob, ...]]:
    out = []
    start = 0
    for i, tracked in enumerate(jobs):
        if not hash(tracked.job.job_id) & SEGMENT_MASK:
            out.append(tuple(jobs[start : i + 1]))
            start = i + 1
    if start < len(jobs):
        out.append(tuple(jobs[start:]))
    return out


_HEADERS = tuple(
    deflate(f"# HELP {name} {escape_help(help_text)}\n# TYPE {name} gauge\n".encode())
    for name, help_text in PER_JOB_FAMILIES
)


class _SegmentCache:
    """The compressed per-job lines of the last render, by (cloud, first job ID)."""

    def __init__(self) -> None:
        self._segments: dict[tuple[str, str], _Segment] = {}
        self._lock = threading.Lock()

    def render(self, views: Iterable[TrackerView]) -> list[Piece]:
        """Every per-job family over all clouds, in output order, valid in both formats."""
        with self._lock:
            families: list[list[Piece]] = [[header] for header in _HEADERS]
            fresh: dict[tuple[str, str], _Segment] = {}
            for view in views:
                for jobs in _segments(view.jobs):
                    key = (view.cloud, jobs[0].job.job_id)
                    segment = self._segments.get(key)
                    if segment is None or segment.jobs != jobs:
                        segment = _render_segment(jobs)
                    elif segment.jobs is not jobs:
                        # Equal records may be new objects (a fingerprint moved): keep the
                        # current ones, so that replaced records are not held on to.
                        segment = _Segment(jobs, segment.pieces, segment.ages, segment.created)
                    fresh[key] = segment
                    for index, piece in enumerate(segment.pieces):
                        if index == AGE:
                            piece = deflate(_age_lines(segment, view.now))
                        families[index].append(piece)
            self._segments = fresh
            return [piece for family in families for piece in family]


def _render_segment(jobs: tuple[TrackedJob, ...]) -> _Segment:
    empty = Piece(b"", 0, 0)
    labels = _labels(jobs)
    pieces = tuple(
        empty if index == AGE else deflate(_family_lines(index, name, jobs, labels).encode("utf-8"))
        for index, (name, _) in enumerate(PER_JOB_FAMILIES)
    )
    return _Segment(jobs, pieces, *_age_template(jobs, labels))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a render needs, taken at one moment on the event loop: the trackers' views and
    the registry's exposition in both formats (its counters and the aggregates of these
    views), so that a body never shows a job finished in one part and pending in another."""

    views: list[TrackerView]
    registry_text: bytes
    registry_om: bytes
    per_job_series: bool
    sequence: int


class Rendered:
    """One render's output, as compressed pieces. The gzip variants (text or OpenMetrics) are
    made on first request and cached until the next render; the plain ones are inflated
    from the pieces while they are written (`body`), so no uncompressed body is kept."""

    def __init__(
        self,
        registry_text: bytes,
        registry_om: bytes,
        per_job: list[Piece],
        views: Sequence[TrackerView] = (),
    ) -> None:
        # The tracker views this was rendered from: /jobs shows the same jobs as /metrics.
        self.views = views
        # OpenMetrics = its own registry part + the same per-job pieces + "# EOF".
        self._text = (deflate(registry_text), *per_job)
        self._om = (deflate(registry_om.removesuffix(_EOF)), *per_job, _EOF_PIECE)
        self._cache: dict[bool, bytes] = {}
        self._lock = threading.Lock()

    def _gzip(self, openmetrics: bool) -> bytes:
        body = self._cache.get(openmetrics)
        if body is not None:
            return body
        with self._lock:
            body = self._cache.get(openmetrics)
            if body is None:
                body = gzip_pieces(self._om if openmetrics else self._text)
                self._cache[openmetrics] = body
            return body

    def body(self, openmetrics: bool, gzip: bool) -> Body:
        """A variant to stream; cheap for plain variants, gzip is built once per render."""
        if gzip:
            whole = self._gzip(openmetrics)
            return Body(len(whole), whole, ())
        pieces = self._om if openmetrics else self._text
        return Body(sum(p.size for p in pieces), None, pieces)

    def variant(self, openmetrics: bool, gzip: bool) -> bytes:
        """A variant as one bytes object. Plain variants are inflated anew at every call and
        not cached: a scrape streams them through `body()` instead."""
        if gzip:
            return self._gzip(openmetrics)
        return b"".join(self.body(openmetrics, gzip).chunks())


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
        self._segments = _SegmentCache()
        # Variants asked for since the last render are prepared by the next render, off the
        # loop; only the first request for a variant pays for it inline.
        self._wanted: set[tuple[bool, bool]] = set()

    # --- the loop side --------------------------------------------------------------------

    def trackers(self) -> Mapping[str, JobTracker]:
        source = self._trackers
        return source() if callable(source) else source

    def changed(self) -> bool:
        """True when a render would produce something new for the job table."""
        return self._current is None or any(t.changed for t in self.trackers().values())

    def snapshot(self) -> Snapshot:
        """Must run where the trackers and the registry are fed (the event loop). Copies
        references and exposes the registry (small: health, API calls, aggregates and
        histograms, a few milliseconds); the per-job series are left to `build`."""
        views = []
        for tracker in self.trackers().values():
            views.append(tracker.view())
            tracker.changed = False
        summaries = [view.summary() for view in views]
        return Snapshot(
            views,
            self.metrics.generate(summaries, openmetrics=False),
            self.metrics.generate(summaries, openmetrics=True),
            self.per_job_series,
            next(self._sequence),
        )

    def render(self) -> None:
        """Rebuild the bodies in the calling thread."""
        self._install(self.build(self.snapshot()))

    async def render_async(self) -> None:
        """Rebuild the bodies in a worker thread; the loop only takes the snapshot."""
        snapshot = self.snapshot()
        built = await asyncio.to_thread(self.build, snapshot)
        self._install(built)

    def body(self, openmetrics: bool = False, gzip: bool = False) -> bytes:
        """The `/metrics` body as one bytes object (gzip cached, plain inflated anew);
        renders first if nothing was rendered yet."""
        current = self._current
        if current is None:
            self.render()
            current = self._current
            assert current is not None
        if gzip:
            # Plain variants are not cached: preparing one in the next render would be lost.
            self._wanted.add((openmetrics, gzip))
        return current.variant(openmetrics, gzip)

    def stream(self, openmetrics: bool = False, gzip: bool = False) -> Body:
        """The current variant to write out in slices; a render installed meanwhile does not
        change it. Only gzip variants are prepared by the next render: a plain one costs
        nothing until it is written."""
        current = self._current
        if current is None:
            self.render()
            current = self._current
            assert current is not None
        if gzip:
            self._wanted.add((openmetrics, gzip))
        return current.body(openmetrics, gzip)

    def rendered_views(self) -> Sequence[TrackerView]:
        """The tracker views of the installed render (empty before the first)."""
        current = self._current
        return current.views if current is not None else ()

    # --- the thread side ------------------------------------------------------------------

    def build(self, snapshot: Snapshot) -> tuple[int, Rendered]:
        """Everything expensive; reads only the snapshot."""
        per_job = self._segments.render(snapshot.views) if snapshot.per_job_series else []
        rendered = Rendered(snapshot.registry_text, snapshot.registry_om, per_job, snapshot.views)
        for openmetrics, gzip in list(self._wanted):
            rendered.variant(openmetrics, gzip)
        return snapshot.sequence, rendered

    def _install(self, built: tuple[int, Rendered]) -> None:
        sequence, rendered = built
        with self._install_lock:
            # A slow older build finishing after a newer one must not replace it.
            if sequence > self._installed_sequence:
                self._installed_sequence = sequence
                self._current = rendered
                self._wanted = set()
