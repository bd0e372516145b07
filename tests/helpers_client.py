"""Test helpers for the API client: a reference signature check and a scriptable fake server.

The reference follows ApiServer.verifyRequest's Java code step by step and shares nothing with
exporter.signing, so the two can be checked against each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from ssl import SSLContext
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

# --- reference signing -----------------------------------------------------------------------

_JAVA_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_"
_HEX = "0123456789ABCDEF"


def ref_urlencode(value: str) -> str:
    """URLEncoder.encode(value, "UTF-8").replaceAll("\\+", "%20"), one byte at a time."""
    out = []
    for byte in value.encode("utf-8", "replace"):
        if chr(byte) in _JAVA_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")  # what URLEncoder does; replaced below, like the server does
        else:
            out.append("%" + _HEX[byte >> 4] + _HEX[byte & 15])
    return "".join(out).replace("+", "%20")


def utf16_units(name: str) -> list[int]:
    """Java's String order compares these."""
    units: list[int] = []
    for ch in name:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            units += [0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)]
        else:
            units.append(cp)
    return units


def ref_signature(params: dict[str, str], secret: str) -> str:
    names = sorted((n for n in params if n.lower() != "signature"), key=utf16_units)
    query = "&".join(n + "=" + ref_urlencode(params[n]) for n in names).lower()
    mac = hmac.new(secret.encode("utf-8"), query.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def signature_problem(params: dict[str, str], api_key: str, secret: str) -> str | None:
    """What the server would refuse about a signed request, or None if it verifies."""
    if params.get("apiKey") != api_key:
        return "unknown api key"
    if params.get("signature") != ref_signature(params, secret):
        return "bad signature"
    if params.get("signatureVersion") == "3":
        try:
            expires = datetime.strptime(params.get("expires", ""), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return "unparseable expires"
        if expires.timestamp() < time.time():
            return "expired"
    return None


# --- fake server ------------------------------------------------------------------------------

JSON_TYPE = "application/json; charset=UTF-8"


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    raw_query: str
    params: dict[str, str]  # query and form, decoded
    cookies: dict[str, str]
    at: float  # time.monotonic()
    user_agent: str = ""

    @property
    def command(self) -> str:
        return self.params.get("command", "")


Handler = Callable[[Seen], "web.StreamResponse | Awaitable[web.StreamResponse]"]


def answer(
    command: str, inner: Any, *, status: int = 200, content_type: str = JSON_TYPE
) -> web.Response:
    body = json.dumps({command.lower() + "response": inner}).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


def error(
    command: str,
    code: int,
    text: str,
    *,
    cserrorcode: int | None = None,
    key: str | None = None,
) -> web.Response:
    inner: dict[str, Any] = {"uuidList": [], "errorcode": code, "errortext": text}
    if cserrorcode is not None:
        inner["cserrorcode"] = cserrorcode
    body = json.dumps({key or command.lower() + "response": inner}).encode()
    return web.Response(status=code, body=body, headers={"Content-Type": JSON_TYPE})


def raw(status: int, body: bytes, content_type: str) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


@dataclass
class FakeCloud:
    """`/client/api` on loopback; each request goes to `handler` after the signature check.

    Signed requests that do not verify are answered 401 as CloudStack would, so every test
    that gets a successful answer has also proven its signature.
    """

    api_key: str
    secret_key: str
    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, ssl_context: SSLContext | None = None) -> FakeCloud:
        app = web.Application()
        app.router.add_route("*", "/client/api", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/client/api"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_query = request.rel_url.raw_query_string
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if request.method == "POST":
            params.update(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        seen = Seen(
            request.method,
            raw_query,
            params,
            dict(request.cookies),
            time.monotonic(),
            request.headers.get("User-Agent", ""),
        )
        self.seen.append(seen)
        if "apiKey" in params:
            problem = signature_problem(params, self.api_key, self.secret_key)
            if problem is not None:
                return error(
                    seen.command,
                    401,
                    f"unable to verify user credentials and/or request signature ({problem})",
                )
        result = self.handler(seen)
        if inspect.isawaitable(result):
            result = await result
        return result
