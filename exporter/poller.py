"""One polling loop per cloud: what CloudStack is asked, and when.

Per cycle: list pending jobs once (all pages); every listed job is updated from the list and
never queried on its own; only a tracked job that left the list, or a configured job the list
does not show, is queried with queryAsyncJobResult until it is final. Each cloud runs its own
task with its own client, so a slow cloud never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.errors import CloudStackError, JobNotFound, PermissionDenied
from exporter.jobs import MalformedJob, parse_job
from exporter.sources import CommandFilter, JobIdSource

if TYPE_CHECKING:
    from exporter.client import CloudStackClient
    from exporter.config import CloudConfig
    from exporter.selfmetrics import CloudMetrics
    from exporter.tracker import JobTracker

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0


@dataclass
class CycleResult:
    """What one poll cycle did; the poller logs from it and tests read it."""

    ok: bool = True
    listed: int = 0
    queried: int = 0
    malformed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # by reason
    not_found: int = 0
    error: CloudStackError | None = None
    errors: list[str] = field(default_factory=list)


class CloudPoller:
    def __init__(
        self,
        cloud: CloudConfig,
        client: CloudStackClient,
        tracker: JobTracker,
        metrics: CloudMetrics,
        *,
        on_cycle: Callable[[CloudPoller], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cloud = cloud
        self.client = client
        self.tracker = tracker
        self.metrics = metrics
        self._on_cycle = on_cycle
        self._clock = clock
        self._ids = JobIdSource(cloud.jobs, cloud.jobs_file, cloud=cloud.name)
        d = cloud.discovery
        self._filter = CommandFilter(d.include, d.exclude, include_internal=d.include_internal)
        self.cycles = 0  # completed cycles, successful or not: readiness reads it
        self.failures = 0  # consecutive failed cycles: drives the back-off
        self._last_problem = ""

    # -- one cycle ---------------------------------------------------------------------------

    async def poll_once(self) -> CycleResult:
        started = time.monotonic()
        result = CycleResult()
        configured = self._ids.ids()
        self.tracker.set_configured(configured)
        try:
            listed = await self._discover(configured, result)
            await self._query(self.tracker.to_query(listed), result)
        except CloudStackError as exc:
            result.ok = False
            result.error = exc
        now = self._clock()
        self.tracker.expire(now)
        if result.malformed:
            self.metrics.malformed(result.malformed)
        for reason, count in result.skipped.items():
            self.metrics.skipped(reason, count)
        self.metrics.tracked(self.tracker.size)
        self.metrics.poll_finished(result.ok, time.monotonic() - started, now)
        self.cycles += 1
        self.failures = 0 if result.ok else self.failures + 1
        self._log(result)
        self._on_cycle(self)
        return result

    async def _discover(self, configured: frozenset[str], result: CycleResult) -> set[str]:
        listed: set[str] = set()
        d = self.cloud.discovery
        if not d.enabled:
            return listed
        entries = await self.client.list_async_jobs(
            listall=d.listall,
            account=d.account,
            domain_id=d.domain_id,
            pagesize=self.cloud.page_size,
        )
        now = self._clock()
        for entry in entries:
            try:
                job = parse_job(entry)
            except MalformedJob as exc:
                result.malformed += 1
                job_id = entry.get("jobid") if isinstance(entry, dict) else None
                if isinstance(job_id, str):
                    # Still pending by the list's word: no reason to query it.
                    listed.add(job_id)
                if result.malformed == 1:
                    log.debug(
                        "skipping malformed job entry",
                        extra={"cloud": self.cloud.name, "problem": str(exc)},
                    )
                continue
            listed.add(job.job_id)
            reason = self._filter.rejection(job.cmd_class)
            if reason is None or job.job_id in configured:
                self.tracker.apply(job, now)
            else:
                result.skipped[reason] = result.skipped.get(reason, 0) + 1
        result.listed = len(listed)
        return listed

    async def _query(self, job_ids: Iterable[str], result: CycleResult) -> None:
        """Query jobs with a few workers; the first cloud-level failure stops the rest."""
        queue = list(job_ids)
        if not queue:
            return
        failure: list[CloudStackError] = []
        position = 0

        async def worker() -> None:
            nonlocal position
            while position < len(queue) and not failure:
                job_id = queue[position]
                position += 1
                try:
                    raw = await self.client.query_async_job_result(job_id)
                except JobNotFound:
                    result.not_found += 1
                    self.tracker.not_found(job_id)
                    continue
                except PermissionDenied:
                    # Another account's job: it will never become visible with these keys.
                    self.tracker.not_found(job_id, reason="forbidden")
                    result.errors.append(f"job {job_id}: permission denied")
                    continue
                except CloudStackError as exc:
                    failure.append(exc)
                    return
                result.queried += 1
                self._apply_queried(job_id, raw, result)

        workers = max(1, min(self.cloud.max_concurrency, len(queue)))
        await asyncio.gather(*(worker() for _ in range(workers)))
        if failure:
            raise failure[0]

    def _apply_queried(self, job_id: str, raw: dict[str, Any], result: CycleResult) -> None:
        try:
            job = parse_job(raw)
        except MalformedJob:
            result.malformed += 1
            return
        if job.job_id != job_id:
            # A server (or proxy) answering for another job must not corrupt this one.
            result.malformed += 1
            return
        self.tracker.apply(job, self._clock())

    def _log(self, result: CycleResult) -> None:
        """One line per distinct failure, one when it recovers; nothing per quiet cycle."""
        if result.ok:
            if self._last_problem:
                log.info("cloud recovered", extra={"cloud": self.cloud.name})
                self._last_problem = ""
            for problem in result.errors:
                log.warning(problem, extra={"cloud": self.cloud.name})
            return
        assert result.error is not None
        problem = describe(result.error)
        if problem != self._last_problem:
            log.error("poll failed: " + problem, extra={"cloud": self.cloud.name})
            self._last_problem = problem
        else:
            log.debug("poll failed again: " + problem, extra={"cloud": self.cloud.name})

    # -- the loop ----------------------------------------------------------------------------

    def next_delay(self, rng: random.Random | None = None) -> float:
        """Seconds to the next cycle after a failure: exponential, jittered, capped."""
        interval = self.cloud.poll_interval
        if self.failures == 0:
            return interval
        base = min(interval * 2 ** (self.failures - 1), max(interval, MAX_BACKOFF))
        return base * (rng or random).uniform(0.8, 1.2)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on a fixed schedule (start to start) until `stop` is set."""
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:  # a bug must not end the cloud's polling for good
                log.exception("poll cycle crashed", extra={"cloud": self.cloud.name})
                self.failures += 1
            if self.failures:
                next_start = loop.time() + self.next_delay()
            else:
                next_start += self.cloud.poll_interval
                if next_start < loop.time():  # overran: skip missed slots, don't burst
                    next_start = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_start - loop.time()))


def describe(error: CloudStackError) -> str:
    """A concise, secret-free description of a failure, stable across repeats."""
    parts = [error.__class__.__name__]
    if error.command:
        parts.append(error.command)
    if error.errorcode is not None:
        parts.append(str(error.errorcode))
    text = error.errortext or str(error)
    return " ".join(parts) + (f": {text[:200]}" if text else "")
