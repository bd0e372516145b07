"""The asyncio CloudStack API client: one aiohttp session per cloud.

It signs each request (API key + secret key) or logs in (username + password), pages through
list commands, turns every answer into a dict or a typed error from `exporter.errors`, and
keeps to the configured concurrency and request rate. A 429 pauses every request of the client
for the wait the server asks for, then the request is retried.

Error mapping, by the CloudStack error code (which is the HTTP status):
  401 Unauthorized, 429 Throttled, 430 ParameterError, 431 ParameterError (JobNotFound for
  queryAsyncJobResult), 531 PermissionDenied (LoginFailed to the login), other 5xx ServerError,
  anything else APIError.
  A non-2xx status whose body is not a CloudStack answer (say a proxy's HTML 502 page) maps by
  the HTTP status the same way, so `code` stays the status ("502") and the metric shows what the
  proxy said. A 2xx answer that cannot be read as the expected JSON is BadResponse ("error"),
  and so is any failure to get an answer at all TransportError ("error").

Messages and logs never carry the request URL's query string (it holds the API key and the
signature or the session key); aiohttp exceptions, whose text includes the URL, are replaced by
a description and not chained.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import orjson
from yarl import URL

from exporter import __version__
from exporter.config import Secret
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
from exporter.logs import mask_sensitive_params
from exporter.signing import java_urlencode, sign

log = logging.getLogger(__name__)

RequestObserver = Callable[[str, str, float], None]  # (command, code label, seconds)

MAX_PAGESIZE = 500  # CloudStack's default.page.size: larger pages are refused with 431
MAX_PAGES = 1000  # a server that never ends a listing must not keep us paging forever
THROTTLE_RETRIES = 3
MAX_THROTTLE_WAIT = 60.0  # a longer wait is the poller's business (it backs off), not ours
DEFAULT_THROTTLE_WAIT = 1.0  # api.throttling.interval's default, when the text gives none
_ERRORTEXT_LIMIT = 500

# Set by the client itself; a caller's parameter with one of these names would corrupt the
# request or its signature.
_RESERVED = frozenset(
    {"apikey", "signature", "signatureversion", "expires", "sessionkey", "command", "response"}
)
_COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_RETRY_AFTER = re.compile(
    r"retry\s+after\s*\[?\s*(\d+(?:\.\d+)?)\s*\]?\s*(ms|milliseconds?|s|secs?|seconds?)?",
    re.IGNORECASE,
)
_URL_QUERY = re.compile(r"(\w+://[^\s?'\"]*)\?[^\s'\"]*")


class ClientConfig(Protocol):
    """What the client reads from its settings; a validated CloudConfig is one."""

    @property
    def url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def secret_key(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def domain(self) -> str | None: ...
    @property
    def domain_id(self) -> str | None: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def signature_lifetime(self) -> float: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def max_requests_per_second(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Client settings made by hand (tests, scripts), checked as the configuration checks
    them; the service passes its CloudConfig instead."""

    url: str
    api_key: str | None = None
    secret_key: str | None = None
    username: str | None = None
    password: str | None = None
    domain: str | None = None
    domain_id: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 10.0
    signature_lifetime: float = 300.0
    max_concurrency: int = 4
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        keys = self.api_key is not None or self.secret_key is not None
        login = self.username is not None or self.password is not None
        if keys and login:
            raise ValueError("give either api_key/secret_key or username/password, not both")
        if keys and not (self.api_key and self.secret_key):
            raise ValueError("api_key and secret_key must both be set")
        if login and not (self.username and self.password):
            raise ValueError("username and password must both be set")
        if not keys and not login:
            raise ValueError("no credentials: set api_key/secret_key or username/password")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout!r}")
        if not self.signature_lifetime > 0:
            raise ValueError(
                f"signature_lifetime must be positive, got {self.signature_lifetime!r}"
            )
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency!r}")
        rate = self.max_requests_per_second
        if rate is not None and not rate > 0:
            raise ValueError(f"max_requests_per_second must be positive, got {rate!r}")


def _plain(value: str | None) -> str | None:
    """The value of a configuration Secret (or of a plain string)."""
    return value.reveal() if isinstance(value, Secret) else value


class CloudStackClient:
    """An API client for one CloudStack endpoint (`https://host/client/api`)."""

    def __init__(self, settings: ClientConfig, *, observer: RequestObserver | None = None) -> None:
        # The settings come validated: by the configuration loader (a CloudConfig) or by
        # ClientSettings itself.
        self.settings = settings
        self._url = _endpoint(settings.url)
        self._host = self._url.host or ""
        self._api_key = _plain(settings.api_key)
        self._secret_key = _plain(settings.secret_key)
        self._username = settings.username
        self._password = _plain(settings.password)
        self._domain = settings.domain
        self._domain_id = settings.domain_id
        self._timeout = settings.timeout
        self._signature_lifetime = settings.signature_lifetime
        self._max_concurrency = settings.max_concurrency
        rate = settings.max_requests_per_second
        self._interval = 1.0 / rate if rate else 0.0
        self._observer = observer
        self._ssl = self._tls_setting(settings.verify_tls, settings.ca_file)

        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._paused_until = 0.0  # loop time; set by a 429
        self._next_slot = 0.0  # loop time of the next request allowed by max_rate
        self._session_key: str | None = None
        self._login_generation = 0  # bumped by every login, so concurrent 401s log in once
        self._login_lock = asyncio.Lock()

    def _tls_setting(self, verify_tls: bool, ca_file: str | None) -> ssl.SSLContext | bool:
        if self._url.scheme != "https":
            return True  # unused for plain HTTP
        if not verify_tls:
            log.warning("TLS verification disabled for %s", self._host)
            return False
        if ca_file:
            try:
                return ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ValueError(
                    f"ca_file {ca_file}: cannot load CA certificates: {reason}"
                ) from None
        return True

    def __repr__(self) -> str:
        mode = "keys" if self._api_key else "session"
        return f"<CloudStackClient {self._url} auth={mode}>"

    async def __aenter__(self) -> CloudStackClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- public API ----------------------------------------------------------------------

    async def call(
        self,
        command: str,
        params: Mapping[str, object] | None = None,
        *,
        list_key: str | None = None,
    ) -> dict[str, Any]:
        """Run one API command; returns the inner `<command>response` object ({} if empty).

        With `list_key`, an answer whose `list_key` is present but not a list is unreadable
        (BadResponse, counted as `error` like any other unreadable body).
        """
        if not isinstance(command, str) or not _COMMAND.fullmatch(command):
            raise ValueError(f"not a CloudStack command name: {command!r}")
        base = _wire_params(params)
        base["command"] = command
        base["response"] = "json"
        throttled = 0
        relogged = False
        while True:
            generation = self._login_generation
            try:
                if self._username is not None and self._session_key is None:
                    await self._relogin(generation)
                    generation = self._login_generation
                return await self._attempt(command, base, list_key)
            except Throttled as exc:
                if throttled >= THROTTLE_RETRIES or exc.retry_after > MAX_THROTTLE_WAIT:
                    raise
                throttled += 1
                log.debug(
                    "%s throttled by %s; pausing %.3fs (retry %d of %d)",
                    command,
                    self._host,
                    exc.retry_after,
                    throttled,
                    THROTTLE_RETRIES,
                )
                self._pause(exc.retry_after)
            except Unauthorized:
                if self._username is None or relogged:
                    raise
                relogged = True
                log.info("session on %s refused; logging in again", self._host)
                await self._relogin(generation)

    async def list_all(
        self,
        command: str,
        params: Mapping[str, object] | None,
        *,
        item_key: str,
        pagesize: int = MAX_PAGESIZE,
    ) -> list[Any]:
        """Every item of a list command, page by page.

        Stops when `count` items have been collected or on an empty page; when the server
        gives no usable `count`, also on a short page.
        """
        items: list[Any] = []
        async for batch in self.list_pages(command, params, item_key=item_key, pagesize=pagesize):
            items.extend(batch)
        return items

    async def list_pages(
        self,
        command: str,
        params: Mapping[str, object] | None,
        *,
        item_key: str,
        pagesize: int = MAX_PAGESIZE,
    ) -> AsyncIterator[list[Any]]:
        """The non-empty pages of a list command as they arrive, with list_all's rules, so
        that a caller can digest a page before the next one (at 100,000 pending jobs, the
        whole listing at once is over 100 MB of Python objects)."""
        if not 1 <= pagesize <= MAX_PAGESIZE:
            raise ValueError(f"pagesize must be between 1 and {MAX_PAGESIZE}, got {pagesize!r}")
        base = dict(params or {})
        if any(str(name).lower() in ("page", "pagesize") for name in base):
            raise ValueError("list_all sets page and pagesize itself")
        seen = 0
        previous: list[Any] | None = None
        for page in range(1, MAX_PAGES + 1):
            inner = await self.call(
                command, {**base, "page": page, "pagesize": pagesize}, list_key=item_key
            )
            batch = inner.get(item_key, [])
            # A whole page compared with the last costs as much as decoding it; its first and
            # last entries tell the same (the list is ordered, a repeat is not a shift).
            if batch and previous and _same_page(batch, previous):
                # The same page twice: the server ignores `page`; more requests would loop.
                raise BadResponse(
                    f"{command}: page {page} repeats page {page - 1}; the server ignores paging",
                    command=command,
                )
            if not batch:
                return
            yield batch
            seen += len(batch)
            count = _count(inner.get("count"))
            if count is not None:
                if seen >= count:
                    return
            elif len(batch) < pagesize:
                return
            previous = batch
        raise BadResponse(
            f"{command}: listing did not end after {MAX_PAGES} pages", command=command
        )

    async def list_async_jobs(
        self,
        *,
        listall: bool = True,
        account: str | None = None,
        domain_id: str | None = None,
        keyword: str | None = None,
        startdate: str | None = None,
        pagesize: int = MAX_PAGESIZE,
    ) -> list[Any]:
        """The pending jobs, as raw API objects (parse them with jobs.parse_job)."""
        params = _async_jobs_params(listall, account, domain_id, keyword, startdate)
        return await self.list_all("listAsyncJobs", params, item_key="asyncjobs", pagesize=pagesize)

    def list_async_jobs_pages(
        self,
        *,
        listall: bool = True,
        account: str | None = None,
        domain_id: str | None = None,
        keyword: str | None = None,
        startdate: str | None = None,
        pagesize: int = MAX_PAGESIZE,
    ) -> AsyncIterator[list[Any]]:
        """list_async_jobs one page at a time (see list_pages)."""
        params = _async_jobs_params(listall, account, domain_id, keyword, startdate)
        return self.list_pages("listAsyncJobs", params, item_key="asyncjobs", pagesize=pagesize)

    async def list_account_ids(
        self, *, account: str | None = None, domain_id: str | None = None
    ) -> set[str]:
        """UUIDs of the accounts listAccounts shows for this scope (`account` is a name,
        unique within `domain_id`)."""
        params = {"listall": True, "name": account, "domainid": domain_id}
        found = await self.list_all("listAccounts", params, item_key="account")
        return {a["id"] for a in found if isinstance(a, dict) and isinstance(a.get("id"), str)}

    async def query_async_job_result(self, job_id: str) -> dict[str, Any]:
        """The raw job object; a purged or unknown job raises JobNotFound."""
        if not isinstance(job_id, str) or not job_id.strip():
            raise ValueError(f"not a job id: {job_id!r}")
        return await self.call("queryAsyncJobResult", {"jobid": job_id})

    # --- one attempt, one HTTP request ------------------------------------------------------

    async def _attempt(
        self, command: str, base: dict[str, str], list_key: str | None = None
    ) -> dict[str, Any]:
        if self._api_key is not None and self._secret_key is not None:
            params = sign(base, self._api_key, self._secret_key, lifetime=self._signature_lifetime)
        else:
            if self._session_key is None:  # a concurrent re-login is failing
                raise Unauthorized(f"{command}: not logged in", command=command, errorcode=401)
            params = {**base, "sessionkey": self._session_key}
        return await self._request(command, params, post=False, list_key=list_key)

    async def _relogin(self, seen_generation: int) -> None:
        async with self._login_lock:
            if self._login_generation != seen_generation and self._session_key is not None:
                return  # another request logged in while this one waited
            await self._login()

    async def _login(self) -> None:
        assert self._username is not None and self._password is not None
        form = {
            "command": "login",
            "username": self._username,
            "password": self._password,
            "response": "json",
        }
        if self._domain:
            form["domain"] = self._domain
        if self._domain_id:
            form["domainid"] = self._domain_id  # the server also reads domainId
        self._session_key = None
        inner = await self._request("login", form, post=True)
        key = inner.get("sessionkey")
        if not isinstance(key, str) or not key:
            # Newer servers may hand the key out only as a cookie.
            cookie = self._get_session().cookie_jar.filter_cookies(self._url).get("sessionkey")
            key = cookie.value if cookie is not None else None
        if not key:
            raise BadResponse("login: the answer carries no session key", command="login")
        self._session_key = key
        self._login_generation += 1
        log.debug("logged in to %s", self._host)

    def _pause(self, seconds: float) -> None:
        until = asyncio.get_running_loop().time() + seconds
        self._paused_until = max(self._paused_until, until)

    async def _wait_pause(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._paused_until - loop.time()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def _wait_turn(self) -> None:
        await self._wait_pause()
        if self._interval:
            now = asyncio.get_running_loop().time()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            if slot > now:
                await asyncio.sleep(slot - now)
                # A 429 may have arrived while this request waited for its slot.
                await self._wait_pause()

    async def _request(
        self, command: str, params: dict[str, str], *, post: bool, list_key: str | None = None
    ) -> dict[str, Any]:
        async with self._semaphore:
            await self._wait_turn()
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                status, content_type, body, location = await self._exchange(command, params, post)
                # What this request carried that is secret, should the server echo it back.
                sent = (params.get("signature"), params.get("sessionkey"))
                result = self._interpret(command, status, content_type, body, location, sent)
                if list_key is not None and not isinstance(result.get(list_key, []), list):
                    raise BadResponse(
                        f"{command}: '{list_key}' in the answer is not a list", command=command
                    )
            except CloudStackError as exc:
                elapsed = loop.time() - start
                log.debug("%s on %s: %s in %.3fs", command, self._host, exc.code, elapsed)
                self._observe(command, exc.code, elapsed)
                raise
            elapsed = loop.time() - start
            log.debug("%s on %s: %d in %.3fs", command, self._host, status, elapsed)
            self._observe(command, str(status), elapsed)
            return result

    def _observe(self, command: str, code: str, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(command, code, seconds)
        except Exception:
            log.exception("request observer failed")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the CloudStack client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_concurrency),
                # unsafe: keep the login cookies of hosts given by IP address as well
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": f"cloudstack-job-exporter/{__version__}"},
            )
        return self._session

    async def _exchange(
        self, command: str, params: dict[str, str], post: bool
    ) -> tuple[int, str, bytes, str]:
        session = self._get_session()
        encoded = _encode(params)
        try:
            if post:
                request = session.post(
                    self._url,
                    data=encoded.encode("ascii"),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    allow_redirects=False,
                )
            else:
                # encoded=True: the query is sent exactly as built, so what the server
                # decodes is what was signed.
                url = URL(f"{self._url}?{encoded}", encoded=True)
                request = session.get(url, allow_redirects=False)
            async with request as resp:
                body = await resp.read()
                return (
                    resp.status,
                    resp.headers.get("Content-Type", ""),
                    body,
                    resp.headers.get("Location", ""),
                )
        except TimeoutError:
            raise TransportError(
                f"{command}: no answer from {self._host} within {self._timeout:g}s",
                command=command,
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{command}: {self._describe(exc)}", command=command) from None

    def _describe(self, exc: aiohttp.ClientError) -> str:
        # Built from the exception's parts: str(exc) of several aiohttp errors contains the URL.
        host = self._host
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = getattr(exc.certificate_error, "verify_message", "") or "verification failed"
            return f"TLS certificate of {host} not accepted ({reason})"
        if isinstance(exc, aiohttp.ClientSSLError):
            return f"TLS handshake with {host} failed"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect to {host} ({exc.strerror or type(exc.os_error).__name__})"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return f"{host} closed the connection without an answer"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return f"the answer from {host} was cut short"
        if isinstance(exc, aiohttp.ClientOSError):
            return f"connection to {host} failed ({exc.strerror or type(exc).__name__})"
        return f"request to {host} failed ({type(exc).__name__})"

    # --- reading an answer -----------------------------------------------------------------

    def _interpret(
        self,
        command: str,
        status: int,
        content_type: str,
        body: bytes,
        location: str,
        sent: tuple[str | None, ...] = (),
    ) -> dict[str, Any]:
        if 300 <= status < 400:
            target = _URL_QUERY.sub(r"\1", location) or "elsewhere"
            raise APIError(
                f"{command}: HTTP {status} redirect to {target}; set url to the API endpoint",
                command=command,
                errorcode=status,
            )
        data = _parse_json(body)
        inner = _inner(command, data)
        failed = inner is not None and "errorcode" in inner and "errortext" in inner
        if 200 <= status < 300 and not failed:
            if inner is not None:
                return inner
            raise BadResponse(
                f"{command}: the answer is not a CloudStack {command.lower()}response "
                f"({_what(content_type, body, data)})",
                command=command,
            )
        if inner is None:
            raise self._error(
                command,
                status,
                None,
                "",
                f"{command}: HTTP {status} with a body that is not a CloudStack answer "
                f"({_what(content_type, body, data)})",
            )
        errorcode = _int(inner.get("errorcode")) or status
        errortext = self._scrub(str(inner.get("errortext") or ""), sent)[:_ERRORTEXT_LIMIT]
        cserrorcode = _int(inner.get("cserrorcode"))
        detail = f" (cserrorcode {cserrorcode})" if cserrorcode is not None else ""
        message = f"{command} failed with {errorcode}{detail}: {errortext or 'no error text'}"
        raise self._error(command, errorcode, cserrorcode, errortext, message)

    def _error(
        self,
        command: str,
        errorcode: int,
        cserrorcode: int | None,
        errortext: str,
        message: str,
    ) -> APIError:
        kwargs: dict[str, Any] = {
            "command": command,
            "errorcode": errorcode,
            "cserrorcode": cserrorcode,
            "errortext": errortext,
        }
        if errorcode == 401:
            hint = (
                "check api_key, secret_key and this host's clock"
                if self._api_key
                else "the session was refused"
            )
            return Unauthorized(f"{message} ({hint})", **kwargs)
        if errorcode == 429:
            return Throttled(message, retry_after=_retry_after(errortext), **kwargs)
        if errorcode == 431 and command == "queryAsyncJobResult":
            return JobNotFound(message, **kwargs)
        if errorcode in (430, 431):
            return ParameterError(message, **kwargs)
        if errorcode == 531:
            if command == "login":
                return LoginFailed(f"{message} (check username, password and domain)", **kwargs)
            return PermissionDenied(message, **kwargs)
        if errorcode >= 500:
            return ServerError(message, **kwargs)
        return APIError(message, **kwargs)

    def _scrub(self, text: str, sent: tuple[str | None, ...] = ()) -> str:
        """Server text may echo what it was sent; never let a credential through."""
        text = _URL_QUERY.sub(r"\1", text)
        text = mask_sensitive_params(text)
        secrets = (self._api_key, self._secret_key, self._password, self._session_key, *sent)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***").replace(java_urlencode(secret), "***")
        return text


# --- helpers ---------------------------------------------------------------------------------


def _endpoint(url: str) -> URL:
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"url must be http:// or https:// with a host, got {url!r}")
    if parsed.user is not None or parsed.password is not None:
        raise ValueError("url must not carry credentials; use username/password or keys")
    if parsed.query_string or parsed.fragment:
        raise ValueError(f"url must not have a query or fragment: {parsed.with_query(None)}")
    return parsed


def _async_jobs_params(
    listall: bool,
    account: str | None,
    domain_id: str | None,
    keyword: str | None,
    startdate: str | None,
) -> dict[str, object]:
    return {
        "listall": True if listall else None,
        "account": account,
        "domainid": domain_id,
        "keyword": keyword,
        "startdate": startdate,
    }


def _wire_params(params: Mapping[str, object] | None) -> dict[str, str]:
    """Caller parameters as CloudStack receives them: lower-case names, text values."""
    out: dict[str, str] = {}
    for name, value in (params or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
        key = name.lower()
        if key in _RESERVED:
            raise ValueError(f"parameter {name!r} is set by the client itself")
        if key in out:
            raise ValueError(f"parameter {name!r} given twice (names are not case-sensitive)")
        if value is None:
            continue
        out[key] = _param_text(name, value)
    return out


def _param_text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return ",".join(_param_text(name, v) for v in value)
    raise ValueError(f"parameter {name!r}: cannot send a {type(value).__name__}")


def _encode(params: Mapping[str, str]) -> str:
    # The Java encoding is also a valid wire encoding: "+" "/" "=" of the signature become
    # %2B %2F %3D, and the servlet decodes every %XX back to what was signed.
    return "&".join(f"{java_urlencode(k)}={java_urlencode(v)}" for k, v in params.items())


def _parse_json(body: bytes) -> object:
    # orjson decodes a listing page about twice as fast; what it refuses and json accepts
    # (NaN, lone surrogates, a BOM, UTF-16) goes to json, so what is readable stays the same.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _same_page(batch: list[Any], previous: list[Any]) -> bool:
    return len(batch) == len(previous) and batch[0] == previous[0] and batch[-1] == previous[-1]


def _inner(command: str, data: object) -> dict[str, Any] | None:
    """The `<command>response` (or `errorresponse`) object, or None if the shape is wrong."""
    if not isinstance(data, dict):
        return None
    for key in (command.lower() + "response", "errorresponse"):
        if key in data:
            value = data[key]
            return value if isinstance(value, dict) else None
    if len(data) == 1:
        ((key, value),) = data.items()
        if isinstance(key, str) and key.endswith("response") and isinstance(value, dict):
            return value
    return None


def _what(content_type: str, body: bytes, data: object) -> str:
    """A short description of an unreadable body, without its content."""
    kind = content_type.split(";")[0].strip() or "no content type"
    if not body:
        return f"{kind}, empty body"
    head = body.lstrip()[:64].lower()
    if data is not None:
        note = "JSON of an unexpected shape"
    elif head.startswith((b"<!doctype html", b"<html")):
        note = "an HTML page, perhaps from a proxy"
    elif head.startswith(b"<"):
        note = "XML; was response=json dropped on the way?"
    else:
        note = "not JSON, or cut short"
    return f"{kind}, {len(body)} bytes, {note}"


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _count(value: object) -> int | None:
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    count = _int(value)
    return count if count is not None and count >= 0 else None


def _retry_after(errortext: str) -> float:
    match = _RETRY_AFTER.search(errortext)
    if match is None:
        return DEFAULT_THROTTLE_WAIT
    amount = float(match.group(1))
    unit = (match.group(2) or "ms").lower()
    return amount / 1000.0 if unit.startswith("m") else amount
