"""The API client over real HTTP on loopback, against small scripted servers."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from helpers_client import (
    JSON_TYPE,
    FakeCloud,
    Handler,
    Seen,
    answer,
    error,
    raw,
)
from ports import free_port

from exporter.client import ClientSettings, CloudStackClient
from exporter.errors import (
    APIError,
    BadResponse,
    CloudStackError,
    JobNotFound,
    LoginFailed,
    ParameterError,
    PermissionDenied,
    ServerError,
    Throttled,
    TransportError,
    Unauthorized,
)

API_KEY = "AKEY-plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM"
SECRET_KEY = "SKEY-VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87"
USERNAME = "ops-reader"
PASSWORD = "PASS-correct horse battery staple"
SESSION_KEY = "SESS-ZmFrZXNlc3Npb25rZXkxMjM0NTY3ODkw"

Observed = list[tuple[str, str, float]]


def ok(seen: Seen) -> web.Response:
    return answer(seen.command, {})


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[FakeCloud]]]:
    started: list[FakeCloud] = []

    async def start(handler: Handler = ok, ssl_context: ssl.SSLContext | None = None) -> FakeCloud:
        cloud = await FakeCloud(API_KEY, SECRET_KEY, handler).start(ssl_context)
        started.append(cloud)
        return cloud

    yield start
    for cloud in started:
        await cloud.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., CloudStackClient]]:
    made: list[CloudStackClient] = []

    def make(url: str, **kwargs: Any) -> CloudStackClient:
        if "username" not in kwargs:
            kwargs.setdefault("api_key", API_KEY)
            kwargs.setdefault("secret_key", SECRET_KEY)
        observer = kwargs.pop("observer", None)
        client = CloudStackClient(ClientSettings(url, **kwargs), observer=observer)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


Start = Callable[..., Awaitable[FakeCloud]]
Make = Callable[..., CloudStackClient]


# --- signing on the wire ----------------------------------------------------------------------


async def test_signed_request_verifies_on_the_server(servers: Start, clients: Make) -> None:
    cloud = await servers(lambda s: answer(s.command, {"count": 0}))
    client = clients(cloud.url)
    before = time.time()
    result = await client.call("listAsyncJobs", {"keyword": "a~b c*/é+=&", "listAll": True})
    assert result == {"count": 0}
    (seen,) = cloud.seen
    assert seen.method == "GET"
    assert seen.user_agent.startswith("cloudstack-job-exporter/")
    # The fake answered 401 had the signature not verified; check the parts as well.
    assert seen.params["apiKey"] == API_KEY
    assert seen.params["signatureVersion"] == "3"
    assert seen.params["response"] == "json"
    assert seen.params["keyword"] == "a~b c*/é+=&"
    assert seen.params["listall"] == "true"  # names go out in lower case
    expires = time.mktime(time.strptime(seen.params["expires"], "%Y-%m-%dT%H:%M:%S+0000"))
    expires -= time.timezone  # mktime reads local time; the string is UTC
    assert before + 299 <= expires <= time.time() + 301
    # On the wire: the signature's + / = are percent-encoded, and so is "~".
    wire = dict(part.split("=", 1) for part in seen.raw_query.split("&"))
    assert re.fullmatch(r"[A-Za-z0-9%]+", wire["signature"])
    assert wire["keyword"] == "a%7Eb%20c*%2F%C3%A9%2B%3D%26"


async def test_signature_lifetime_is_configurable(servers: Start, clients: Make) -> None:
    cloud = await servers()
    await clients(cloud.url, signature_lifetime=60).call("listAsyncJobs")
    expires = time.strptime(cloud.seen[0].params["expires"], "%Y-%m-%dT%H:%M:%S+0000")
    remaining = time.mktime(expires) - time.timezone - time.time()
    assert 55 <= remaining <= 61


async def test_wrong_secret_is_refused_by_the_server(servers: Start, clients: Make) -> None:
    cloud = await servers()
    client = clients(cloud.url, secret_key="not-the-secret")
    with pytest.raises(Unauthorized) as info:
        await client.call("listAsyncJobs")
    assert info.value.code == "401"
    assert "secret_key" in str(info.value)  # the hint names what to check
    assert len(cloud.seen) == 1  # no retry with keys: it cannot help


async def test_parameter_values_are_sent_as_text(servers: Start, clients: Make) -> None:
    cloud = await servers()
    client = clients(cloud.url)
    await client.call(
        "listAsyncJobs",
        {"ListAll": False, "ids": ["a", "b"], "page": 2, "ratio": 0.5, "account": None},
    )
    params = cloud.seen[0].params
    assert params["listall"] == "false"
    assert params["ids"] == "a,b"
    assert params["page"] == "2"
    assert params["ratio"] == "0.5"
    assert "account" not in params


# --- answers that work ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [JSON_TYPE, "text/javascript; charset=UTF-8", "text/html", ""]
)
async def test_json_is_read_whatever_the_content_type(
    servers: Start, clients: Make, content_type: str
) -> None:
    job = {"jobid": "j-1", "jobstatus": 0}
    cloud = await servers(lambda s: answer(s.command, job, content_type=content_type))
    assert await clients(cloud.url).query_async_job_result("j-1") == job
    assert cloud.seen[0].params["jobid"] == "j-1"


async def test_empty_list_answer(servers: Start, clients: Make) -> None:
    cloud = await servers(lambda s: answer(s.command, {}))
    client = clients(cloud.url)
    assert await client.call("listAsyncJobs") == {}
    assert await client.list_async_jobs() == []


def paging_server(jobs: list[dict[str, Any]], count: object = "exact") -> Handler:
    def handle(seen: Seen) -> web.Response:
        page, size = int(seen.params["page"]), int(seen.params["pagesize"])
        chunk = jobs[(page - 1) * size : page * size]
        inner: dict[str, Any] = {}
        if count == "exact":
            inner["count"] = len(jobs)
        elif count is not None:
            inner["count"] = count
        if chunk:
            inner["asyncjobs"] = chunk
        return answer(seen.command, inner if (chunk or count is not None) else {})

    return handle


JOBS = [{"jobid": f"j-{i}", "jobstatus": 0} for i in range(5)]


@pytest.mark.parametrize("count", ["exact", "5", 5.0])
async def test_paging_collects_every_page(servers: Start, clients: Make, count: object) -> None:
    cloud = await servers(paging_server(JOBS, count))
    jobs = await clients(cloud.url).list_async_jobs(pagesize=2)
    assert jobs == JOBS
    assert [s.params["page"] for s in cloud.seen] == ["1", "2", "3"]
    assert {s.params["pagesize"] for s in cloud.seen} == {"2"}


@pytest.mark.parametrize(("total", "requests"), [(5, 3), (4, 3), (0, 1)])
async def test_paging_without_count_stops_on_a_short_or_empty_page(
    servers: Start, clients: Make, total: int, requests: int
) -> None:
    cloud = await servers(paging_server(JOBS[:total], count=None))
    assert await clients(cloud.url).list_async_jobs(pagesize=2) == JOBS[:total]
    assert len(cloud.seen) == requests


async def test_paging_stops_when_the_list_shrinks(servers: Start, clients: Make) -> None:
    # count said 5, but two jobs finished before page 2: page 3 comes back empty.
    def handle(seen: Seen) -> web.Response:
        pages = {"1": JOBS[:2], "2": JOBS[4:5]}
        chunk = pages.get(seen.params["page"], [])
        return answer(seen.command, {"count": 5, "asyncjobs": chunk} if chunk else {})

    cloud = await servers(handle)
    assert await clients(cloud.url).list_async_jobs(pagesize=2) == [*JOBS[:2], JOBS[4]]
    assert len(cloud.seen) == 3


async def test_paging_refuses_a_server_that_ignores_page(servers: Start, clients: Make) -> None:
    cloud = await servers(lambda s: answer(s.command, {"count": 100, "asyncjobs": JOBS[:2]}))
    with pytest.raises(BadResponse, match="ignores paging"):
        await clients(cloud.url).list_async_jobs(pagesize=2)
    assert len(cloud.seen) == 2


async def test_list_items_must_be_a_list(servers: Start, clients: Make) -> None:
    cloud = await servers(lambda s: answer(s.command, {"count": 1, "asyncjobs": {"jobid": "x"}}))
    with pytest.raises(BadResponse, match="asyncjobs"):
        await clients(cloud.url).list_async_jobs()


@pytest.mark.parametrize("pagesize", [0, 501])
async def test_pagesize_out_of_range_is_refused(
    servers: Start, clients: Make, pagesize: int
) -> None:
    cloud = await servers()
    with pytest.raises(ValueError, match="pagesize"):
        await clients(cloud.url).list_async_jobs(pagesize=pagesize)
    assert cloud.seen == []


async def test_list_async_jobs_filters(servers: Start, clients: Make) -> None:
    cloud = await servers()
    await clients(cloud.url).list_async_jobs(
        account="ops", domain_id="d-1", keyword="VmWork", startdate="2026-04-13"
    )
    params = cloud.seen[0].params
    assert params["command"] == "listAsyncJobs"
    assert params["listall"] == "true"
    assert params["account"] == "ops"
    assert params["domainid"] == "d-1"
    assert params["keyword"] == "VmWork"
    assert params["startdate"] == "2026-04-13"
    assert params["page"] == "1"
    assert params["pagesize"] == "500"


# --- error answers ----------------------------------------------------------------------------

UNKNOWN_JOB = (
    "Unable to execute API command queryasyncjobresult due to invalid value. Invalid parameter "
    "jobid value=j-9 due to incorrect long value format, or entity does not exist or due to "
    "incorrect parameter annotation for the field in api cmd class."
)


@pytest.mark.parametrize(
    ("command", "code", "cserrorcode", "text", "expected"),
    [
        ("listAsyncJobs", 401, None, "unable to verify user credentials", Unauthorized),
        ("listAsyncJobs", 405, 9999, "method not allowed", APIError),
        ("listAsyncJobs", 430, 4350, "malformed parameter", ParameterError),
        ("listAsyncJobs", 431, 4350, "pagesize is too large", ParameterError),
        ("queryAsyncJobResult", 431, 4350, UNKNOWN_JOB, JobNotFound),
        ("listAsyncJobs", 432, 9999, "unsupported action", APIError),
        ("queryAsyncJobResult", 531, 4365, "Account ops is not authorized", PermissionDenied),
        ("listAsyncJobs", 530, 4250, "internal error", ServerError),
        ("listAsyncJobs", 533, 4250, "insufficient capacity", ServerError),
        ("listAsyncJobs", 503, None, "maintenance", ServerError),
    ],
)
async def test_error_bodies_map_to_typed_errors(
    servers: Start,
    clients: Make,
    command: str,
    code: int,
    cserrorcode: int | None,
    text: str,
    expected: type[CloudStackError],
) -> None:
    cloud = await servers(lambda s: error(s.command, code, text, cserrorcode=cserrorcode))
    observed: Observed = []
    client = clients(cloud.url, observer=lambda *a: observed.append(a))
    params = {"jobid": "j-9"} if command == "queryAsyncJobResult" else {}
    with pytest.raises(CloudStackError) as info:
        await client.call(command, params)
    exc = info.value
    assert type(exc) is expected
    assert (exc.code, exc.errorcode, exc.cserrorcode, exc.errortext) == (
        str(code),
        code,
        cserrorcode,
        text,
    )
    assert exc.command == command
    assert text in str(exc)
    assert [(c, k) for c, k, _ in observed] == [(command, str(code))]


async def test_unknown_command_answers_with_errorresponse(servers: Start, clients: Make) -> None:
    cloud = await servers(
        lambda s: error(s.command, 432, "The given command does not exist", key="errorresponse")
    )
    with pytest.raises(APIError) as info:
        await clients(cloud.url).call("listAsyncJobz")
    assert info.value.code == "432"
    assert info.value.errortext == "The given command does not exist"


async def test_query_async_job_result_of_purged_job(servers: Start, clients: Make) -> None:
    cloud = await servers(lambda s: error(s.command, 431, UNKNOWN_JOB, cserrorcode=4350))
    with pytest.raises(JobNotFound):
        await clients(cloud.url).query_async_job_result("j-9")


# --- throttling -------------------------------------------------------------------------------


def throttle_then_ok(throttles: int, text: str = "please retry after 200 ms.") -> Handler:
    answered = 0

    def handle(seen: Seen) -> web.Response:
        nonlocal answered
        answered += 1
        if answered <= throttles:
            return error(seen.command, 429, f"The API limit of the account is reached, {text}")
        return answer(seen.command, {"count": 0})

    return handle


async def test_throttled_request_waits_and_retries(servers: Start, clients: Make) -> None:
    cloud = await servers(throttle_then_ok(1))
    observed: Observed = []
    client = clients(cloud.url, observer=lambda *a: observed.append(a))
    assert await client.call("listAsyncJobs") == {"count": 0}
    first, second = cloud.seen
    assert second.at - first.at >= 0.2
    assert [k for _, k, _ in observed] == ["429", "200"]


async def test_throttling_pauses_every_request_of_the_client(servers: Start, clients: Make) -> None:
    throttled = asyncio.Event()

    def handle(seen: Seen) -> web.Response:
        if len(cloud.seen) == 1:
            throttled.set()
            return error(seen.command, 429, "please retry after 300 ms.")
        return answer(seen.command, {})

    cloud = await servers(handle)
    client = clients(cloud.url)
    first = asyncio.create_task(client.call("listAsyncJobs"))
    await throttled.wait()
    await asyncio.sleep(0.05)  # let the client read the 429
    await client.call("queryAsyncJobResult", {"jobid": "j-1"})
    await first
    assert len(cloud.seen) == 3
    assert all(s.at - cloud.seen[0].at >= 0.3 for s in cloud.seen[1:])


async def test_throttled_after_three_retries(servers: Start, clients: Make) -> None:
    cloud = await servers(throttle_then_ok(99, "please retry after [10] ms."))
    with pytest.raises(Throttled) as info:
        await clients(cloud.url).call("listAsyncJobs")
    assert len(cloud.seen) == 4
    assert info.value.retry_after == pytest.approx(0.01)
    assert info.value.code == "429"


async def test_a_very_long_throttle_wait_is_not_sat_out(servers: Start, clients: Make) -> None:
    cloud = await servers(throttle_then_ok(99, "please retry after 600000 ms."))
    with pytest.raises(Throttled) as info:
        await clients(cloud.url).call("listAsyncJobs")
    assert len(cloud.seen) == 1
    assert info.value.retry_after == 600


# --- answers that cannot be read ----------------------------------------------------------------

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
XML = b'<?xml version="1.0"?><listasyncjobsresponse cloud-stack-version="4.19"/>'


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "code", "words"),
    [
        (200, HTML_502, "text/html", BadResponse, "error", "HTML"),
        (200, XML, "text/xml", BadResponse, "error", "XML"),
        (200, b'{"listasyncjobsresponse": {"count": 3, "asyn', JSON_TYPE, BadResponse, "error", ""),
        (200, b"", JSON_TYPE, BadResponse, "error", "empty"),
        (200, b"[1, 2]", JSON_TYPE, BadResponse, "error", "shape"),
        (200, b'{"listasyncjobsresponse": [1]}', JSON_TYPE, BadResponse, "error", "shape"),
        (200, b'{"somethingelse": {}, "more": {}}', JSON_TYPE, BadResponse, "error", "shape"),
        (502, HTML_502, "text/html", ServerError, "502", "HTML"),
        (404, b"Not Found", "text/plain", APIError, "404", "not JSON"),
        (530, b"", "", ServerError, "530", "empty"),
    ],
)
async def test_unreadable_bodies(
    servers: Start,
    clients: Make,
    status: int,
    body: bytes,
    content_type: str,
    expected: type[CloudStackError],
    code: str,
    words: str,
) -> None:
    cloud = await servers(lambda s: raw(status, body, content_type))
    observed: Observed = []
    client = clients(cloud.url, observer=lambda *a: observed.append(a))
    with pytest.raises(CloudStackError) as info:
        await client.call("listAsyncJobs")
    assert type(info.value) is expected
    assert info.value.code == code
    assert words in str(info.value)
    assert [k for _, k, _ in observed] == [code]


async def test_redirect_is_not_followed(servers: Start, clients: Make) -> None:
    cloud = await servers(
        lambda s: web.Response(status=302, headers={"Location": "https://sso.example.com/?x=1"})
    )
    with pytest.raises(APIError) as info:
        await clients(cloud.url).call("listAsyncJobs")
    assert info.value.code == "302"
    assert "sso.example.com" in str(info.value) and "x=1" not in str(info.value)
    assert len(cloud.seen) == 1


# --- transport failures -----------------------------------------------------------------------


async def broken_server(reply: bytes) -> tuple[asyncio.Server, str]:
    """A raw TCP server that reads the request, writes `reply` and hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/client/api"


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"", "closed the connection"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"listasyncjobsresponse"', "cut short"),
    ],
)
async def test_connection_dropped(clients: Make, reply: bytes, words: str) -> None:
    server, url = await broken_server(reply)
    observed: Observed = []
    try:
        with pytest.raises(TransportError, match=words) as info:
            await clients(url, observer=lambda *a: observed.append(a)).call("listAsyncJobs")
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.code == "error"
    assert [k for _, k, _ in observed] == ["error"]


async def test_connection_refused(clients: Make) -> None:
    port = free_port()
    with pytest.raises(TransportError, match="cannot connect"):
        await clients(f"http://127.0.0.1:{port}/client/api").call("listAsyncJobs")


async def test_timeout(servers: Start, clients: Make) -> None:
    async def slow(seen: Seen) -> web.Response:
        await asyncio.sleep(3)
        return answer(seen.command, {})

    cloud = await servers(slow)
    observed: Observed = []
    client = clients(cloud.url, timeout=0.2, observer=lambda *a: observed.append(a))
    with pytest.raises(TransportError, match=r"within 0\.2s"):
        await client.call("listAsyncJobs")
    assert [k for _, k, _ in observed] == ["error"]


# --- limits -----------------------------------------------------------------------------------


async def test_concurrency_is_limited(servers: Start, clients: Make) -> None:
    in_flight = peak = 0

    async def handle(seen: Seen) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return answer(seen.command, {})

    cloud = await servers(handle)
    client = clients(cloud.url, max_concurrency=2)
    await asyncio.gather(*(client.call("listAsyncJobs") for _ in range(6)))
    assert len(cloud.seen) == 6
    assert peak == 2


async def test_request_rate_is_limited(servers: Start, clients: Make) -> None:
    cloud = await servers()
    client = clients(cloud.url, max_requests_per_second=20.0, max_concurrency=4)
    await asyncio.gather(*(client.call("listAsyncJobs") for _ in range(4)))
    arrivals = sorted(s.at for s in cloud.seen)
    assert arrivals[-1] - arrivals[0] >= 3 * 0.05 - 0.02


# --- session login ----------------------------------------------------------------------------


class SessionServer:
    """Login plus calls that need the session key and cookie; `expire()` ends sessions."""

    def __init__(self) -> None:
        self.logins = 0
        self.key = ""
        self.refuse_all = False

    def expire(self) -> None:
        self.key = "expired"

    def __call__(self, seen: Seen) -> web.Response:
        if seen.command == "login":
            assert seen.method == "POST"
            if (seen.params.get("username"), seen.params.get("password")) != (USERNAME, PASSWORD):
                return error(
                    "login", 531, "Failed to authenticate user ops-reader", cserrorcode=4365
                )
            self.logins += 1
            self.key = f"{SESSION_KEY}-{self.logins}"
            resp = answer("login", {"sessionkey": self.key, "username": USERNAME})
            resp.set_cookie("JSESSIONID", f"J{self.logins}", path="/client", httponly=True)
            resp.set_cookie("sessionkey", self.key, path="/client")
            return resp
        if (
            self.refuse_all
            or seen.params.get("sessionkey") != self.key
            or "JSESSIONID" not in seen.cookies
        ):
            return error(seen.command, 401, "unable to verify user credentials")
        return answer(seen.command, {"count": 0})


async def test_session_login_and_calls(servers: Start, clients: Make) -> None:
    session = SessionServer()
    cloud = await servers(session)
    client = clients(cloud.url, username=USERNAME, password=PASSWORD, domain="/ROOT/ops")
    assert await client.call("listAsyncJobs") == {"count": 0}
    assert await client.call("listAsyncJobs") == {"count": 0}
    assert session.logins == 1
    login, *calls = cloud.seen
    assert login.params == {
        "command": "login",
        "username": USERNAME,
        "password": PASSWORD,
        "domain": "/ROOT/ops",
        "response": "json",
    }
    assert login.raw_query == ""  # the password goes in the body, not the URL
    for call in calls:
        assert call.params["sessionkey"] == session.key
        assert "apiKey" not in call.params and "signature" not in call.params


async def test_expired_session_logs_in_again_once(servers: Start, clients: Make) -> None:
    session = SessionServer()
    cloud = await servers(session)
    observed: Observed = []
    client = clients(
        cloud.url, username=USERNAME, password=PASSWORD, observer=lambda *a: observed.append(a)
    )
    await client.call("listAsyncJobs")
    session.expire()
    assert await client.call("listAsyncJobs") == {"count": 0}
    assert session.logins == 2
    assert [(c, k) for c, k, _ in observed] == [
        ("login", "200"),
        ("listAsyncJobs", "200"),
        ("listAsyncJobs", "401"),
        ("login", "200"),
        ("listAsyncJobs", "200"),
    ]


async def test_concurrent_401s_log_in_once(servers: Start, clients: Make) -> None:
    session = SessionServer()
    cloud = await servers(session)
    client = clients(cloud.url, username=USERNAME, password=PASSWORD)
    await client.call("listAsyncJobs")
    session.expire()
    await asyncio.gather(*(client.call("listAsyncJobs") for _ in range(4)))
    assert session.logins == 2


async def test_session_refused_after_new_login_fails(servers: Start, clients: Make) -> None:
    session = SessionServer()
    session.refuse_all = True
    cloud = await servers(session)
    client = clients(cloud.url, username=USERNAME, password=PASSWORD)
    with pytest.raises(Unauthorized):
        await client.call("listAsyncJobs")
    assert session.logins == 2
    assert [s.command for s in cloud.seen] == ["login", "listAsyncJobs"] * 2


async def test_bad_login_is_a_login_failure_not_a_job_permission(
    servers: Start, clients: Make
) -> None:
    cloud = await servers(SessionServer())
    client = clients(cloud.url, username=USERNAME, password="wrong password")
    with pytest.raises(LoginFailed, match="check username, password and domain") as info:
        await client.call("queryAsyncJobResult", {"jobid": "x"})
    assert isinstance(info.value, PermissionDenied) and info.value.code == "531"
    assert [s.command for s in cloud.seen] == ["login"]


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    return ca, server_ctx


async def test_tls_unknown_ca_is_refused(
    servers: Start, clients: Make, tls: tuple[trustme.CA, ssl.SSLContext]
) -> None:
    cloud = await servers(ssl_context=tls[1])
    with pytest.raises(TransportError, match=r"TLS certificate of 127\.0\.0\.1 not accepted"):
        await clients(cloud.url).call("listAsyncJobs")
    assert cloud.seen == []


async def test_tls_with_ca_file(
    servers: Start, clients: Make, tls: tuple[trustme.CA, ssl.SSLContext], tmp_path: Path
) -> None:
    cloud = await servers(ssl_context=tls[1])
    ca_file = tmp_path / "ca.pem"
    tls[0].cert_pem.write_to_path(str(ca_file))
    assert await clients(cloud.url, ca_file=str(ca_file)).call("listAsyncJobs") == {}


async def test_tls_insecure_works_and_warns(
    servers: Start,
    clients: Make,
    tls: tuple[trustme.CA, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloud = await servers(ssl_context=tls[1])
    with caplog.at_level(logging.WARNING, logger="exporter.client"):
        client = clients(cloud.url, verify_tls=False)
        assert await client.call("listAsyncJobs") == {}
        assert await client.call("listAsyncJobs") == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["TLS verification disabled for 127.0.0.1"]


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ca_file .*missing\.pem"):
        CloudStackClient(
            ClientSettings(
                "https://127.0.0.1/client/api",
                api_key=API_KEY,
                secret_key=SECRET_KEY,
                ca_file=str(tmp_path / "missing.pem"),
            )
        )


# --- no secret anywhere -----------------------------------------------------------------------


async def test_no_secret_in_errors_or_logs(
    servers: Start,
    clients: Make,
    tls: tuple[trustme.CA, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[CloudStackError] = []
    clouds: list[FakeCloud] = []

    async def start(handler: Handler = ok, ssl_context: ssl.SSLContext | None = None) -> str:
        clouds.append(await servers(handler, ssl_context))
        return clouds[-1].url

    async def failing(client: CloudStackClient) -> None:
        with pytest.raises(CloudStackError) as info:
            await client.call("listAsyncJobs", {"keyword": "x"})
        failures.append(info.value)

    def echo(status: int) -> Handler:
        # A server that repeats everything it received in its error text.
        text = "refused {} {} (please retry after 10 ms)"
        return lambda s: error(s.command, status, text.format(s.raw_query, s.params))

    async def slow(seen: Seen) -> web.Response:
        await asyncio.sleep(3)
        return answer(seen.command, {})

    for status in (401, 431, 530, 429):
        await failing(clients(await start(echo(status))))
    await failing(clients(await start(lambda s: raw(502, HTML_502, "text/html"))))
    await failing(clients(await start(slow), timeout=0.1))
    server, url = await broken_server(b"")
    await failing(clients(url))
    server.close()
    await failing(clients(await start(ssl_context=tls[1])))
    url = await start(SessionServer())
    await failing(clients(url, username=USERNAME, password="wrong " + PASSWORD))
    session = SessionServer()
    session.refuse_all = True
    url = await start(session)
    await failing(clients(url, username=USERNAME, password=PASSWORD))
    assert len(failures) == 10

    seen = [s for c in clouds for s in c.seen]
    signatures = [s.params["signature"] for s in seen if "signature" in s.params]
    session_keys = [s.params["sessionkey"] for s in seen if "sessionkey" in s.params]
    assert signatures and session_keys
    secrets = [API_KEY, SECRET_KEY, PASSWORD, *signatures, *session_keys]

    texts = [repr(clients(url, username=USERNAME, password=PASSWORD))]
    texts += [r.getMessage() for r in caplog.records]
    for exc in failures:
        chained: BaseException | None = exc
        while chained is not None:  # what a logged traceback would show
            assert isinstance(chained, CloudStackError)
            texts += [str(chained), repr(chained), chained.errortext]
            chained = None if chained.__suppress_context__ else chained.__context__
    assert len(caplog.records) >= 10
    for text in texts:
        for secret in secrets:
            assert secret not in text
        assert not re.search(r"(?i)(signature|apikey|sessionkey)=(?!\*\*\*)", text)


# --- misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "no credentials"),
        ({"api_key": API_KEY}, "both be set"),
        ({"username": USERNAME}, "both be set"),
        (
            {"api_key": API_KEY, "secret_key": SECRET_KEY, "username": "u", "password": "p"},
            "not both",
        ),
        ({"api_key": API_KEY, "secret_key": SECRET_KEY, "timeout": 0}, "timeout"),
        ({"api_key": API_KEY, "secret_key": SECRET_KEY, "max_concurrency": 0}, "concurrency"),
        (
            {"api_key": API_KEY, "secret_key": SECRET_KEY, "max_requests_per_second": 0},
            "max_requests_per_second",
        ),
        ({"api_key": API_KEY, "secret_key": SECRET_KEY, "signature_lifetime": 0}, "lifetime"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        CloudStackClient(ClientSettings("https://cloud.example.com/client/api", **kwargs))
    assert SECRET_KEY not in str(info.value) and API_KEY not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "cloud.example.com/client/api",
        "ftp://cloud.example.com/client/api",
        "https://admin:hunter2@cloud.example.com/client/api",
        "https://cloud.example.com/client/api?apiKey=x",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="url") as info:
        CloudStackClient(ClientSettings(url, api_key=API_KEY, secret_key=SECRET_KEY))
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("list AsyncJobs", {}),
        ("", {}),
        ("listAsyncJobs", {"apikey": "x"}),
        ("listAsyncJobs", {"Signature": "x"}),
        ("listAsyncJobs", {"sessionKey": "x"}),
        ("listAsyncJobs", {"command": "deleteAccount"}),
        ("listAsyncJobs", {"keyword": "a", "KEYWORD": "b"}),
        ("listAsyncJobs", {"keyword": object()}),
    ],
)
async def test_bad_calls_are_refused_before_sending(
    servers: Start, clients: Make, command: str, params: dict[str, Any]
) -> None:
    cloud = await servers()
    with pytest.raises(ValueError):
        await clients(cloud.url).call(command, params)
    assert cloud.seen == []


async def test_closed_client_refuses_calls(servers: Start) -> None:
    cloud = await servers()
    async with CloudStackClient(
        ClientSettings(cloud.url, api_key=API_KEY, secret_key=SECRET_KEY)
    ) as client:
        assert await client.call("listAsyncJobs") == {}
    with pytest.raises(RuntimeError, match="closed"):
        await client.call("listAsyncJobs")


async def test_a_failing_observer_does_not_break_calls(servers: Start, clients: Make) -> None:
    def observer(command: str, code: str, seconds: float) -> None:
        raise RuntimeError("observer bug")

    cloud = await servers()
    assert await clients(cloud.url, observer=observer).call("listAsyncJobs") == {}
