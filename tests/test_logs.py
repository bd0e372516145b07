"""Log lines: logfmt and JSON, one line a record, secrets masked wherever they appear."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Iterator

import pytest

from exporter import logs
from exporter.config import Secret
from exporter.logs import forget_secrets, redact, register_secret, setup_logging

SECRET = "s3cr3t-VALUE-in-logs"
LOGFMT_RE = re.compile(
    r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|warn|error) "
    r'logger=\S+ msg=("[^"]*"|\S+)'
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    forget_secrets()
    yield
    forget_secrets()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logs._handler = None
    logging.captureWarnings(False)


def capture(fmt: str = "logfmt", level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


log = logging.getLogger("exporter.poller")


# --------------------------------------------------------------------------- logfmt


def test_logfmt_line_layout_with_extra_fields() -> None:
    stream = capture()
    log.info("poll finished", extra={"cloud": "prod", "jobs": 12, "ok": True, "took": 0.25})
    (line,) = lines(stream)
    assert LOGFMT_RE.match(line), line
    assert line.endswith(
        ' level=info logger=exporter.poller msg="poll finished" '
        "cloud=prod jobs=12 ok=true took=0.25"
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line1\nline2", '"line1\\nline2"'),
        ("back\\slash", '"back\\\\slash"'),
        ("bell\x07", '"bell\\x07"'),
        (None, '""'),
        ("ünïcode", "ünïcode"),
    ],
)
def test_logfmt_quoting(value: object, rendered: str) -> None:
    stream = capture()
    log.info("m", extra={"field": value})
    (line,) = lines(stream)
    assert line.endswith(f" field={rendered}")


def test_levels_are_named_like_prometheus_and_filtered() -> None:
    stream = capture(level="warn")
    log.debug("hidden")
    log.info("hidden too")
    log.warning("shown")
    log.error("also shown")
    log.critical("critical")
    found = [re.search(r"level=(\w+)", line)[1] for line in lines(stream)]  # type: ignore[index]
    assert found == ["warn", "error", "error"]


def test_setup_twice_replaces_the_handler() -> None:
    capture()
    stream = capture(fmt="json")
    log.info("once")
    assert len(lines(stream)) == 1
    ours = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h.formatter, logs.LogfmtFormatter | logs.JSONFormatter)
    ]
    assert len(ours) == 1


@pytest.mark.parametrize(("level", "fmt"), [("trace", "logfmt"), ("info", "xml")])
def test_bad_level_or_format_is_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        setup_logging(level, fmt)


def test_bad_format_arguments_do_not_raise() -> None:
    stream = capture()
    log.info("count %d", "not a number")
    (line,) = lines(stream)
    assert 'msg="count %d (unformattable log arguments: TypeError)"' in line


# --------------------------------------------------------------------------- exceptions


def _raise_chained() -> None:
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError as error:
        raise RuntimeError("poll failed\nwith detail") from error


def test_exception_is_one_logfmt_field_with_type_message_and_place() -> None:
    stream = capture()
    try:
        _raise_chained()
    except RuntimeError:
        log.exception("cycle failed", extra={"cloud": "prod"})
    (line,) = lines(stream)
    assert "Traceback" not in line
    assert (
        'msg="cycle failed" cloud=prod exc="RuntimeError: poll failed with detail '
        '(caused by ConnectionResetError: peer reset)" exc_at=test_logs.py:'
    ) in line


def test_exception_in_json() -> None:
    stream = capture("json")
    try:
        raise KeyError("jobid")
    except KeyError:
        log.error("bad job", exc_info=True)
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["exc"] == "KeyError: 'jobid'"
    assert record["exc_at"].startswith("test_logs.py:")


# --------------------------------------------------------------------------- json


def test_json_one_object_a_line() -> None:
    stream = capture("json")
    log.info("started %s", "ok", extra={"cloud": "prod", "n": 3, "obj": object(), "x": 1.5})
    log.warning("multi\nline")
    first, second = (json.loads(line) for line in lines(stream))
    assert first["level"] == "info" and first["logger"] == "exporter.poller"
    assert first["msg"] == "started ok"
    assert first["cloud"] == "prod" and first["n"] == 3 and first["x"] == 1.5
    assert first["obj"].startswith("<object object")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert list(first)[:4] == ["ts", "level", "logger", "msg"]
    assert second["msg"] == "multi\nline" and second["level"] == "warn"


def test_warnings_become_log_lines() -> None:
    stream = capture()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", DeprecationWarning, stacklevel=1)
    (line,) = lines(stream)
    assert "logger=py.warnings" in line and "DeprecationWarning: old option" in line


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_registered_secret_is_masked_everywhere(fmt: str) -> None:
    stream = capture(fmt)
    register_secret(Secret(SECRET))
    log.info("using %s", SECRET, extra={"detail": f"key={SECRET}!", "secret": Secret(SECRET)})
    log.info(f"inline {SECRET}")
    try:
        raise ValueError(f"refused {SECRET}")
    except ValueError:
        log.exception("failed")
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count("***") >= 5


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_secret_objects_are_masked_even_when_not_registered(fmt: str) -> None:
    stream = capture(fmt)
    log.info("key %s", Secret(SECRET), extra={"key": Secret(SECRET), "nested": [Secret(SECRET)]})
    assert SECRET not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET https://cs/client/api?command=listAsyncJobs&apiKey=AK-1&signature=ab%2Fc%3D"
            "&signatureVersion=3&expires=2026",
            "GET https://cs/client/api?command=listAsyncJobs&apiKey=***&signature=***"
            "&signatureVersion=3&expires=2026",
        ),
        ("POST login username=u&password=hunter2 failed",
         "POST login username=u&password=*** failed"),
        ("?sessionkey=Zm9v&response=json", "?sessionkey=***&response=json"),
        ("Cookie: JSESSIONID=ABC123; sessionkey=xyz", "Cookie: JSESSIONID=***; sessionkey=***"),
        ("APIKEY=x SecretKey=y", "APIKEY=*** SecretKey=***"),
        ("url=https%3A%2F%2Fcs%3Fsignature%3Dabc", "url=https%3A%2F%2Fcs%3Fsignature%3D***"),
        ("mysignature=kept no_password=kept", "mysignature=kept no_password=kept"),
    ],
)  # fmt: skip
def test_sensitive_query_parameters_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_query_parameters_are_masked_in_log_lines() -> None:
    stream = capture()
    log.warning(
        "request failed",
        extra={"url": "https://cs/client/api?apiKey=AK-123&signature=SIG%2B"},
    )
    output = stream.getvalue()
    assert "AK-123" not in output and "SIG" not in output
    assert "apiKey=***&signature=***" in output


def test_short_values_are_not_registered() -> None:
    register_secret("ab")
    register_secret(None)
    assert redact("a tab b") == "a tab b"


def test_longest_secret_is_masked_whole() -> None:
    register_secret("abcd")
    register_secret("abcdefgh")
    assert redact("x abcdefgh y abcd") == "x *** y ***"


def test_other_handlers_see_the_redacted_record(caplog: pytest.LogCaptureFixture) -> None:
    capture()
    register_secret(SECRET)
    with caplog.at_level(logging.INFO):
        log.info("token %s", SECRET)
    assert caplog.records and SECRET not in caplog.text
