"""The exporter's HTTP server: /metrics, the landing page, /-/healthy and /-/ready.

It only serves: the metrics bytes come pre-rendered (and pre-compressed) from a MetricsSource,
so a scrape costs a dictionary lookup and a write. TLS, basic auth, extra headers and the rate
limit come from the web config file (exporter/webconfig.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from exporter import __doc__ as _PROJECT_DOC
from exporter import __version__, jobspage
from exporter.options import parse_listen_address
from exporter.rendering import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    OPENMETRICS_MEDIA_TYPE,
    OPENMETRICS_VERSION,
    TEXT_MEDIA_TYPE,
    TEXT_VERSION,
)
from exporter.webconfig import REALM, WebConfigHolder

log = logging.getLogger(__name__)

PROJECT = "cloudstack-job-exporter"
JSON_CONTENT_TYPE = "application/json"  # the /jobs page's ?format=json answers
_ALLOW = "GET, HEAD"

# Request limits: a scrape needs one short line and a few headers.
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
# Longer than the usual scrape interval (1m) so Prometheus keeps its connection.
KEEPALIVE_TIMEOUT = 75.0
_REJECT_LOG_EVERY = 60.0
# Big enough to keep per-write overhead small, small enough to stay cheap to buffer.
_WRITE_SLICE = 1 << 20


class MetricsSource(Protocol):
    def body(self, openmetrics: bool, gzip: bool) -> bytes:
        """The cached /metrics bytes in the asked format (gzip-compressed when gzip)."""
        ...


class MetricsBody(Protocol):
    @property
    def length(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@runtime_checkable
class StreamingSource(MetricsSource, Protocol):
    def stream(self, openmetrics: bool, gzip: bool) -> MetricsBody:
        """The /metrics body to write in slices, its length known up front."""
        ...


@dataclasses.dataclass(frozen=True)
class _WholeBody:
    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), _WRITE_SLICE):
            yield bytes(view[start : start + _WRITE_SLICE])


def _open_body(metrics: MetricsSource, openmetrics: bool, gzip: bool) -> MetricsBody:
    if isinstance(metrics, StreamingSource):
        return metrics.stream(openmetrics, gzip)
    return _WholeBody(metrics.body(openmetrics, gzip))


@dataclasses.dataclass
class ScrapeStats:
    """Counters of the /metrics endpoint, for the exporter's own metrics."""

    served: int = 0
    rejected: int = 0  # over max_concurrent_scrapes, answered 503
    errors: int = 0  # the source raised, answered 500
    in_flight: int = 0
    _last_reject_log: float = dataclasses.field(default=float("-inf"), repr=False)


SCRAPE_STATS = web.AppKey("scrape_stats", ScrapeStats)
WEB_CONFIG = web.AppKey("web_config", WebConfigHolder)


# --------------------------------------------------------------------------- negotiation


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse an Accept header into (type/subtype, params, q), skipping malformed parts."""
    out = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if "/" not in media:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for f in fields[1:]:
            name, sep, value = f.partition("=")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
            else:
                params[name] = value
        out.append((media, params, q))
    return out


def _quality(
    ranges: list[tuple[str, dict[str, str], float]], media: str, versions: tuple[str, ...]
) -> float:
    """q of `media` under the most specific matching range (RFC 9110 12.5.1); 0 if none."""
    best: tuple[int, float] | None = None
    kind = media.split("/")[0]
    for rng, params, q in ranges:
        if rng == media:
            version = params.get("version")
            if version is not None and version not in versions:
                continue  # asks for a version of the format we do not produce
            specificity = 3 if version is not None else 2
        elif rng == f"{kind}/*":
            specificity = 1
        elif rng == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0] or (specificity == best[0] and q > best[1]):
            best = (specificity, q)
    return best[1] if best else 0.0


def wants_openmetrics(accept: str | None) -> bool:
    """True when the Accept header prefers OpenMetrics to the classic text format."""
    if not accept:
        return False
    ranges = _media_ranges(accept)
    # OpenMetrics 0.0.1 is what 1.0.0 was called before it was final; Prometheus asks for both.
    q_om = _quality(ranges, OPENMETRICS_MEDIA_TYPE, (OPENMETRICS_VERSION, "0.0.1"))
    q_text = _quality(ranges, TEXT_MEDIA_TYPE, (TEXT_VERSION,))
    # A tie goes to the classic format, which every client understands.
    return q_om > 0 and q_om > q_text


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when Accept-Encoding allows gzip (explicitly or through *)."""
    if not accept_encoding:
        return False
    q_gzip: float | None = None
    q_any: float | None = None
    for part in accept_encoding.split(","):
        fields = [f.strip() for f in part.split(";")]
        coding = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            name, _, value = f.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            q_gzip = q if q_gzip is None else max(q_gzip, q)
        elif coding == "*":
            q_any = q
    if q_gzip is not None:
        return q_gzip > 0
    return q_any is not None and q_any > 0


# --------------------------------------------------------------------------- handlers


def _landing_page(telemetry_path: str, health: str | None) -> bytes:
    """The links, and each cloud's health when the daemon serves the jobs page too."""
    description = (_PROJECT_DOC or "").strip().splitlines()[0].rstrip(".")
    links = [("/jobs", "Jobs")] if health is not None else []
    links += [
        (telemetry_path, "Metrics"),
        ("/-/healthy", "Health"),
        ("/-/ready", "Readiness"),
    ]
    items = "\n".join(
        f'      <li><a href="{html.escape(href)}">{html.escape(label)}</a>'
        f" <code>{html.escape(href)}</code></li>"
        for href, label in links
    )
    clouds = f"    <h2>Clouds</h2>\n    {health}\n" if health is not None else ""
    page = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>{PROJECT}</title>
    <style>{jobspage.STYLE}</style>
  </head>
  <body>
    <h1>{PROJECT}</h1>
    <p>{html.escape(description)}.</p>
    <p>Version {html.escape(__version__)}</p>
    <ul>
{items}
    </ul>
{clouds}  </body>
</html>
"""
    return page.encode()


def _text(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text, headers=headers or None)


def _make_metrics_handler(
    metrics: MetricsSource, stats: ScrapeStats, limit: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle_metrics(request: web.Request) -> web.StreamResponse:
        if stats.in_flight >= limit:
            stats.rejected += 1
            now = time.monotonic()
            if now - stats._last_reject_log >= _REJECT_LOG_EVERY:
                stats._last_reject_log = now
                log.warning(
                    "scrape refused with 503: %d scrapes already in progress (limit %d); "
                    "%d refused so far",
                    stats.in_flight,
                    limit,
                    stats.rejected,
                )
            return _text(503, "too many concurrent scrapes\n", **{"Retry-After": "1"})
        stats.in_flight += 1
        try:
            openmetrics = wants_openmetrics(request.headers.get("Accept"))
            gzip = accepts_gzip(request.headers.get("Accept-Encoding"))
            try:
                # In a thread: the first request for a variant after a render may have to
                # inflate or gzip a large body, which must not stall polling on the loop.
                body = await asyncio.to_thread(_open_body, metrics, openmetrics, gzip)
            except Exception:
                stats.errors += 1
                log.exception("cannot produce the metrics for a scrape")
                return _text(500, "error producing the metrics\n")
            headers = {
                "Content-Type": CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT,
                "Vary": "Accept, Accept-Encoding",
            }
            if gzip:
                headers["Content-Encoding"] = "gzip"
            # Sent here, so in_flight covers slow readers too (and bounds how many bodies are
            # being inflated at once). Written a slice at a time: a plain body is inflated
            # from the compressed pieces as it goes, so neither the whole uncompressed body
            # (125 MB at 100,000 jobs) nor a copy of it in aiohttp's buffers is ever held.
            # Inflated on the loop: ISA-L makes a 1 MiB slice in well under a millisecond,
            # less than a hop to a worker thread costs, and what a slice frees stays in the
            # loop's heap for the next one instead of in worker threads' arenas (make bench:
            # plain scrape 256 -> 199 ms at 100,000 jobs, RSS after scrapes 2,232 -> 1,715 B
            # a job, before the mmap threshold in service.py).
            response = web.StreamResponse(headers=headers)
            response.content_length = body.length
            await response.prepare(request)
            if request.method != "HEAD":
                for chunk in body.chunks():
                    await response.write(chunk)
            await response.write_eof()
            stats.served += 1
            return response
        finally:
            stats.in_flight -= 1

    return handle_metrics


class JobsSource(Protocol):
    def jobs_view(self) -> jobspage.JobsView:
        """The snapshot the page reads; called on the event loop, so it must be cheap."""


# Pages are built in threads; a few at once is plenty for operators and keeps a burst of
# reloads of a 100,000-job table from queueing up CPU behind the scrapes.
_MAX_CONCURRENT_PAGES = 4


def _make_jobs_handler(
    source: JobsSource,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    pages = asyncio.Semaphore(_MAX_CONCURRENT_PAGES)

    async def handle_jobs(request: web.Request) -> web.StreamResponse:
        params = {key: request.query.getall(key) for key in request.query}
        json_wanted = "json" in params.get("format", [])
        try:
            query = jobspage.parse_query(params)
        except jobspage.QueryError as error:
            if json_wanted:
                body = orjson.dumps({"error": str(error)})
                return web.Response(status=400, body=body, content_type=JSON_CONTENT_TYPE)
            return _page(400, jobspage.render_error(str(error)))
        view = source.jobs_view()
        if pages.locked():
            return _text(503, "too many job pages being built; retry\n", **{"Retry-After": "1"})
        async with pages:
            try:
                body = await asyncio.to_thread(jobspage.build, view, query)
            except Exception:
                log.exception("cannot build the jobs page")
                return _text(500, "error building the jobs page\n")
        if query.json:
            return web.Response(body=body, content_type=JSON_CONTENT_TYPE)
        return _page(200, body)

    return handle_jobs


def _page(status: int, body: bytes) -> web.Response:
    response = web.Response(status=status, body=body, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = jobspage.CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _make_guard(paths: frozenset[str], holder: WebConfigHolder | None) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Same order as the exporter toolkit: rate limit, then authentication, then routing.
        if holder is not None:
            holder.maybe_reload()
            if not holder.allow_request():
                return _text(429, "too many requests\n")
            if holder.config.tls is not None and holder.config.tls.client_allowed_sans:
                peercert = (
                    request.transport.get_extra_info("peercert") if request.transport else None
                )
                if not holder.client_cert_allowed(peercert):
                    log.debug("client certificate without an allowed SAN from %s", request.remote)
                    response = _text(403, "client certificate not allowed\n")
                    response.force_close()
                    return response
            if holder.auth_required and not await holder.check_basic_auth(
                request.headers.get("Authorization")
            ):
                log.debug("basic auth failed for a request from %s", request.remote)
                return _text(
                    401,
                    "unauthorized\n",
                    **{"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
        # Exact match on the raw target: no //, dot segments or %-escapes reach a handler.
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path not in paths:
            return _text(404, "not found\n")
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed\n", Allow=_ALLOW)
        return await handler(request)

    return guard


def make_app(
    metrics: MetricsSource,
    ready: Callable[[], bool],
    *,
    telemetry_path: str = "/metrics",
    web_config: WebConfigHolder | None = None,
    # Scrapes serve cached bytes, so each costs a socket, not memory: room for several
    # Prometheus servers and ad-hoc readers (ten scrapers at once must never be refused).
    max_concurrent_scrapes: int = 32,
    stats: ScrapeStats | None = None,
    jobs: JobsSource | None = None,
) -> web.Application:
    """The application; `ready()` answers /-/ready, `stats` collects scrape counters."""
    if not telemetry_path.startswith("/") or telemetry_path in ("/", "/-/healthy", "/-/ready"):
        raise ValueError(
            f"telemetry path {telemetry_path!r} must start with / and differ from /, "
            "/-/healthy and /-/ready"
        )
    if max_concurrent_scrapes < 1:
        raise ValueError("max_concurrent_scrapes must be at least 1")
    stats = stats if stats is not None else ScrapeStats()
    static_landing = None if jobs is not None else _landing_page(telemetry_path, None)

    async def handle_landing(request: web.Request) -> web.StreamResponse:
        if static_landing is not None:
            body = static_landing
        else:
            assert jobs is not None
            # A few boxes, one per cloud: cheap enough for the loop.
            health = jobspage.health_strip(jobs.jobs_view().clouds, time.time())
            body = _landing_page(telemetry_path, health)
        return _page(200, body)

    async def handle_healthy(request: web.Request) -> web.StreamResponse:
        return _text(200, "OK\n")

    async def handle_ready(request: web.Request) -> web.StreamResponse:
        try:
            is_ready = ready()
        except Exception:
            log.exception("readiness check failed")
            is_ready = False
        if is_ready:
            return _text(200, "Ready\n")
        return _text(503, "Not ready: not every cloud has been polled yet\n")

    paths = frozenset(
        {telemetry_path, "/", "/-/healthy", "/-/ready"} | ({"/jobs"} if jobs else set())
    )
    # client_max_size: nothing here reads a request body.
    app = web.Application(
        middlewares=[_make_guard(frozenset(paths), web_config)], client_max_size=1024
    )
    app[SCRAPE_STATS] = stats
    if web_config is not None:
        app[WEB_CONFIG] = web_config

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        # No library versions for scanners; the operator's extra headers on every answer.
        response.headers["Server"] = PROJECT
        if web_config is not None:
            for name, value in web_config.headers:
                response.headers[name] = value

    app.on_response_prepare.append(add_headers)

    app.router.add_get(
        telemetry_path, _make_metrics_handler(metrics, stats, max_concurrent_scrapes)
    )
    app.router.add_get("/", handle_landing)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    if jobs is not None:
        app.router.add_get("/jobs", _make_jobs_handler(jobs))
    return app


# --------------------------------------------------------------------------- serving


class _DebugAccessLogger(AbstractAccessLogger):
    """One debug line per request; scrapes every few seconds are not worth info lines."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s %s %d %.3fs",
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class _ClientErrorFilter(logging.Filter):
    """Malformed requests are the client's fault: a debug line, not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.debug(
                "bad request refused with %d: %s", exc.code, (exc.message or "").partition("\n")[0]
            )
            return False
        return True


_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(_ClientErrorFilter())


def systemd_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed (sd_listen_fds: fds 3.. when LISTEN_PID is us).

    Raises OSError when there are none, so that the daemon exits with one clear line.
    """
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        raise OSError("--web.systemd-socket: no socket was passed by systemd (LISTEN_PID)")
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    if count < 1:
        raise OSError("--web.systemd-socket: no socket was passed by systemd (LISTEN_FDS)")
    sockets = []
    for fd in range(3, 3 + count):
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            raise OSError(f"--web.systemd-socket: fd {fd} is not a stream socket")
        sock.setblocking(False)
        sockets.append(sock)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for children
    return sockets


async def start_server(
    app: web.Application,
    listen_address: str | Sequence[str],
    web_config: WebConfigHolder | None = None,
    *,
    sockets: Sequence[socket.socket] = (),
) -> web.AppRunner:
    """Serve `app` on the address(es), or on `sockets` when given (socket activation); the
    caller ends it with `await runner.cleanup()`.

    A bind failure raises the OSError after releasing whatever was already bound.
    """
    if web_config is None:
        web_config = app.get(WEB_CONFIG)
    addresses = [listen_address] if isinstance(listen_address, str) else list(listen_address)
    parsed = [] if sockets else [parse_listen_address(a) for a in addresses]
    ssl_context = web_config.ssl_context if web_config is not None else None
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=_DebugAccessLogger,
        access_log=logging.getLogger(f"{__name__}.access"),
        logger=_server_log,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    try:
        for host, port in parsed:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
            await site.start()  # OSError (address in use, ...) goes to the caller
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    scheme = "https" if ssl_context is not None else "http"
    for sockname in runner.addresses:
        host, port = sockname[0], sockname[1]
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("listening on %s://%s", scheme, shown)
    return runner


def bound_ports(runner: web.AppRunner) -> list[int]:
    """The ports actually bound (useful with port 0)."""
    return [int(sockname[1]) for sockname in runner.addresses]
