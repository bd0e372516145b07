"""The --web.config.file: TLS, basic auth and extra headers, in the exporter-toolkit format.

The file is validated strictly (unknown keys are errors, like the toolkit's strict YAML), turned
into an `ssl.SSLContext`, and re-read when it or a file it names changes. A bad new file is
refused with a log line and the previous settings stay in force.

Differences from the Go toolkit, because Python's ssl module works differently:
- a client certificate that is presented is always verified, so every client_auth_type other
  than NoClientCert needs client_ca_file (or client_ca); RequestClientCert behaves like
  VerifyClientCertIfGiven and RequireAnyClientCert like RequireAndVerifyClientCert;
- curve_preferences is validated but not applied (OpenSSL's defaults are used);
- http_server_config.http2 is accepted and ignored: the server speaks HTTP/1.1;
- client_allowed_sans is checked when a request arrives (403), not during the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import bcrypt
import yaml

from exporter.validation import Problems, type_name

log = logging.getLogger(__name__)

REALM = "cloudstack-job-exporter"

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS = ("http2", "headers")
_RATE_KEYS = ("interval", "burst")

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# client_auth_type -> what OpenSSL is told; a presented certificate is always verified.
CLIENT_AUTH_TYPES: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # the toolkit's old name, still accepted there
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

# Go's names (crypto/tls CipherSuites()) of the TLS 1.2 suites -> OpenSSL's names.
TLS12_CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
# Go accepts these names too and, like OpenSSL here, does not let them be configured.
TLS13_CIPHER_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")

# Headers the toolkit lets a file add, with their allowed values (None: any value).
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class WebConfigError(Exception):
    """The web config file is unusable; `problems` has one line per problem, key path first."""

    def __init__(self, problems: list[str], path: str = "") -> None:
        self.problems = list(problems)
        self.path = path
        where = f"web config {path}" if path else "web config"
        super().__init__(f"{where}: " + "; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class TLSSettings:
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: str | None = dataclasses.field(default=None, repr=False)
    key_pem: str | None = dataclasses.field(default=None, repr=False)
    client_ca_file: str | None = None
    client_ca_pem: str | None = dataclasses.field(default=None, repr=False)
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        """The files whose change should reload the TLS settings."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclasses.dataclass(frozen=True)
class WebConfig:
    tls: TLSSettings | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # user -> bcrypt hash; kept out of reprs like every secret.
    users: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    http2: bool = True
    rate_limit_interval: float = 0.0
    rate_limit_burst: int = 0

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


# --------------------------------------------------------------------------- parsing


def parse_go_duration(value: object) -> float:
    """A Go duration ("1s", "1m30s", "250ms") or 0, in seconds; ValueError otherwise."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    if not isinstance(value, str) or not value:
        raise ValueError("expected a duration such as 1s or 250ms")
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _GO_DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {value!r} (expected e.g. 1s or 250ms)")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return total


def _resolve(path: str | None, base_dir: str) -> str | None:
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _parse_tls(raw: object, base_dir: str, problems: Problems) -> TLSSettings | None:
    key = "tls_server_config"
    m = problems.mapping(raw, key, _TLS_KEYS)
    string_keys = (
        "cert",
        "key",
        "client_ca",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
    )
    s = {k: problems.string(m.get(k), f"{key}.{k}") for k in string_keys if k in m}
    s = {k: v for k, v in s.items() if isinstance(v, str)}
    enabled_by = ("cert", "cert_file", "key", "key_file", "client_ca", "client_ca_file")
    if not any(s.get(k) for k in (*enabled_by, "client_auth_type")):
        # The toolkit serves plain HTTP when none of these is set.
        return None

    if s.get("cert") and s.get("cert_file"):
        problems.add(key, "set only one of cert and cert_file")
    elif not (s.get("cert") or s.get("cert_file")):
        problems.add(key, "missing one of cert or cert_file")
    if s.get("key") and s.get("key_file"):
        problems.add(key, "set only one of key and key_file")
    elif not (s.get("key") or s.get("key_file")):
        problems.add(key, "missing one of key or key_file")
    if s.get("client_ca") and s.get("client_ca_file"):
        problems.add(key, "set only one of client_ca and client_ca_file")

    auth = s.get("client_auth_type") or "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        problems.add(
            f"{key}.client_auth_type",
            f"unknown value {auth!r} (expected one of {', '.join(CLIENT_AUTH_TYPES)})",
        )
        auth = "NoClientCert"
    has_ca = bool(s.get("client_ca") or s.get("client_ca_file"))
    if has_ca and auth == "NoClientCert":
        problems.add(key, "client CAs are configured but client_auth_type is NoClientCert")
    if not has_ca and auth != "NoClientCert":
        problems.add(
            f"{key}.client_ca_file",
            f"required for client_auth_type {auth}: client certificates are always verified here",
        )

    sans = problems.string_list(m.get("client_allowed_sans"), f"{key}.client_allowed_sans")
    if sans is not None and CLIENT_AUTH_TYPES[auth] is not ssl.CERT_REQUIRED:
        problems.add(
            f"{key}.client_allowed_sans",
            "requires client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert",
        )

    versions = {}
    for which, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = s.get(which) or default
        if v not in TLS_VERSIONS:
            problems.add(
                f"{key}.{which}",
                f"unknown TLS version {v!r} (expected one of {', '.join(TLS_VERSIONS)})",
            )
            v = default
        versions[which] = v
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        problems.add(f"{key}.min_version", "is above max_version")

    ciphers = problems.string_list(m.get("cipher_suites"), f"{key}.cipher_suites") or ()
    for c in ciphers:
        if c not in TLS12_CIPHER_SUITES and c not in TLS13_CIPHER_SUITES:
            problems.add(f"{key}.cipher_suites", f"unknown cipher suite {c!r}")
    curves = problems.string_list(m.get("curve_preferences"), f"{key}.curve_preferences") or ()
    for c in curves:
        if c not in CURVES:
            problems.add(
                f"{key}.curve_preferences",
                f"unknown curve {c!r} (expected one of {', '.join(CURVES)})",
            )

    return TLSSettings(
        cert_file=_resolve(s.get("cert_file"), base_dir),
        key_file=_resolve(s.get("key_file"), base_dir),
        cert_pem=s.get("cert") or None,
        key_pem=s.get("key") or None,
        client_ca_file=_resolve(s.get("client_ca_file"), base_dir),
        client_ca_pem=s.get("client_ca") or None,
        client_auth_type=auth,
        client_allowed_sans=sans,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        cipher_suites=ciphers,
        prefer_server_cipher_suites=problems.boolean(
            m.get("prefer_server_cipher_suites"),
            f"{key}.prefer_server_cipher_suites",
            True,
        ),
        curve_preferences=curves,
    )


def _parse_users(raw: object, problems: Problems) -> dict[str, str]:
    key = "basic_auth_users"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(key, f"must be a mapping of user names to bcrypt hashes, not {type_name(raw)}")
        return {}
    users: dict[str, str] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user:
            problems.add(key, "user names must be non-empty strings")
            continue
        if ":" in user:
            # RFC 7617: the first colon separates user and password.
            problems.add(f"{key}.{user}", "a user name cannot contain ':'")
            continue
        # Never echo the value: it is a password hash.
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            problems.add(f"{key}.{user}", "is not a bcrypt hash (make one with htpasswd -nBC 10)")
            continue
        users[user] = hashed
    return users


def _parse_http(raw: object, problems: Problems) -> tuple[bool, tuple[tuple[str, str], ...]]:
    key = "http_server_config"
    m = problems.mapping(raw, key, _HTTP_KEYS)
    http2 = problems.boolean(m.get("http2"), f"{key}.http2", True)
    headers: list[tuple[str, str]] = []
    raw_headers = m.get("headers")
    if raw_headers is not None and not isinstance(raw_headers, dict):
        problems.add(f"{key}.headers", f"must be a mapping, not {type_name(raw_headers)}")
    elif raw_headers:
        for name, value in raw_headers.items():
            path = f"{key}.headers.{name}"
            if name not in EXTRA_HEADERS:
                problems.add(
                    path, f"this header cannot be configured (allowed: {', '.join(EXTRA_HEADERS)})"
                )
                continue
            if not isinstance(value, str):
                problems.add(path, f"must be a string, not {type_name(value)}")
                continue
            if "\r" in value or "\n" in value:
                problems.add(path, "must be a single line")
                continue
            allowed = EXTRA_HEADERS[name]
            if allowed is not None and value not in allowed:
                problems.add(
                    path, f"invalid value {value!r} (expected one of {', '.join(allowed)})"
                )
                continue
            if value:  # blank means unset
                headers.append((name, value))
    return http2, tuple(headers)


def _parse_rate_limit(raw: object, problems: Problems) -> tuple[float, int]:
    key = "rate_limit"
    m = problems.mapping(raw, key, _RATE_KEYS)
    interval = 0.0
    if m.get("interval") is not None:
        try:
            interval = parse_go_duration(m["interval"])
        except ValueError as exc:
            problems.add(f"{key}.interval", str(exc))
    burst = m.get("burst", 0)
    if burst is None:
        burst = 0
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        problems.add(f"{key}.burst", "must be a whole number of requests, 0 or more")
        burst = 0
    if interval > 0 and burst < 1:
        # With a burst of 0 a token bucket admits nothing at all.
        problems.add(f"{key}.burst", "must be at least 1 when rate_limit.interval is set")
    return interval, burst


def parse_web_config(text: str, path: str = "") -> WebConfig:
    """Parse and validate the YAML text (does not read the files it names)."""
    problems = Problems()
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # The mark's snippet could show a secret; give only the position.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise WebConfigError(
            [f"invalid YAML: {where}{exc.problem or 'syntax error'}"], path
        ) from None
    except yaml.YAMLError:
        raise WebConfigError(["invalid YAML"], path) from None
    top = problems.mapping(raw, "", _TOP_KEYS)
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    tls = _parse_tls(top.get("tls_server_config"), base_dir, problems)
    http2, headers = _parse_http(top.get("http_server_config"), problems)
    users = _parse_users(top.get("basic_auth_users"), problems)
    interval, burst = _parse_rate_limit(top.get("rate_limit"), problems)
    if problems.items:
        raise WebConfigError(problems.items, path)
    return WebConfig(
        tls=tls,
        headers=headers,
        users=users,
        http2=http2,
        rate_limit_interval=interval,
        rate_limit_burst=burst,
    )


# --------------------------------------------------------------------------- TLS


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    return b""


def _describe_ssl_error(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[-1]) if exc.args else str(exc)
        # "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)"
        text = re.sub(r"^\[[^\]]*\]\s*", "", text)
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or "TLS error"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """A server context from the settings, reading the files; WebConfigError if unusable."""
    key = "tls_server_config"
    problems = Problems()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    ctx.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = [TLS12_CIPHER_SUITES[c] for c in tls.cipher_suites if c in TLS12_CIPHER_SUITES]
    if tls12:
        try:
            ctx.set_ciphers(":".join(dict.fromkeys(tls12)))
        except ssl.SSLError:
            problems.add(f"{key}.cipher_suites", "none of these suites is available in OpenSSL")

    for which, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if path and not os.path.isfile(path):
            problems.add(f"{key}.{which}", f"cannot read {path}: no such file")
    if not problems.items:
        try:
            _load_cert_chain(ctx, tls)
        except (ssl.SSLError, OSError) as exc:
            problems.add(key, f"cannot load the certificate and key: {_describe_ssl_error(exc)}")

    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            problems.add(
                f"{key}.client_ca_file",
                f"cannot load {tls.client_ca_file}: {_describe_ssl_error(exc)}",
            )
    elif tls.client_ca_pem:
        try:
            ctx.load_verify_locations(cadata=tls.client_ca_pem)
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.add(f"{key}.client_ca", f"no usable certificate: {_describe_ssl_error(exc)}")
    if (tls.client_ca_file or tls.client_ca_pem) and not problems.items and not ctx.get_ca_certs():
        problems.add(f"{key}.client_ca_file", "contains no certificate")
    if problems.items:
        raise WebConfigError(problems.items)
    return ctx


def _load_cert_chain(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    with contextlib.ExitStack() as stack:
        cert_path, key_path = tls.cert_file, tls.key_file
        if tls.cert_pem or tls.key_pem:
            # load_cert_chain reads only files: inline PEM goes through a private directory.
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="webcfg-"))
            if tls.cert_pem:
                cert_path = _write_private(os.path.join(tmp, "cert.pem"), tls.cert_pem)
            if tls.key_pem:
                key_path = _write_private(os.path.join(tmp, "key.pem"), tls.key_pem)
        assert cert_path and key_path
        ctx.load_cert_chain(cert_path, key_path, password=_no_password)


def _write_private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def load_web_config(path: str) -> tuple[WebConfig, ssl.SSLContext | None]:
    """Read, validate and load everything the file names; WebConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise WebConfigError([f"cannot read the file: {exc.strerror or exc}"], path) from None
    except UnicodeDecodeError:
        raise WebConfigError(["the file is not UTF-8 text"], path) from None
    config = parse_web_config(text, path)
    context = None
    if config.tls is not None:
        try:
            context = build_ssl_context(config.tls)
        except WebConfigError as exc:
            raise WebConfigError(exc.problems, path) from None
    return config, context


class _ReloadingContext(ssl.SSLContext):
    """Hands each new connection the holder's current context.

    asyncio creates every server-side connection with `wrap_bio` on the context given to
    `create_server`; delegating that call lets a reload replace the whole TLS setup (certificate,
    client CAs, versions, client auth) for new connections while the listener stays the same.
    """

    _holder: WebConfigHolder

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._holder._connection_context().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._holder._connection_context().wrap_socket(*args, **kwargs)


# --------------------------------------------------------------------------- the holder


class _TokenBucket:
    def __init__(self, interval: float, burst: int, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.burst = burst
        self.tokens = float(burst)
        self.clock = clock
        self.last = clock()

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) / self.interval)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


_Signature = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


def _signature(paths: tuple[str, ...]) -> _Signature:
    out: list[tuple[str, int, int, int, int] | tuple[str]] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append((p,))
        else:
            out.append((p, st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class WebConfigHolder:
    """The current web config of a running server, re-read when its files change."""

    _AUTH_CACHE_SIZE = 256

    def __init__(
        self,
        path: str,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self._clock = clock
        self.config, self._context = load_web_config(path)
        self.tls_enabled = self.config.tls is not None
        self._signature = self._current_signature()
        self._last_check = clock()
        self._refused: _Signature | None = None
        self._bucket = self._make_bucket()
        # Successful (user, hash, password) checks, keyed by an HMAC so no password is kept.
        self._auth_key = secrets.token_bytes(32)
        self._auth_ok: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._bcrypt_lock: asyncio.Lock | None = None
        self._front: _ReloadingContext | None = None
        if self.tls_enabled:
            self._warn_ignored()

    # -- reloading ---------------------------------------------------------

    def _current_signature(self) -> _Signature:
        files = (self.path, *(self.config.tls.files() if self.config.tls else ()))
        return _signature(files)

    def maybe_reload(self) -> None:
        """Re-read the files if they changed; looks at most once per check_interval."""
        now = self._clock()
        if now - self._last_check < self.check_interval:
            return
        self._last_check = now
        sig = self._current_signature()
        if sig != self._signature and sig != self._refused:
            self.reload(sig)

    def reload(self, signature: _Signature | None = None) -> bool:
        """Load the file again now; on failure keep the current settings. True if applied."""
        sig = signature if signature is not None else self._current_signature()
        try:
            config, context = load_web_config(self.path)
            if (config.tls is not None) != self.tls_enabled:
                raise WebConfigError(
                    ["turning TLS on or off needs a restart of the exporter"], self.path
                )
        except WebConfigError as exc:
            self._refused = sig
            log.error("%s; keeping the previous web settings", exc)
            return False
        except Exception:
            # Runs inside requests and TLS handshakes: nothing may escape from here.
            self._refused = sig
            log.exception(
                "web config %s: cannot be loaded; keeping the previous web settings", self.path
            )
            return False
        old_files = self.config.tls.files() if self.config.tls else ()
        self.config, self._context = config, context
        new_files = config.tls.files() if config.tls else ()
        # The stats taken before reading: a write during the read is seen at the next check.
        self._signature = sig if new_files == old_files else self._current_signature()
        self._refused = None
        self._bucket = self._make_bucket()
        self._auth_ok.clear()
        if self.tls_enabled:
            self._warn_ignored()
        log.info("web config %s reloaded", self.path)
        return True

    def _warn_ignored(self) -> None:
        tls = self.config.tls
        if tls and tls.curve_preferences:
            log.warning("web config: curve_preferences is not applied; OpenSSL's defaults are used")
        if tls and tls.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            log.warning(
                "web config: client_auth_type %s also verifies the client certificate "
                "against the client CA",
                tls.client_auth_type,
            )

    # -- TLS ---------------------------------------------------------------

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context to give the listener (None without TLS); it follows reloads."""
        if not self.tls_enabled:
            return None
        if self._front is None:
            front = _ReloadingContext(ssl.PROTOCOL_TLS_SERVER)
            front._holder = self
            self._front = front
        return self._front

    def _connection_context(self) -> ssl.SSLContext:
        self.maybe_reload()
        assert self._context is not None
        return self._context

    def client_cert_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """client_allowed_sans: does the verified client certificate carry an allowed SAN?"""
        tls = self.config.tls
        if tls is None or tls.client_allowed_sans is None:
            return True
        if not peercert:
            return False
        allowed = set(tls.client_allowed_sans)
        allowed_ips = set()
        for a in allowed:
            with contextlib.suppress(ValueError):
                allowed_ips.add(ipaddress.ip_address(a))
        for kind, value in peercert.get("subjectAltName", ()):
            if value in allowed:
                return True
            if kind == "IP Address":
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(value.strip()) in allowed_ips:
                        return True
        return False

    # -- HTTP --------------------------------------------------------------

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.config.headers

    def _make_bucket(self) -> _TokenBucket | None:
        c = self.config
        if c.rate_limit_interval <= 0:
            return None
        return _TokenBucket(c.rate_limit_interval, c.rate_limit_burst, self._clock)

    def allow_request(self) -> bool:
        """rate_limit: False when the token bucket is empty (answer 429)."""
        return self._bucket is None or self._bucket.allow()

    @property
    def auth_required(self) -> bool:
        return self.config.auth_required

    async def check_basic_auth(self, authorization: str | None) -> bool:
        """True when basic auth is off or the Authorization header names a user and password."""
        users = self.config.users
        if not users:
            return True
        parsed = _parse_basic(authorization)
        if parsed is None:
            return False
        user, password = parsed
        hashed = users.get(user)
        known = hashed is not None
        if hashed is None:
            # Spend the same time as for a real user so user names cannot be probed by timing.
            hashed = users[min(users)]
        cache_key = hmac.new(
            self._auth_key,
            b"\0".join((user.encode(), hashed.encode(), password)),
            hashlib.sha256,
        ).digest()
        if known and cache_key in self._auth_ok:
            self._auth_ok.move_to_end(cache_key)
            return True
        if self._bcrypt_lock is None:
            self._bcrypt_lock = asyncio.Lock()
        # One bcrypt at a time: it is slow on purpose and must not starve the event loop.
        async with self._bcrypt_lock:
            if known and cache_key in self._auth_ok:
                return True
            ok = await asyncio.to_thread(_bcrypt_check, password, hashed)
        if ok and known:
            self._auth_ok[cache_key] = None
            while len(self._auth_ok) > self._AUTH_CACHE_SIZE:
                self._auth_ok.popitem(last=False)
            return True
        return False


def _parse_basic(authorization: str | None) -> tuple[str, bytes] | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_b, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        user = user_b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return user, password


def _bcrypt_check(password: bytes, hashed: str) -> bool:
    # bcrypt only ever uses the first 72 bytes (Go and htpasswd behave alike); the
    # Python package refuses longer input instead of truncating.
    try:
        return bcrypt.checkpw(password[:72], hashed.encode())
    except ValueError:
        return False
