"""The running daemon: builds the pieces from the configuration, runs them, reloads and stops.

config -> sources/poller (one task per cloud) -> tracker -> renderer -> web. Rendering and state
saving are triggered by finished poll cycles, never by scrapes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from yarl import URL

from exporter import state as state_file
from exporter.client import CloudStackClient
from exporter.config import CloudConfig, Config, ConfigError, EventsConfig, load_config
from exporter.eventfeed import EventFeed
from exporter.eventstream import EventStream, StreamSettings
from exporter.jobspage import CloudHealth, JobsView
from exporter.logs import register_secret
from exporter.poller import CloudPoller
from exporter.rendering import Renderer
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker
from exporter.web import make_app, start_server, systemd_sockets
from exporter.webconfig import WebConfigError, WebConfigHolder

if TYPE_CHECKING:
    from exporter.options import Options

log = logging.getLogger(__name__)

# Renders after events: at most one a second, a few milliseconds after the first event of a
# burst (so that a burst's events share it).
EVENT_RENDER_INTERVAL = 1.0
EVENT_RENDER_DELAY = 0.02


def make_client(cloud: CloudConfig, metrics: ExporterMetrics) -> CloudStackClient:
    bound = metrics.cloud(cloud.name)
    return CloudStackClient(cloud, observer=bound.api_request)


def stream_settings(events: EventsConfig) -> StreamSettings:
    url = URL(events.url)
    if events.password is not None:
        url = url.with_password(events.password.reveal())
    return StreamSettings(
        url=str(url),
        exchange=events.exchange,
        queue=events.queue,
        verify_tls=events.verify_tls,
        ca_file=events.ca_file,
        queue_expires=events.queue_expires,
        queue_max_length=events.queue_max_length,
        prefetch=events.prefetch,
        reconnect_min=events.reconnect_min,
        reconnect_max=events.reconnect_max,
    )


class _Cloud:
    """A running poller (and event stream) with what it needs to stop."""

    def __init__(
        self,
        poller: CloudPoller,
        task: asyncio.Task[None],
        stop: asyncio.Event,
        stream: EventStream | None = None,
        stream_task: asyncio.Task[None] | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self.poller = poller
        self.task = task
        self.stop = stop
        self.stream = stream
        self.stream_task = stream_task
        self.feed = feed

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [self.task] + ([self.stream_task] if self.stream_task is not None else [])


class Service:
    def __init__(self, config: Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.started = time.time()
        self.metrics = ExporterMetrics(config.duration_buckets)
        self.trackers: dict[str, JobTracker] = {}
        self.clouds: dict[str, _Cloud] = {}
        self.renderer = Renderer(self.metrics, self._trackers, config.per_job_series)
        self.web_config: WebConfigHolder | None = None
        self._runner: Any = None
        self._render_task: asyncio.Task[None] | None = None
        self._render_dirty = False
        self._rendered: dict[str, int] = {}  # cycles per cloud that the served body shows
        self._save_task: asyncio.Task[None] | None = None
        self._save_dirty = False
        self._restored: Mapping[str, Any] = {}
        self._event_render: asyncio.Task[None] | None = None
        self._last_event_render = 0.0
        self._state_error = ""  # the state-file write failure last logged
        self.metrics.config_loaded(True, self.started)

    def _trackers(self) -> Mapping[str, JobTracker]:
        return self.trackers

    # -- readiness ---------------------------------------------------------------------------

    def ready(self) -> bool:
        """Every cloud polled once, successfully or not, and /metrics showing it: a scrape
        right after readiness must not get the body rendered before the first polls."""
        return bool(self.clouds) and all(self._rendered.get(name, 0) > 0 for name in self.clouds)

    def jobs_view(self) -> JobsView:
        """What /jobs shows: the tracker views /metrics was last rendered from (no walk of the
        job table here, on the loop) and each cloud's health as of now."""
        views = self.renderer.rendered_views()
        health = []
        for name, cloud in self.clouds.items():
            p = cloud.poller
            tracker = self.trackers.get(name)
            health.append(
                CloudHealth(
                    name=name,
                    up=p.last_ok,
                    last_success=p.last_success,
                    poll_duration=p.last_duration,
                    tracked=tracker.size if tracker is not None else 0,
                    last_error=p.last_error,
                    events=cloud.stream.state if cloud.stream is not None else None,
                )
            )
        return JobsView(views, health)

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        return_large_buffers_to_the_system()  # for the whole process: see why there
        if self.options.web_config_file:
            self.web_config = WebConfigHolder(self.options.web_config_file)
        if self.config.state_file:
            loaded = await asyncio.to_thread(state_file.load, self.config.state_file)
            self._restored = (loaded or {}).get("clouds", {})
        self.renderer.render()  # /metrics answers with health metrics before the first poll
        app = make_app(
            self.renderer,
            telemetry_path=self.options.telemetry_path,
            ready=self.ready,
            web_config=self.web_config,
            jobs=self,
        )
        sockets = systemd_sockets() if self.options.systemd_socket else []
        self._runner = await start_server(
            app, self.options.listen_addresses, self.web_config, sockets=sockets
        )
        for cloud in self.config.clouds:
            self._start_cloud(cloud)
        log.info(
            "exporter started",
            extra={
                "listen": "systemd" if self.options.systemd_socket else self.options.listen_address,
                "clouds": len(self.config.clouds),
            },
        )

    def _tracker_for(self, cloud: CloudConfig) -> JobTracker:
        tracker = self.trackers.get(cloud.name)
        if tracker is None:
            tracker = JobTracker(
                cloud.name,
                self.metrics.cloud(cloud.name),
                retention=self.config.retention,
                max_jobs=self.config.max_tracked_jobs,
                watermark=self.started,
            )
            restored = self._restored.get(cloud.name)
            if restored:
                try:
                    tracker.restore(restored)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("state of cloud not restored: %s", exc, extra={"cloud": cloud.name})
                else:
                    pending = sum(1 for t in tracker.jobs() if t.finished_at is None)
                    log.info(
                        "restored from the state file",
                        extra={
                            "cloud": cloud.name,
                            "pending": pending,
                            "finished": tracker.size - pending,
                        },
                    )
            self.trackers[cloud.name] = tracker
        else:
            tracker.retention = self.config.retention
            tracker.max_jobs = self.config.max_tracked_jobs
        return tracker

    def _start_cloud(self, cloud: CloudConfig) -> None:
        poller = CloudPoller(
            cloud,
            make_client(cloud, self.metrics),
            self._tracker_for(cloud),
            self.metrics.cloud(cloud.name),
            on_cycle=self._cycle_done,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop), name=f"poll-{cloud.name}")
        if cloud.events is None:
            self.clouds[cloud.name] = _Cloud(poller, task, stop)
            return
        feed = EventFeed(
            poller,
            poller.tracker,
            self.metrics.cloud(cloud.name).events(),
            on_change=self._events_applied,
        )
        stream = EventStream(cloud.name, stream_settings(cloud.events), feed)
        stream_task = asyncio.create_task(stream.run(stop), name=f"events-{cloud.name}")
        self.clouds[cloud.name] = _Cloud(poller, task, stop, stream, stream_task, feed)

    async def _stop_clouds(self) -> None:
        clouds, self.clouds = self.clouds, {}
        for cloud in clouds.values():
            cloud.stop.set()
        # A cycle waiting on a slow server is cancelled rather than awaited to its timeout.
        tasks = [t for c in clouds.values() for t in c.tasks]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(c.feed.close() for c in clouds.values() if c.feed is not None))
        await asyncio.gather(*(c.poller.client.close() for c in clouds.values()))

    async def stop(self) -> None:
        await self._stop_clouds()
        if self._event_render is not None:
            self._event_render.cancel()  # the render below shows everything anyway
            await asyncio.gather(self._event_render, return_exceptions=True)
            self._request_render()
        await self.settle()
        await self.save_state()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("exporter stopped")

    # -- after each poll cycle ---------------------------------------------------------------

    def _cycle_done(self, poller: CloudPoller) -> None:
        self._request_render()

    async def _render_now(self) -> None:
        """Render (off the loop, like every render) and wait until it is installed."""
        self._request_render()
        if self._render_task is not None:
            await asyncio.gather(self._render_task, return_exceptions=True)

    def _request_render(self) -> None:
        # Several clouds finishing together cause one render, not one each; the bytes are
        # built in a thread so scrapes and other clouds' polls are not held up.
        self._render_dirty = True
        if self._render_task is None or self._render_task.done():
            self._render_task = asyncio.create_task(self._render_loop())
        if self.config.state_file:
            self._save_dirty = True
            if self._save_task is None or self._save_task.done():
                self._save_task = asyncio.create_task(self._save_loop())

    def _events_applied(self) -> None:
        # Hundreds of events a second make one render a second, not hundreds: a job's end
        # shows within about EVENT_RENDER_INTERVAL of its complete.
        if self._event_render is None or self._event_render.done():
            self._event_render = asyncio.create_task(self._render_after_events())

    async def _render_after_events(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_event_render + EVENT_RENDER_INTERVAL - loop.time()
        await asyncio.sleep(max(EVENT_RENDER_DELAY, wait))
        self._last_event_render = loop.time()
        self._request_render()

    async def _render_loop(self) -> None:
        while self._render_dirty:
            self._render_dirty = False
            # Read right before render_async takes its snapshot, with no await in between.
            polled = {name: c.poller.cycles for name, c in self.clouds.items()}
            try:
                await self.renderer.render_async()
            except Exception:  # the last good bytes stay served
                log.exception("rendering /metrics failed")
            else:
                self._rendered.update(polled)

    async def _save_loop(self) -> None:
        while self._save_dirty:
            self._save_dirty = False
            await self.save_state()

    async def settle(self) -> None:
        """Wait until what finished cycles changed is rendered and saved."""
        for task in (self._render_task, self._save_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    async def save_state(self) -> None:
        path = self.config.state_file
        if not path:
            return
        data = state_file.build(
            {name: t.to_state() for name, t in self.trackers.items()}, time.time()
        )
        try:
            await asyncio.to_thread(state_file.save, path, data)
        except OSError as exc:
            self.metrics.state_write_failures.inc()
            # One line per distinct failure; the counter shows how long it goes on.
            text = f"cannot write state file: {exc.strerror or type(exc).__name__}"
            if text != self._state_error:
                log.error(text, extra={"path": path})
                self._state_error = text
        else:
            if self._state_error:
                log.info("state file written again", extra={"path": path})
                self._state_error = ""

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> bool:
        try:
            config = await asyncio.to_thread(load_config, self.options.config_file)
        except ConfigError as exc:
            log.error(
                "configuration reload refused; the running configuration stays",
                extra={"problems": "; ".join(exc.problems)},
            )
            self.metrics.config_loaded(False, time.time())
            await self._render_now()
            return False
        for secret in config.secrets():
            register_secret(secret)  # new keys are masked in logs like the first ones
        if config.duration_buckets != self.config.duration_buckets:
            log.warning("duration_buckets changes take effect after a restart")
        await self._stop_clouds()
        names = {c.name for c in config.clouds}
        for gone in set(self.trackers) - names:
            del self.trackers[gone]
            self.metrics.remove_cloud(gone)
        for gone in set(self._rendered) - names:
            del self._rendered[gone]  # were it added back, it would start unpolled
        for cloud in config.clouds:
            if cloud.events is None and cloud.name in self.trackers:
                # No stream any more: its series go, as a removed cloud's do.
                self.metrics.cloud(cloud.name).remove_events()
        self.config = config
        self.renderer.per_job_series = config.per_job_series
        self._restored = {}
        for cloud in config.clouds:
            self._start_cloud(cloud)
        if self.web_config is not None:
            try:
                self.web_config.reload()
            except WebConfigError as exc:
                log.error("web config reload refused: %s", exc)
        self.metrics.config_loaded(True, time.time())
        await self._render_now()
        log.info("configuration reloaded", extra={"clouds": len(config.clouds)})
        return True


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 1024 * 1024


def return_large_buffers_to_the_system() -> bool:
    """Fix glibc's mmap threshold at 1 MiB, so that the 1 MiB slices of plain scrapes are
    mappings of their own, given back to the system when freed.

    Left alone, glibc raises the threshold after the first such buffer is freed, and the
    slices then come from the heap, which keeps what they held: at 100,000 jobs RSS after
    a mix of scrapes was 1,715 B a job against 1,060 after polling (`make bench`), with
    the fixed threshold 1,364 (both with inflation on the loop). malloc_trim after scrapes
    gave back far less; a 256 KiB threshold did as well but mapped the listing's pages too.
    False where there is no glibc (musl, macOS): nothing changes there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


async def run(config: Config, options: Options) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    service = Service(config, options)
    try:
        await service.start()
    except OSError as exc:
        where = (
            "the systemd sockets" if options.systemd_socket else ", ".join(options.listen_addresses)
        )
        log.error("cannot listen on %s: %s", where, exc.strerror or exc)
        await service.stop()
        return 1
    except WebConfigError as exc:
        log.error("invalid web config: %s", exc)
        await service.stop()
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def hup() -> None:
        task = loop.create_task(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await service.stop()
    return 0
