"""The simulator as a running server: the aiohttp application, its listeners, the HTTP side of
`/client/api` (parameters, cookies, content types, XML) and the fault injection that sits in
front of it.

`Simulator` is what tests, the demo and `python -m cloudstack_simulator` start. The control API
(`/sim/...`, see control.py and README.md) is served on the API port and, optionally, on a
port of its own: with a separate control port an outage closes the API listener (connection
refused) while the simulator stays controllable; without one, an outage resets connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, timezone
from typing import Any

from aiohttp import web

from cloudstack_simulator import control, events, events_control, faults
from cloudstack_simulator.accounts import Directory
from cloudstack_simulator.api import COMMANDS, CloudStackApi, response_name
from cloudstack_simulator.clock import SimClock
from cloudstack_simulator.responses import (
    JSON_CONTENT_TYPE,
    XML_CONTENT_TYPE,
    ApiFailure,
    to_json,
    to_xml,
)
from cloudstack_simulator.store import JobStore
from cloudstack_simulator.workload import Workload

log = logging.getLogger("cloudstack_simulator")

API_PATH = "/client/api"


@dataclass
class SimulatorConfig:
    directory: Directory = field(default_factory=Directory)
    timezone: timezone = UTC
    job_expire: float = 1440 * 60  # job.expire.minutes, in seconds
    version: str = "4.19.0.0"
    json_content_type: str = JSON_CONTENT_TYPE
    page_size: int = 500  # default.page.size
    seed: int | None = 0
    management_servers: tuple[str, ...] = ("ms-1",)
    events: events.EventSettings = field(default_factory=events.EventSettings)


class Simulator:
    """A CloudStack management server for the async-job APIs, with a control API."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = SimClock(self.config.timezone)
        self.directory = self.config.directory
        self.store = JobStore(
            self.clock,
            expire=self.config.job_expire,
            version=self.config.version,
            management_servers=self.config.management_servers,
            seed=self.config.seed,
        )
        self.api = CloudStackApi(
            store=self.store,
            directory=self.directory,
            clock=self.clock,
            page_size=self.config.page_size,
        )
        self.workload = Workload(self.store, self.directory, seed=self.config.seed)
        self.faults = faults.Faults()
        self.events = events.EventBus(self.store, self.config.events, seed=self.config.seed)
        self.json_content_type = self.config.json_content_type
        self._runner: web.AppRunner | None = None
        self._api_site: web.TCPSite | None = None
        self._control_runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._control_port: int | None = None
        self._outage_timer: asyncio.TimerHandle | None = None
        self._closing = asyncio.Event()

    # -- the application -------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("GET", API_PATH, self.handle_api)
        app.router.add_route("POST", API_PATH, self.handle_api)
        control.Control(self).add_to(app)
        events_control.add_routes(app, self)
        return app

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        params = await _parameters(request)
        command = params.get("command", "")
        counters = self.api.counters
        counters.total += 1
        counters.by_command[command] += 1
        if self.faults.active("outage") is not None:
            return _reset(request)
        latency, fault = self.faults.pick(command)
        if latency:
            # Stopping the simulator ends the wait, so a 40 s delay never holds up shutdown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), latency)
            if self._closing.is_set():
                return _reset(request)
        if fault is not None and fault.kind in ("reset", *faults.ANSWER_KINDS):
            counters.by_code["fault"] += 1
            return self._fault_answer(request, fault)
        json_wanted = params.get("response", "").lower() == "json"
        status, body, extra_headers = self._process(request, command, params)
        counters.by_code[str(status)] += 1
        if fault is not None and json_wanted:
            if fault.kind == "xml":
                return self._encode(status, body, json_wanted=False)
            if fault.kind == "truncated":
                data = faults.truncate(to_json(body))
                return web.Response(
                    status=status, body=data, content_type=None, headers=self._json_headers()
                )
            body = faults.corrupt(fault.kind, body)
        response = self._encode(status, body, json_wanted)
        for name, value in extra_headers:
            response.headers.add(name, value)
        return response

    def _process(
        self, request: web.Request, command: str, params: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """(status, body, extra headers) of one API request, as ApiServlet answers it."""
        default_name = response_name(command)
        try:
            if command == "login":
                if request.method != "POST":
                    raise ApiFailure(
                        405, "Please use HTTP POST to authenticate using this API", described=False
                    )
                answer, session_id, session_key = self.api.login(params)
                cookies = [
                    ("Set-Cookie", f"JSESSIONID={session_id}; Path=/client; HttpOnly"),
                    ("Set-Cookie", f"sessionkey={session_key}; HttpOnly"),
                ]
                self.api.counters.by_account[answer["loginresponse"]["account"]] += 1
                return 200, answer, cookies
            caller = self.api.authenticate(command, params, request.cookies.get("JSESSIONID"))
            self.api.counters.by_account[caller.account.name] += 1
            self.api.check_characters(params)
            lowered = {k.lower(): v for k, v in params.items()}
            return 200, self.api.execute(caller, command, lowered), []
        except ApiFailure as failure:
            headers = (
                [("X-Description", _header_text(failure.errortext))] if failure.described else []
            )
            return failure.errorcode, failure.body(default_name), headers

    def _json_headers(self) -> dict[str, str]:
        return {"Content-Type": self.json_content_type}

    def _encode(self, status: int, body: dict[str, Any], json_wanted: bool) -> web.Response:
        if json_wanted:
            return web.Response(status=status, body=to_json(body), headers=self._json_headers())
        return web.Response(
            status=status,
            body=to_xml(body, self.store.version),
            headers={"Content-Type": XML_CONTENT_TYPE},
        )

    def _fault_answer(self, request: web.Request, fault: faults.Fault) -> web.StreamResponse:
        if fault.kind == "reset":
            return _reset(request)
        if fault.kind == "proxy_502":
            return web.Response(status=502, text=faults.PROXY_502_PAGE, content_type="text/html")
        if fault.kind == "http_error":
            page = f"<html><body><h1>{fault.status} Service Unavailable</h1></body></html>"
            return web.Response(status=fault.status, text=page, content_type="text/html")
        if fault.kind == "empty":
            return web.Response(status=200, body=b"", headers=self._json_headers())
        # not_json: a 200 with a JSON content type and a body that is not JSON.
        return web.Response(
            status=200, body=b"Service temporarily unavailable", headers=self._json_headers()
        )

    # -- listeners -------------------------------------------------------------------------
    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, control_port: int | None = None
    ) -> None:
        """Listen on host:port (0: any free port); control_port adds a control-only listener."""
        self._host = host
        self._closing.clear()
        await self.events.start()
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await self._runner.setup()
        self._api_site = web.TCPSite(self._runner, host, port)
        await self._api_site.start()
        self._port = _bound_port(self._api_site)
        if control_port is not None:
            control_app = web.Application()
            control.Control(self).add_to(control_app)
            events_control.add_routes(control_app, self)
            self._control_runner = web.AppRunner(
                control_app, access_log=None, handle_signals=False, shutdown_timeout=5.0
            )
            await self._control_runner.setup()
            site = web.TCPSite(self._control_runner, host, control_port)
            await site.start()
            self._control_port = _bound_port(site)

    async def stop(self) -> None:
        self._closing.set()
        await self.workload.stop()
        await self.events.stop()
        if self._outage_timer is not None:
            self._outage_timer.cancel()
        for runner in (self._control_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._control_runner = None

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self._host)}:{self._port}"

    @property
    def url(self) -> str:
        """The API endpoint, `http://host:port/client/api`."""
        return self.base_url + API_PATH

    @property
    def control_url(self) -> str:
        """Where `/sim/...` lives; the control port when there is one."""
        port = self._control_port if self._control_port is not None else self._port
        return f"http://{_url_host(self._host)}:{port}/sim"

    # -- outage ----------------------------------------------------------------------------
    async def start_outage(self, seconds: float = 0.0) -> faults.Fault:
        """Refuse connections (or reset them, without a control port) until cleared."""
        fault = self.faults.active("outage") or self.faults.add(
            {"kind": "outage", "seconds": seconds}
        )
        if self._control_port is not None and self._api_site is not None:
            await self._api_site.stop()
            self._api_site = None
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._outage_timer = loop.call_later(
                seconds, lambda: loop.create_task(self.end_outage())
            )
        return fault

    async def end_outage(self) -> None:
        outage = self.faults.active("outage")
        while outage is not None:
            self.faults.remove(outage.id)
            outage = self.faults.active("outage")
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        if self._api_site is None and self._runner is not None:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            self._api_site = site

    async def clear_faults(self) -> int:
        had_outage = self.faults.active("outage") is not None
        count = self.faults.clear()
        if had_outage:
            await self.end_outage()
        return count


async def _parameters(request: web.Request) -> dict[str, str]:
    """Query and form parameters as ApiServlet.processRequestInContext reads them.

    It takes getParameterMap() and reads the first value of each; utf8Fixup then re-reads the
    query string pair by pair, each one replacing the entry, so a name repeated in the query
    gets its last value and the query wins over the form. A form-only name keeps its first.
    The same map is signed and used.
    """
    params: dict[str, str] = {}
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        for key, field_value in form.items():
            if isinstance(field_value, str):
                params.setdefault(key, field_value)
    for key, value in request.query.items():
        params[key] = value
    return params


def _header_text(text: str) -> str:
    """A header value as Jetty writes one: CR and LF become spaces (putSanitisedValue), and
    what ISO-8859-1 text cannot carry over aiohttp's UTF-8 headers becomes `?`."""
    return "".join(" " if c in "\r\n" else c if " " <= c <= "~" or c == "\t" else "?" for c in text)


def _reset(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP reset, answering nothing."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp discards a response for a closed transport.
    return web.Response(status=500)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio Server here; no public accessor
    assert isinstance(server, asyncio.base_events.Server)
    return int(server.sockets[0].getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["API_PATH", "COMMANDS", "Simulator", "SimulatorConfig"]
