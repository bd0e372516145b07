"""The HTTP server over real loopback HTTP: negotiation, hardening, health, readiness, limits."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter import __version__
from exporter.options import parse_listen_address
from exporter.rendering import CONTENT_TYPE_OPENMETRICS as OPENMETRICS_CONTENT_TYPE
from exporter.rendering import CONTENT_TYPE_TEXT as TEXT_CONTENT_TYPE
from exporter.web import (
    SCRAPE_STATS,
    accepts_gzip,
    bound_ports,
    make_app,
    start_server,
    wants_openmetrics,
)

PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
TEXT = b"# TYPE up gauge\nup 1\n"
OPENMETRICS = b"# TYPE up gauge\nup 1\n# EOF\n"


class FakeSource:
    """Fixed bytes, compressed once up front like the real renderer's cache."""

    def __init__(self, text: bytes = TEXT, openmetrics: bytes = OPENMETRICS) -> None:
        self.bodies = {
            (False, False): text,
            (True, False): openmetrics,
            (False, True): gzip.compress(text),
            (True, True): gzip.compress(openmetrics),
        }
        self.calls: list[tuple[bool, bool]] = []
        self.fail = False

    def body(self, openmetrics: bool, gzip: bool) -> bytes:
        self.calls.append((openmetrics, gzip))
        if self.fail:
            raise RuntimeError("renderer exploded")
        return self.bodies[(openmetrics, gzip)]


Serve = Callable[..., Awaitable[tuple[str, web.Application]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(
        source: Any, ready: Callable[[], bool] = lambda: True, **kwargs: Any
    ) -> tuple[str, web.Application]:
        app = make_app(source, ready, **kwargs)
        runner = await start_server(app, "127.0.0.1:0")
        runners.append(runner)
        return f"http://127.0.0.1:{bound_ports(runner)[0]}", app

    yield start
    for runner in runners:
        await runner.cleanup()


async def get(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    # auto_decompress off: the test must see the bytes on the wire.
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Accept-Encoding",)) as s,
        s.request(method, url, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client normalising the path) and read until close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --------------------------------------------------------------------------- negotiation


async def test_prometheus_accept_header_gets_openmetrics(serve: Serve) -> None:
    url, _ = await serve(FakeSource())
    for accept in (PROMETHEUS_2_ACCEPT, PROMETHEUS_3_ACCEPT):
        status, headers, body = await get(url + "/metrics", headers={"Accept": accept})
        assert status == 200
        assert headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        assert body == OPENMETRICS


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "text/plain",
        "text/plain;version=0.0.4",
        "*/*",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # a browser
        "application/openmetrics-text;q=0,text/plain",
        "application/openmetrics-text;version=0.0.1;q=0.2,text/plain;version=0.0.4;q=0.9",
        "application/openmetrics-text;version=2.0.0,text/plain;q=0.5",  # a version we lack
    ],
)
async def test_other_accept_headers_get_the_text_format(serve: Serve, accept: str | None) -> None:
    url, _ = await serve(FakeSource())
    status, headers, body = await get(
        url + "/metrics", headers={"Accept": accept} if accept else None
    )
    assert status == 200
    assert headers["Content-Type"] == TEXT_CONTENT_TYPE
    assert body == TEXT


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_2_ACCEPT, True),
        (PROMETHEUS_3_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; Version=1.0.0", True),
        ("application/openmetrics-text;q=0.4,text/plain;q=0.5", False),
        ("text/plain;q=0.5,application/openmetrics-text;q=0.5", False),  # tie: classic format
        ("application/*", True),
        ("application/openmetrics-text;q=bogus,text/plain;q=0.1", False),
        ("garbage, ;;;, /", False),
        ("", False),
    ],
)
def test_accept_parsing_follows_q_values(accept: str, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


async def test_gzip_serves_the_cached_compressed_bytes(serve: Serve) -> None:
    source = FakeSource()
    url, _ = await serve(source)
    status, headers, body = await get(
        url + "/metrics",
        headers={"Accept": PROMETHEUS_2_ACCEPT, "Accept-Encoding": "gzip, deflate"},
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in headers["Vary"]
    # Exactly the source's bytes: nothing was compressed for this request.
    assert body == source.bodies[(True, True)]
    assert gzip.decompress(body) == OPENMETRICS
    assert source.calls == [(True, True)]


@pytest.mark.parametrize("encoding", [None, "identity", "gzip;q=0", "br", "*;q=0"])
async def test_no_gzip_unless_allowed(serve: Serve, encoding: str | None) -> None:
    url, _ = await serve(FakeSource())
    status, headers, body = await get(
        url + "/metrics", headers={"Accept-Encoding": encoding} if encoding else None
    )
    assert status == 200
    assert "Content-Encoding" not in headers
    assert "Accept-Encoding" in headers["Vary"]
    assert body == TEXT


@pytest.mark.parametrize(
    ("value", "expected"),
    [("gzip", True), ("GZIP;q=0.5", True), ("*", True), ("br, *;q=0.1", True), ("gzip;q=0", False)],
)
def test_accept_encoding_parsing(value: str, expected: bool) -> None:
    assert accepts_gzip(value) is expected


async def test_head_sends_headers_without_a_body(serve: Serve) -> None:
    url, _ = await serve(FakeSource())
    answer = await raw_request(
        port_of(url), b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Length: {len(TEXT)}".encode() in head
    assert rest == b""


# --------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/metrics", "/", "/-/healthy", "/-/ready"])
async def test_only_get_and_head(serve: Serve, method: str, path: str) -> None:
    source = FakeSource()
    url, _ = await serve(source)
    status, headers, _ = await get(url + path, method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert source.calls == []


@pytest.mark.parametrize("path", ["/nope", "/metrics.txt", "/-/", "/-/reload", "/favicon.ico"])
async def test_unknown_paths_are_404(serve: Serve, path: str) -> None:
    url, _ = await serve(FakeSource())
    for method in ("GET", "POST"):
        status, _, _ = await get(url + path, method=method)
        assert status == 404


@pytest.mark.parametrize(
    "target",
    [
        b"//metrics",
        b"/metrics/",
        b"/metrics/../",
        b"/metrics/..",
        b"/x/../metrics",
        b"/./metrics",
        b"/%6detrics",
        b"/%2fmetrics",
        b"/metrics%00",
        b"/-/healthy/../../metrics",
        b"http://127.0.0.1/metrics",
    ],
)
async def test_path_tricks_reach_nothing(serve: Serve, target: bytes) -> None:
    source = FakeSource()
    url, _ = await serve(source)
    answer = await raw_request(
        port_of(url), b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.0 400 Bad Request")
    assert source.calls == []


async def test_query_string_does_not_change_the_endpoint(serve: Serve) -> None:
    url, _ = await serve(FakeSource())
    status, _, body = await get(url + "/metrics?name[]=up")
    assert (status, body) == (200, TEXT)


async def test_oversized_request_line_and_headers_are_refused(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url, _ = await serve(FakeSource())
    port = port_of(url)
    long_line = await raw_request(
        port, b"GET /metrics?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert long_line.startswith(b"HTTP/1.0 400 ")
    big_header = await raw_request(
        port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    )
    assert big_header.startswith(b"HTTP/1.0 400 ")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(500))
    many_headers = await raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert many_headers.startswith(b"HTTP/1.0 400 ")
    # The server is fine, and the client's mistakes are not logged as errors.
    status, _, _ = await get(url + "/-/healthy")
    assert status == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_no_server_version_is_disclosed(serve: Serve) -> None:
    url, _ = await serve(FakeSource())
    _, headers, _ = await get(url + "/metrics")
    assert headers["Server"] == "cloudstack-job-exporter"
    assert "aiohttp" not in str(headers)


# --------------------------------------------------------------------------- pages


async def test_landing_page_links_every_endpoint(serve: Serve) -> None:
    url, _ = await serve(FakeSource(), telemetry_path="/custom/metrics")
    status, headers, body = await get(url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "cloudstack-job-exporter" in page
    assert __version__ in page
    assert "CloudStack" in page  # the project description
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs == ["/custom/metrics", "/-/healthy", "/-/ready"]
    for href in hrefs:
        status, _, _ = await get(url + href)
        assert status == 200


async def test_custom_telemetry_path_replaces_metrics(serve: Serve) -> None:
    url, _ = await serve(FakeSource(), telemetry_path="/custom/metrics")
    assert (await get(url + "/custom/metrics"))[0] == 200
    assert (await get(url + "/metrics"))[0] == 404


@pytest.mark.parametrize("path", ["metrics", "/", "/-/ready"])
def test_bad_telemetry_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="telemetry path"):
        make_app(FakeSource(), lambda: True, telemetry_path=path)


async def test_healthy(serve: Serve) -> None:
    url, _ = await serve(FakeSource(), ready=lambda: False)
    status, _, body = await get(url + "/-/healthy")
    assert (status, body) == (200, b"OK\n")


async def test_ready_follows_the_callback(serve: Serve) -> None:
    state = {"ready": False}
    url, _ = await serve(FakeSource(), ready=lambda: state["ready"])
    assert (await get(url + "/-/ready"))[0] == 503
    state["ready"] = True
    assert (await get(url + "/-/ready"))[0] == 200


async def test_ready_callback_failure_is_not_ready(serve: Serve) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    url, _ = await serve(FakeSource(), ready=broken)
    assert (await get(url + "/-/ready"))[0] == 503
    assert (await get(url + "/-/healthy"))[0] == 200


# --------------------------------------------------------------------------- robustness


async def test_a_failing_source_gives_500_and_the_server_carries_on(serve: Serve) -> None:
    source = FakeSource()
    url, app = await serve(source)
    source.fail = True
    status, _, body = await get(url + "/metrics")
    assert status == 500
    assert b"renderer exploded" not in body
    source.fail = False
    assert (await get(url + "/metrics"))[0] == 200
    stats = app[SCRAPE_STATS]
    # The handler counts a scrape once its last byte is written, which may be just after
    # the client has it.
    await _wait_for(lambda: stats.served == 1)
    assert (stats.errors, stats.served) == (1, 1)


async def _stalled_scrape(port: int) -> socket.socket:
    """A scrape whose client never reads, so the server is stuck writing the response."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


async def _wait_for(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_concurrent_scrapes_are_bounded(serve: Serve) -> None:
    big = b"# filler\n" * 4_000_000  # 36 MB: far more than the socket buffers hold
    url, app = await serve(FakeSource(text=big), max_concurrent_scrapes=2)
    stats = app[SCRAPE_STATS]
    stalled = [await _stalled_scrape(port_of(url)) for _ in range(2)]
    try:
        await _wait_for(lambda: stats.in_flight == 2)
        status, headers, _ = await get(url + "/metrics")
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert stats.rejected == 1
        # Other endpoints are not scrapes and stay available.
        assert (await get(url + "/-/healthy"))[0] == 200
    finally:
        for sock in stalled:
            sock.close()
    await _wait_for(lambda: stats.in_flight == 0)
    status, _, body = await get(url + "/metrics")
    assert status == 200
    assert len(body) == len(big)


# --------------------------------------------------------------------------- logging


async def test_scrapes_are_logged_at_debug_only(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = await serve(FakeSource())
    caplog.set_level(logging.INFO)
    await get(url + "/metrics")
    assert [r for r in caplog.records if r.name.startswith("exporter.web.access")] == []
    caplog.set_level(logging.DEBUG, logger="exporter.web.access")
    await get(url + "/metrics")

    def access_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "exporter.web.access"]

    # aiohttp writes the access line once the response is finished, which may be just after
    # the client has read the body.
    await _wait_for(lambda: len(access_lines()) > 0)
    lines = access_lines()
    assert len(lines) == 1
    assert "GET /metrics 200" in lines[0]


# --------------------------------------------------------------------------- listening


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", (None, 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9100", "::1:9100", "host:", "host:99999", "[::1]9100", "h:x"])
def test_bad_listen_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        parse_listen_address(address)


async def test_listens_on_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    runner = await start_server(make_app(FakeSource(), lambda: True), "[::1]:0")
    try:
        port = bound_ports(runner)[0]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://[::1]:{port}/metrics") as r,
        ):
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_port_in_use_raises_oserror() -> None:
    first = await start_server(make_app(FakeSource(), lambda: True), "127.0.0.1:0")
    try:
        port = bound_ports(first)[0]
        with pytest.raises(OSError):
            await start_server(make_app(FakeSource(), lambda: True), f"127.0.0.1:{port}")
    finally:
        await first.cleanup()


# --------------------------------------------------------------------------- real renderer
#
# Plain variants are inflated from the compressed pieces while they are written: the bytes
# on the wire must be those of the whole body as it used to be built, in every variant.


def _renderer(jobs: int) -> tuple[Any, Any]:
    from exporter.jobs import parse_job
    from exporter.rendering import Renderer
    from exporter.selfmetrics import ExporterMetrics
    from exporter.tracker import JobTracker

    metrics = ExporterMetrics()
    tracker = JobTracker("c1", metrics.cloud("c1"), retention=3600, max_jobs=100_000, watermark=0)
    for n in range(jobs):
        add_job(tracker, parse_job, n)
    renderer = Renderer(metrics, {"c1": tracker})
    renderer.render()
    return renderer, tracker


def add_job(tracker: Any, parse_job: Any, n: int) -> None:
    raw = {
        "jobid": f"00000000-0000-4000-8000-{n:012d}",
        "jobstatus": 0,
        "jobprocstatus": 0,
        "jobresultcode": 0,
        "cmd": "org.apache.cloudstack.api.command.user.vm.StartVMCmd",
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": f"vm-{n}",
        "accountid": "acct",
        "userid": "user",
        "created": "2026-04-13T09:42:21+0000",
    }
    tracker.apply(parse_job(raw), 1_776_000_100.0)


def whole_bodies(renderer: Any) -> dict[tuple[bool, bool], bytes]:
    """Each variant as one bytes object, made the way the cached body used to be."""
    current = renderer._current
    out = {}
    for openmetrics in (False, True):
        pieces = [p for p in (current._om if openmetrics else current._text) if p.size]
        stream = b"".join([*(p.data for p in pieces), b"\x03\x00"])
        out[(openmetrics, False)] = zlib.decompress(stream, -15)
        out[(openmetrics, True)] = current.variant(openmetrics, True)
    return out


VARIANTS = {
    (False, False): {"Accept-Encoding": "identity"},
    (True, False): {"Accept": PROMETHEUS_3_ACCEPT, "Accept-Encoding": "identity"},
    (False, True): {"Accept-Encoding": "gzip"},
    (True, True): {"Accept": PROMETHEUS_3_ACCEPT, "Accept-Encoding": "gzip"},
}


async def test_every_variant_streams_the_whole_body(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import rendering

    monkeypatch.setattr(rendering, "INFLATE_SLICE", 1000)  # many slices per body
    renderer, _ = _renderer(300)
    expected = whole_bodies(renderer)
    url, _ = await serve(renderer)
    for variant, headers in VARIANTS.items():
        status, got_headers, body = await get(url + "/metrics", headers=headers)
        assert status == 200
        assert body == expected[variant], variant
        assert int(got_headers["Content-Length"]) == len(body)
        assert ("Content-Encoding" in got_headers) == variant[1]
        if variant[1]:
            assert gzip.decompress(body) == expected[(variant[0], False)]
        status, head_headers, head = await get(url + "/metrics", method="HEAD", headers=headers)
        assert status == 200 and head == b""
        assert head_headers["Content-Length"] == got_headers["Content-Length"]
    assert expected[(True, False)].endswith(b"# EOF\n")


async def test_concurrent_scrapes_each_get_the_whole_body(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import rendering

    monkeypatch.setattr(rendering, "INFLATE_SLICE", 500)
    renderer, _ = _renderer(300)
    expected = whole_bodies(renderer)
    url, _ = await serve(renderer, max_concurrent_scrapes=16)
    variants = list(VARIANTS) * 3
    results = await asyncio.gather(
        *(get(url + "/metrics", headers=VARIANTS[variant]) for variant in variants)
    )
    for variant, (status, _, body) in zip(variants, results, strict=True):
        assert status == 200 and body == expected[variant], variant


async def test_a_scrape_in_progress_keeps_its_render(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render installed while a body is written does not mix into it: the scrape ends
    with the body it started, the next scrape gets the new one."""
    from exporter import rendering
    from exporter.jobs import parse_job

    monkeypatch.setattr(rendering, "INFLATE_SLICE", 64)  # hundreds of slices to write
    renderer, tracker = _renderer(400)
    before = whole_bodies(renderer)[(False, False)]
    url, _ = await serve(renderer)
    async with (
        aiohttp.ClientSession(skip_auto_headers=("Accept-Encoding",)) as session,
        session.get(url + "/metrics") as response,
    ):
        first = await response.content.readexactly(64)
        for n in range(400, 800):
            add_job(tracker, parse_job, n)
        renderer.render()
        rest = await response.content.read()
    assert first + rest == before
    after = whole_bodies(renderer)[(False, False)]
    assert len(after) > len(before)
    status, _, body = await get(url + "/metrics")
    assert status == 200 and body == after
