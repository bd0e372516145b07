"""CloudStack request signing, byte for byte as the management server verifies it.

The server (ApiServer.verifyRequest) takes every parameter but `signature`, sorts the names
with Java's String order, joins `name=URLEncoder.encode(value)` with `&` (`+` turned into
`%20`), lower-cases the whole string and compares HMAC-SHA1 / Base64 of it with `signature`.
Anything that differs from Java here - `~` left bare, lower-case hex, code-point sorting -
gives a 401 for some values only, which is why every step is spelled out below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

DEFAULT_LIFETIME = 300.0

# java.net.URLEncoder leaves exactly these bytes alone (and turns space into "+", which the
# server then replaces by "%20", so space ends up as "%20" like any other byte).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_")
_BYTE_TO_TEXT = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))


def java_urlencode(value: str) -> str:
    """`URLEncoder.encode(value, "UTF-8")` with `+` replaced by `%20`.

    A lone surrogate cannot be UTF-8 encoded; Java's encoder substitutes `?` for it, and so
    does this (errors="replace").
    """
    return "".join(_BYTE_TO_TEXT[b] for b in value.encode("utf-8", errors="replace"))


def _java_order(name: str) -> bytes:
    # Java compares strings by UTF-16 code units; big-endian UTF-16 bytes compare the same way
    # (Python's own str order is by code point, which differs above U+FFFF).
    return name.encode("utf-16-be", errors="surrogatepass")


def _java_char_upper(c: str) -> str:
    # Character.toUpperCase maps one char to one char; str.upper() may expand ("ß" -> "SS").
    u = c.upper()
    return u if len(u) == 1 else c


def _java_char_lower(c: str) -> str:
    lo = c.lower()
    return lo if len(lo) == 1 else c


def _is_signature_name(name: str) -> bool:
    """`"signature".equalsIgnoreCase(name)`, with Java's per-character folding."""
    target = "signature"
    if len(name) != len(target):
        return False
    for a, b in zip(name, target, strict=True):
        if a == b:
            continue
        ua, ub = _java_char_upper(a), _java_char_upper(b)
        if ua == ub or _java_char_lower(ua) == _java_char_lower(ub):
            continue
        return False
    return True


def string_to_sign(params: Mapping[str, str]) -> str:
    """The lower-cased, sorted, encoded query the server computes its HMAC over."""
    names = sorted((n for n in params if not _is_signature_name(n)), key=_java_order)
    return "&".join(f"{n}={java_urlencode(params[n])}" for n in names).lower()


def signature(params: Mapping[str, str], secret_key: str) -> str:
    """Base64 HMAC-SHA1 of the request; any `signature` entry in `params` is ignored."""
    digest = hmac.new(
        secret_key.encode("utf-8"), string_to_sign(params).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def format_expires(when: float) -> str:
    """Unix time -> `YYYY-MM-DDTHH:MM:SS+0000` (UTC), the form every server version parses."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(when))


def sign(
    params: Mapping[str, str],
    api_key: str,
    secret_key: str,
    *,
    lifetime: float | None = DEFAULT_LIFETIME,
    now: float | None = None,
) -> dict[str, str]:
    """A new dict: `params` plus apiKey, (signatureVersion=3, expires) and signature.

    With `lifetime` the request is signature version 3 and the server refuses it after
    `now + lifetime`; with None it never expires (only for servers that cannot do version 3).
    """
    signed = {k: v for k, v in params.items() if not _is_signature_name(k)}
    signed["apiKey"] = api_key
    if lifetime is not None:
        if lifetime <= 0:
            raise ValueError(f"signature lifetime must be positive, got {lifetime!r}")
        signed["signatureVersion"] = "3"
        signed["expires"] = format_expires((time.time() if now is None else now) + lifetime)
    signed["signature"] = signature(signed, secret_key)
    return signed
