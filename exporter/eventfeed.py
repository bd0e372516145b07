"""One cloud's event stream applied to its job table: the listener of `EventStream`.

The stream (eventstream.py) is the transport; this is what an event means here. An event of
a job outside the cloud's discovery scope is ignored, so that both sources agree on what is
tracked. A `complete` whose times the events cannot give is followed by one
queryAsyncJobResult. Every (re)connect asks for a full poll: polling stays the source of
truth for the pending set. Every applied event asks for a render, which the daemon debounces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.events import JobEvent

if TYPE_CHECKING:
    from exporter.poller import CloudPoller
    from exporter.selfmetrics import EventMetrics
    from exporter.tracker import JobTracker

log = logging.getLogger(__name__)

# Queries after events run beside the polls; the client's own concurrency limit applies too.
_MAX_QUERIES = 4


class EventFeed:
    def __init__(
        self,
        poller: CloudPoller,
        tracker: JobTracker,
        metrics: EventMetrics,
        *,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.poller = poller
        self.tracker = tracker
        self.metrics = metrics
        self.on_change = on_change
        self.clock = clock
        self.cloud = poller.cloud.name
        self._querying: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(_MAX_QUERIES)
        self._last_malformed = ""

    # -- StreamListener ----------------------------------------------------------------------

    def connected(self, backlog: int) -> None:
        self.tracker.stream_connected(self.clock())
        self.metrics.connected(True)
        if backlog:
            log.info(
                "event stream: %d events waited in the queue", backlog, extra={"cloud": self.cloud}
            )
        # What happened while nobody listened is known only to the API.
        self.poller.poll_now()
        self.on_change()

    def disconnected(self, reason: str) -> None:
        self.tracker.stream_disconnected()
        self.metrics.connected(False)
        self.on_change()

    def event(self, event: JobEvent, received: float, live: bool) -> None:
        self.metrics.received(event.type, received)
        if event.job_id not in self.tracker and not self.poller.would_track(
            event.job_id, event.cmd_class, event.account_uuid
        ):
            return
        if self.tracker.event(event, received, live):
            self._query(event.job_id, live)
        self.on_change()

    def malformed(self, reason: str) -> None:
        self.metrics.malformed()
        if reason != self._last_malformed:
            log.warning(
                "event stream: message rejected (counted in "
                f"cloudstack_exporter_events_malformed_total): {reason[:200]}",
                extra={"cloud": self.cloud},
            )
            self._last_malformed = reason

    # -- queries after events ----------------------------------------------------------------

    def _query(self, job_id: str, live: bool) -> None:
        if job_id in self._querying:
            return
        self._querying.add(job_id)
        task = asyncio.get_running_loop().create_task(self._run_query(job_id, live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_query(self, job_id: str, live: bool) -> None:
        try:
            async with self._slots:
                await self.poller.query_for_event(job_id, live)
            self.on_change()
        except Exception:  # a bug must not take the stream down; the next poll catches up
            log.exception("query after an event failed", extra={"cloud": self.cloud})
        finally:
            self._querying.discard(job_id)

    async def close(self) -> None:
        """The stream stopped (shutdown or reload): no longer connected, queries cancelled."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.tracker.stream_disconnected()
        self.metrics.connected(False)
