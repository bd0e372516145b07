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
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.errors import (
    CloudStackError,
    JobNotFound,
    LoginFailed,
    PermissionDenied,
    Throttled,
)
from exporter.jobs import Job, MalformedJob, fingerprint, parse_job
from exporter.sources import CommandFilter, JobIdSource

if TYPE_CHECKING:
    from exporter.client import CloudStackClient
    from exporter.config import CloudConfig
    from exporter.selfmetrics import CloudMetrics
    from exporter.tracker import JobTracker

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
# A job listed without its submit event is judged a gap this long after: the event may be
# on its way still (publishing takes well under a second, a consumer may lag a little).
GAP_GRACE = 5.0
_NUMBER = re.compile(r"\d+")


@dataclass
class CycleResult:
    """What one poll cycle did; the poller logs from it and tests read it."""

    ok: bool = True
    listed: int = 0
    queried: int = 0
    malformed: int = 0
    malformed_problem: str = ""  # the first malformed entry's problem, for the log
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
        self._last_problem = ""  # the failure last logged, "" while polls succeed
        self._last_malformed = ""  # the malformed-entry problem last logged
        self._not_before = 0.0  # monotonic time a 429 asked us to wait until
        # The last cycle as the jobs page and the landing page show it.
        self.last_ok: bool | None = None  # None until the first cycle ends
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_error = ""  # why the last cycle failed, in the log's words
        self._wake = asyncio.Event()  # set to poll now rather than at the next slot
        self._scope_accounts: frozenset[str] | None = None  # see _resolve_scope

    def poll_now(self) -> None:
        """Start a cycle as soon as the running one (if any) ends; the schedule restarts
        from there."""
        self._wake.set()

    def would_track(self, job_id: str, cmd_class: str, account_uuid: str) -> bool:
        """Whether discovery (or the configured IDs) would track this job, for a job that
        an event tells of: both sources must agree on what is tracked."""
        if self.tracker.is_configured(job_id):  # as of the last cycle: no file read per event
            return True
        d = self.cloud.discovery
        if not d.enabled or not d.listall:
            # listall: false lists the caller's own jobs; events name no caller. Left to polling.
            return False
        # Events name the account by UUID, the scope by name and domain: the UUIDs of the
        # scope's accounts come from listAccounts (see _resolve_scope). Until they are known,
        # such jobs are left to polling.
        scoped = d.account is not None or d.domain_id is not None
        if scoped and (self._scope_accounts is None or account_uuid not in self._scope_accounts):
            return False
        return self._filter.rejection(cmd_class) is None

    async def _resolve_scope(self) -> None:
        """The account UUIDs of an account or domain scope, for the events; once a cycle
        (one listAccounts call), so that a new account of the domain is in scope soon."""
        d = self.cloud.discovery
        if self.cloud.events is None or (d.account is None and d.domain_id is None):
            return
        try:
            self._scope_accounts = frozenset(
                await self.client.list_account_ids(account=d.account, domain_id=d.domain_id)
            )
        except CloudStackError as exc:  # the last known scope stays; the listing decides
            log.debug("listAccounts for the event scope failed: %s", describe(exc))

    # -- one cycle ---------------------------------------------------------------------------

    async def poll_once(self) -> CycleResult:
        started = time.monotonic()
        result = CycleResult()
        configured = self._ids.ids()
        self.tracker.set_configured(configured)
        try:
            await self._resolve_scope()
            listed = await self._discover(configured, result)
            await self._query(self.tracker.to_query(listed), result)
        except CloudStackError as exc:
            result.ok = False
            result.error = exc
        now = self._clock()
        self.tracker.expire(now)
        if self.cloud.events is not None:
            self.metrics.events().gaps(self.tracker.judge_gaps(now, GAP_GRACE))
        if result.malformed:
            self.metrics.malformed(result.malformed)
        for reason, count in result.skipped.items():
            self.metrics.skipped(reason, count)
        self.metrics.tracked(self.tracker.size)
        duration = time.monotonic() - started
        self.metrics.poll_finished(result.ok, duration, now)
        self.last_ok, self.last_duration = result.ok, duration
        if result.ok:
            if self.last_success is None:
                log.info(
                    "first successful poll",
                    extra={
                        "cloud": self.cloud.name,
                        "listed": result.listed,
                        "tracked": self.tracker.size,
                    },
                )
            self.last_success, self.last_error = now, ""
        elif result.error is not None:
            self.last_error = describe(result.error)
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
        started = self._clock()
        # Digested page by page (a page's objects die young), applied once every page came:
        # a listing that fails half-way changes nothing, as if it had been read whole.
        accepted: list[tuple[Job, int | None]] = []  # with the entry's fingerprint
        parsed: set[str] = set()  # IDs of the jobs in `accepted`
        skipped: dict[str, int] = {}
        malformed = 0
        problem = ""
        unchanged = self.tracker.listed_unchanged
        rejection = self._filter.rejection
        async for page in self.client.list_async_jobs_pages(
            listall=d.listall,
            account=d.account,
            domain_id=d.domain_id,
            pagesize=self.cloud.page_size,
        ):
            for entry in page:
                # Most listed jobs are tracked already and did not change: no parse for them.
                stamp = fingerprint(entry)
                job = unchanged(entry, stamp)
                fresh = job is None
                if job is None:
                    try:
                        job = parse_job(entry)
                    except MalformedJob as exc:
                        malformed += 1
                        problem = problem or str(exc)
                        job_id = entry.get("jobid") if isinstance(entry, dict) else None
                        if isinstance(job_id, str):
                            # Still pending by the list's word: no reason to query it.
                            listed.add(job_id)
                        continue
                listed.add(job.job_id)
                reason = rejection(job.cmd_class)
                if reason is None or job.job_id in configured:
                    # Applying the tracked Job itself changes nothing, so it is skipped;
                    # unless a view listed earlier (a page moved) changed it this cycle.
                    if fresh:
                        accepted.append((job, stamp))
                        parsed.add(job.job_id)
                    elif job.job_id in parsed:
                        accepted.append((job, stamp))
                else:
                    skipped[reason] = skipped.get(reason, 0) + 1
        result.malformed += malformed
        result.malformed_problem = result.malformed_problem or problem
        for reason, count in skipped.items():
            result.skipped[reason] = result.skipped.get(reason, 0) + count
        now = self._clock()
        for job, stamp in accepted:
            self.tracker.apply(job, now, stamp, source="list")
        self.tracker.listing_applied(started, listed)
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
                except LoginFailed as exc:
                    # The query needed a (re)login that was refused: the cloud is down.
                    failure.append(exc)
                    return
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

    async def query_for_event(self, job_id: str, live: bool) -> bool:
        """Query a job an event said is final but whose times the event cannot give; the
        answer ends it as a poll would, counted as learned from the event. False when the
        query failed (the next poll queries it then: it is tracked, or listed)."""
        try:
            raw = await self.client.query_async_job_result(job_id)
        except JobNotFound:
            self.tracker.not_found(job_id)
            return True
        except CloudStackError as exc:
            log.debug(
                "query after an event failed: %s", describe(exc), extra={"cloud": self.cloud.name}
            )
            return False
        result = CycleResult()
        self._apply_queried(job_id, raw, result, source="event", new_finish=live)
        if result.malformed:
            self.metrics.malformed(result.malformed)
        return not result.malformed

    def _apply_queried(
        self,
        job_id: str,
        raw: dict[str, Any],
        result: CycleResult,
        source: str = "query",
        new_finish: bool = False,
    ) -> None:
        try:
            job = parse_job(raw)
        except MalformedJob as exc:
            result.malformed += 1
            result.malformed_problem = result.malformed_problem or str(exc)
            return
        if job.job_id != job_id:
            # A server (or proxy) answering for another job must not corrupt this one.
            result.malformed += 1
            result.malformed_problem = result.malformed_problem or "answer for another job"
            return
        self.tracker.apply(job, self._clock(), source=source, new_finish=new_finish)

    def _log(self, result: CycleResult) -> None:
        """One line per distinct failure, one when it recovers; nothing per quiet cycle."""
        self._log_malformed(result)
        if result.ok:
            self._not_before = 0.0
            if self._last_problem:
                log.info("cloud recovered", extra={"cloud": self.cloud.name})
                self._last_problem = ""
            for problem in result.errors:
                log.warning(problem, extra={"cloud": self.cloud.name})
            return
        assert result.error is not None
        self._not_before = 0.0
        if isinstance(result.error, Throttled):
            self._not_before = time.monotonic() + result.error.retry_after
        error = result.error
        line = "poll failed: " + describe(error)
        self._log_failure(line, f"{type(error).__name__} {error.command} {error.code}")

    def _log_failure(self, line: str, kind: str = "", crashed: bool = False) -> None:
        # Counts, byte sizes and waits in the text differ from one repeat to the next; the
        # failure (its type, command and status code: `kind`) does not.
        key = kind + " " + _NUMBER.sub("N", line)
        if key != self._last_problem:
            log.error(line, exc_info=crashed, extra={"cloud": self.cloud.name})
            self._last_problem = key
        else:
            log.debug(line, extra={"cloud": self.cloud.name})

    def _log_malformed(self, result: CycleResult) -> None:
        if not result.malformed:
            if self._last_malformed and result.ok:
                log.info("no more malformed job entries", extra={"cloud": self.cloud.name})
                self._last_malformed = ""
            return
        key = _NUMBER.sub("N", result.malformed_problem)
        if key != self._last_malformed:
            log.warning(
                "skipping malformed job entries (counted in "
                f"cloudstack_exporter_malformed_jobs_total): {result.malformed_problem[:200]}",
                extra={"cloud": self.cloud.name, "entries": result.malformed},
            )
            self._last_malformed = key

    # -- the loop ----------------------------------------------------------------------------

    def next_delay(self, rng: random.Random | None = None) -> float:
        """Seconds to the next cycle after a failure: exponential, jittered, capped."""
        interval = self.cloud.poll_interval
        if self.failures == 0:
            return interval
        base = min(interval * 2 ** (self.failures - 1), max(interval, MAX_BACKOFF))
        delay = base * (rng or random).uniform(0.8, 1.2)
        # A server that named its wait (429 "retry after N ms") is not asked sooner.
        return max(delay, self._not_before - time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on a fixed schedule (start to start) until `stop` is set."""
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # a bug must not end the cloud's polling for good
                self._crashed(exc)
            if self.failures:
                next_start = loop.time() + self.next_delay()
            else:
                next_start += self.cloud.poll_interval
                if next_start < loop.time():  # overran: skip missed slots, don't burst
                    next_start = loop.time()
            if await self._sleep(stop, max(0.0, next_start - loop.time())):
                next_start = loop.time()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> bool:
        """Wait until the next slot, `stop`, or `poll_now`; True if woken by `poll_now`."""
        if not self._wake.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            waking = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {stopping, waking}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                waking.cancel()
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def _crashed(self, exc: Exception) -> None:
        """A cycle that raised (a bug) counts as a failed poll: `cloudstack_up` shows 0,
        readiness is not held back, and the back-off applies."""
        self._log_failure(f"poll cycle crashed: {type(exc).__name__}", crashed=True)
        self.failures += 1
        self.cycles += 1
        self.last_ok, self.last_error = False, f"poll cycle crashed: {type(exc).__name__}"
        with contextlib.suppress(Exception):  # logged above; the loop must go on
            self.metrics.poll_finished(False, 0.0, self._clock())
            self._on_cycle(self)


def describe(error: CloudStackError) -> str:
    """A concise, secret-free description of a failure: the client's message says what was
    asked, what came back and, where it helps, what to check."""
    text = str(error) or error.errortext or "no detail"
    return f"{error.__class__.__name__}: {text[:300]}"
