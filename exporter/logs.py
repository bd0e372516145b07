"""Logging as logfmt or JSON lines on stderr, with secrets redacted from every line.

One record is always one line: an exception is rendered as a single `exc` field (type and
message, and where it was raised), never as a multi-line traceback. Extra fields given with
`extra={...}` follow the message as key=value pairs (or JSON members).

Redaction masks the values registered with `register_secret()` and the values of the
query-string parameters apiKey, signature, sessionkey, password, secretkey and JSESSIONID,
wherever they appear: in the message, in extra fields and in exception text.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

FORMATS = ("logfmt", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MASK = "***"
# Shorter values are not registered: masking every "ab" in every line would wreck the logs.
MIN_SECRET_LENGTH = 4

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
# Request parameters (and cookies) whose values are credentials, wherever text shows them.
SENSITIVE_PARAMS = ("apikey", "signature", "sessionkey", "password", "secretkey", "jsessionid")
_SENSITIVE_PARAM_RE = re.compile(
    # Preceded by a non-word character, or by an encoded "?" or "&" inside an encoded URL.
    r"(?i)(?:(?<![A-Za-z0-9_])|(?<=%3F)|(?<=%26))"
    rf"({'|'.join(SENSITIVE_PARAMS)})"
    r"(=|%3D)([^&\s\"'<>;,]*)"
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_longest_first: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Masks this value in every log line from now on (values under 4 characters are ignored)."""
    global _secrets_longest_first
    if value is None:
        return
    reveal = getattr(value, "reveal", None)
    plain: str = reveal() if callable(reveal) else str.__str__(value)
    if len(plain) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(plain)
        # Longest first, so a secret containing another is masked whole.
        _secrets_longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def forget_secrets() -> None:
    """Drops every registered secret (for tests)."""
    global _secrets_longest_first
    with _secrets_lock:
        _secrets.clear()
        _secrets_longest_first = ()


def redact(text: str) -> str:
    """The text with registered secrets and sensitive query parameters masked."""
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_sensitive_params(text)


def mask_sensitive_params(text: str) -> str:
    """The text with the values of SENSITIVE_PARAMS masked (`signature=***`)."""
    if "=" in text or "%3" in text:
        text = _SENSITIVE_PARAM_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


class RedactFilter(logging.Filter):
    """Redacts a record in place, for handlers that do not use this module's formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as error:  # a bad format string must not crash the caller
            message = f"{record.msg!s} (unformattable log arguments: {type(error).__name__})"
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(str(value)))
        return True


def _describe_exception(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> tuple[str, str]:
    """("Type: message (caused by Type: message)", "file.py:line") of an exception."""
    _, error, tb = exc_info
    text = _one_exception(error)
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        text += f" (caused by {_one_exception(cause)})"
    where = ""
    if tb is not None:
        frame = traceback.extract_tb(tb)[-1]
        where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return " ".join(text.split()), where


def _one_exception(error: BaseException) -> str:
    name = type(error).__qualname__
    message = str(error)
    return f"{name}: {message}" if message else name


def _plain(value: object) -> Any:
    """A JSON-able value; str subclasses (such as Secret) go through their own __str__."""
    if value is None or type(value) in (bool, int):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    return str(value)


class _Formatter(logging.Formatter):
    def fields(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        out: list[tuple[str, Any]] = [
            ("ts", created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"),
            ("level", _LEVEL_NAMES.get(record.levelno, record.levelname.lower())),
            ("logger", record.name),
            ("msg", redact(record.getMessage().rstrip())),
        ]
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            plain = _plain(value)
            out.append((key, redact(plain) if isinstance(plain, str) else plain))
        if record.exc_info and record.exc_info[1] is not None:
            text, where = _describe_exception(record.exc_info)
            out.append(("exc", redact(text)))
            if where:
                out.append(("exc_at", where))
        return out


class LogfmtFormatter(_Formatter):
    """`ts=... level=info logger=exporter.poller msg="..." cloud=prod key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{_logfmt_key(key)}={_logfmt_value(value)}" for key, value in self.fields(record)
        )


class JSONFormatter(_Formatter):
    """One JSON object a line, with the same fields as the logfmt format."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(dict(self.fields(record)), ensure_ascii=False, default=str)


_LOGFMT_BARE_RE = re.compile(r"[^\s=\"\\\x00-\x1f\x7f]+")
_LOGFMT_KEY_BAD_RE = re.compile(r"[^A-Za-z0-9_.\-]")


def _logfmt_key(key: str) -> str:
    return _LOGFMT_KEY_BAD_RE.sub("_", key) or "_"


def _logfmt_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _LOGFMT_BARE_RE.fullmatch(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    escaped = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", escaped)
    return f'"{escaped}"'


_handler: logging.Handler | None = None


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Sends every log record to stderr (or `stream`) in `fmt` at `level` and above.

    Calling it again replaces the handler it installed before (reconfiguration, tests).
    """
    global _handler
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of debug, info, warn, error")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JSONFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    # First in line: its filter redacts the record before any other handler sees it.
    root.handlers.insert(0, handler)
    root.setLevel(LEVELS[level])
    _handler = handler
    # warnings.warn() output would otherwise be multi-line text on stderr.
    logging.captureWarnings(True)
