"""Load, expand and validate the YAML configuration into typed, frozen config objects.

Every problem in a file is collected and reported at once, one line each, as
"<key path>: <problem>" (for example "clouds[1].url: must be an http(s) URL"), so that an
operator fixes a file in one pass. Secret values (keys, passwords) are wrapped in `Secret`,
whose repr and str never show them, and are never echoed in a problem line.

Expansion, before validation:
- `${VAR}` in any string value is replaced from the environment; `$${` gives a literal `${`.
  A variable that is not set is a problem naming the key path and the variable, never a value.
- `api_key_file`, `secret_key_file` and `password_file` are read (trailing newline removed).
- Relative file paths are relative to the directory of the configuration file.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from yarl import URL

from exporter.jobs import is_operator_job_id
from exporter.validation import Problems, join, type_name

# Chosen from benchmarks/events.py (docs/benchmarks.md, "Event stream"): polling every 5 s
# counts about 64% of short-job workloads against 48% at 15 s, for one more list request
# every 5 s per 500 pending jobs; with events, set a long interval instead.
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_RETENTION = 3600.0
DEFAULT_MAX_TRACKED_JOBS = 100_000
# CloudStack jobs take from about a second (start a VM) to hours (large volume copies).
# The one default: what cloudstack_async_job_duration_seconds always used when none is configured.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
)
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_SIGNATURE_LIFETIME = 300.0
# Servers with enforce.post.requests.and.timestamps refuse an `expires` further ahead than this.
MAX_SIGNATURE_LIFETIME = 900.0
MIN_POLL_INTERVAL = 1.0
# The event stream (cloudstack-api.md §9): CloudStack's documented exchange; a queue unused
# for a day is deleted by the broker; 100,000 waiting events are about a day of a busy cloud.
DEFAULT_EVENTS_EXCHANGE = "cloudstack-events"
DEFAULT_QUEUE_EXPIRES = 86400.0
DEFAULT_QUEUE_MAX_LENGTH = 100_000
DEFAULT_PREFETCH = 100
DEFAULT_RECONNECT_MIN = 1.0
DEFAULT_RECONNECT_MAX = 60.0
# CloudStack's default.page.size: both the default and the largest pagesize it accepts.
MAX_PAGE_SIZE = 500

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_RE = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_PARENT_RE = re.compile(r"(^[^.\[]+|\.[^.\[]*|\[\d+\])$")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


class Secret(str):
    """A string that never shows its value in repr(), str() or format(); use `.reveal()`.

    It stays a `str` so that it can be compared and hashed, but code that needs the value
    (signing, login) must call `.reveal()`; concatenation or `.encode()` would expose it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, format_spec: str) -> str:
        return format("***", format_spec)

    def reveal(self) -> str:
        return str.__str__(self)


class ConfigError(Exception):
    """An invalid configuration; `problems` holds one "<key path>: <problem>" line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Which pending jobs `listAsyncJobs` finds for one cloud, and which of them to track."""

    enabled: bool = True
    listall: bool = True
    account: str | None = None
    domain_id: str | None = None
    # Regular expressions searched (re.search) in the job's full cmd class name; () = all.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_internal: bool = False  # pseudo jobs (no cmd) and com.cloud.vm.VmWork* jobs


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """One cloud's AsyncJobEvent stream (cloudstack-api.md §9). The password is kept apart
    from the URL, which is therefore safe to show."""

    url: str  # amqp:// or amqps://, without a password; the vhost is the path
    password: Secret | None = None
    exchange: str = DEFAULT_EVENTS_EXCHANGE
    queue: str = ""  # durable, one per exporter instance
    verify_tls: bool = True
    ca_file: str | None = None
    queue_expires: float = DEFAULT_QUEUE_EXPIRES
    queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH
    prefetch: int = DEFAULT_PREFETCH
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX


@dataclass(frozen=True, slots=True)
class CloudConfig:
    """One CloudStack endpoint. Exactly one of key signing or session login is configured."""

    name: str
    url: str
    api_key: Secret | None = None
    secret_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    domain: str | None = None  # login domain path, e.g. "/" or "/customers/acme"
    domain_id: str | None = None  # login domain UUID, instead of the path
    poll_interval: float = DEFAULT_POLL_INTERVAL
    jobs: tuple[str, ...] = ()
    jobs_file: str | None = None
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_requests_per_second: float | None = None
    signature_lifetime: float = DEFAULT_SIGNATURE_LIFETIME
    page_size: int = MAX_PAGE_SIZE
    events: EventsConfig | None = None

    @property
    def uses_login(self) -> bool:
        """True for username/password session login, False for API key signing."""
        return self.username is not None


@dataclass(frozen=True, slots=True)
class Config:
    poll_interval: float = DEFAULT_POLL_INTERVAL
    state_file: str | None = None
    retention: float = DEFAULT_RETENTION
    max_tracked_jobs: int = DEFAULT_MAX_TRACKED_JOBS
    per_job_series: bool = True
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    clouds: tuple[CloudConfig, ...] = ()

    def secrets(self) -> list[Secret]:
        """Every credential of the configuration, for the log redaction to mask."""
        found: list[Secret | None] = []
        for cloud in self.clouds:
            found += (cloud.api_key, cloud.secret_key, cloud.password)
            if cloud.events is not None:
                found.append(cloud.events.password)
        return [s for s in found if s]


# --------------------------------------------------------------------------- durations


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus duration ("500ms", "15s", "1h30m", "2d") or a number.

    Raises ValueError for anything else. Zero and negative numbers are returned as they are;
    whether they are acceptable is the caller's decision.
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 15s, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER_RE.fullmatch(text):
            seconds = float(text)
        else:
            match = _DURATION_RE.fullmatch(text)
            if not text or match is None:
                raise ValueError(
                    f"not a duration: {_show(value)} "
                    "(use e.g. 500ms, 15s, 5m, 1h30m, or a number of seconds)"
                )
            seconds = sum(
                int(amount) * unit
                for amount, unit in zip(match.groups(), _DURATION_UNITS, strict=True)
                if amount is not None
            )
    else:
        raise ValueError(f"must be a duration such as 15s, not {type_name(value)}")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style spelling of a duration, for messages: 90 -> "1m30s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


# --------------------------------------------------------------------------- helpers


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# Aliases can make a small file a huge or endless (recursive) tree.
_MAX_VALUES = 100_000
_MAX_DEPTH = 20


class _TooLarge(Exception):
    pass


class _Invalid:
    """Stands for a value whose problem is already reported, so it is not reported again."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys, which PyYAML would silently merge."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Keys that come in through a `<<` merge may legitimately be overridden.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"{self.source}:{mark.line + 1}:{mark.column + 1}: "
                    f"duplicate key {_show(key_node.value, 40)}"
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_problem(source: str, error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        text = error.problem or "invalid YAML"
        if error.context:
            text += f" ({error.context})"
        return f"{source}:{mark.line + 1}:{mark.column + 1}: {text}"
    return f"{source}: invalid YAML: {' '.join(str(error).split())}"


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a configuration file; raises ConfigError with every problem."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    loader = _Loader(text, path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(path, error)]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError([f"{path}: the file is empty; it needs at least a `clouds` list"])
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of keys, not {type_name(data)}"]
        )
    problems = list(loader.duplicates)
    try:
        config = parse_config(
            data, environ=environ, base_dir=os.path.dirname(os.path.abspath(path))
        )
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    return config


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, base_dir: str = "."
) -> Config:
    """Validate an already loaded YAML document; raises ConfigError with every problem."""
    validator = _Validator(os.environ if environ is None else environ, base_dir)
    try:
        config = validator.config(data)
    except _TooLarge:
        raise ConfigError(
            [
                f"(top level): more than {_MAX_VALUES} values or {_MAX_DEPTH} levels deep "
                "(a recursive YAML alias?)"
            ]
        ) from None
    if validator.found:
        raise ConfigError(validator.in_document_order())
    return config


# --------------------------------------------------------------------------- validation

_TOP_KEYS = (
    "poll_interval",
    "state_file",
    "retention",
    "max_tracked_jobs",
    "per_job_series",
    "duration_buckets",
    "clouds",
)
_CLOUD_KEYS = (
    "name",
    "url",
    "api_key",
    "api_key_file",
    "secret_key",
    "secret_key_file",
    "username",
    "password",
    "password_file",
    "domain",
    "domain_id",
    "poll_interval",
    "jobs",
    "jobs_file",
    "discovery",
    "verify_tls",
    "ca_file",
    "timeout",
    "max_concurrency",
    "max_requests_per_second",
    "signature_lifetime",
    "page_size",
    "events",
)
_EVENTS_KEYS = (
    "url",
    "password",
    "password_file",
    "exchange",
    "queue",
    "verify_tls",
    "ca_file",
    "queue_expires",
    "queue_max_length",
    "prefetch",
    "reconnect_min",
    "reconnect_max",
)
_DISCOVERY_KEYS = (
    "enabled",
    "listall",
    "account",
    "domain_id",
    "include",
    "exclude",
    "include_internal",
)
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


class _Validator:
    def __init__(self, environ: Mapping[str, str], base_dir: str) -> None:
        self.environ = environ
        self.base_dir = base_dir
        self.found = Problems()
        # key path -> (its index in document order, the index after its last descendant)
        self.order: dict[str, tuple[int, int]] = {}

    def problem(self, path: str, text: str) -> None:
        self.found.add(path, text)

    # ---- expansion

    def expand(self, value: object, path: str) -> Any:
        """Replaces ${VAR} in every string of the tree; unset variables become problems.

        Also records each key path's place in the document, see `in_document_order`.
        """
        start = len(self.order)
        if start > _MAX_VALUES or path.count(".") + path.count("[") > _MAX_DEPTH:
            raise _TooLarge
        self.order[path] = (start, start)
        if isinstance(value, str):
            return self.expand_string(value, path)
        if isinstance(value, list):
            expanded: Any = [self.expand(item, f"{path}[{i}]") for i, item in enumerate(value)]
        elif isinstance(value, dict):
            expanded = {k: self.expand(item, join(path, str(k))) for k, item in value.items()}
        else:
            return value
        self.order[path] = (start, len(self.order))
        return expanded

    def in_document_order(self) -> list[str]:
        """The problems sorted by where their key is in the file (a stable sort).

        Expansion problems are found before validation ones; sorting puts each where its key
        is. A key that is absent (a required one) sorts at the end of its parent mapping.
        """

        def rank(problem: str) -> float:
            path = problem.split(": ", 1)[0]
            if path in self.order:
                return self.order[path][0]
            while True:
                parent = _PARENT_RE.sub("", path)
                if parent == path:
                    return -1
                path = parent
                if path in self.order:
                    return self.order[path][1] - 0.5

        return sorted(self.found.items, key=rank)

    def expand_string(self, text: str, path: str) -> Any:
        if "$" not in text:
            return text
        out: list[str] = []
        ok = True
        i = 0
        while i < len(text):
            if text.startswith("$${", i):
                out.append("${")
                i += 3
            elif text.startswith("${", i):
                end = text.find("}", i + 2)
                if end < 0:
                    self.problem(path, "unterminated ${ (write $${ for a literal ${)")
                    return _INVALID
                name = text[i + 2 : end]
                if not _VAR_NAME_RE.fullmatch(name):
                    self.problem(path, f"invalid variable reference ${{{name[:40]}}}")
                    ok = False
                elif name not in self.environ:
                    self.problem(path, f"environment variable {name} is not set")
                    ok = False
                else:
                    out.append(self.environ[name])
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out) if ok else _INVALID

    # ---- mappings and scalars

    def mapping(self, value: object, path: str, known: tuple[str, ...]) -> dict[str, Any] | None:
        if value is _INVALID:
            return None
        if not isinstance(value, dict):
            self.problem(
                path or "(top level)", f"must be a mapping of keys, not {type_name(value)}"
            )
            return None
        return self.found.known_keys(value, path, known)

    def string(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = m.get(key)
        where = join(path, key)
        if value is None:
            if required:
                self.problem(where, "is required")
            return None
        if value is _INVALID:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # an unquoted numeric name or ID
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {type_name(value)}")
            return None
        if not value.strip():
            self.problem(where, "must not be empty")
            return None
        if check is not None:
            complaint = check(value)
            if complaint:
                self.problem(where, complaint)
                return None
        return value

    def secret(self, m: dict[str, Any], key: str, path: str) -> Secret | None:
        # Never echo the value: a type or emptiness complaint is all that is said.
        value = m.get(key)
        where = join(path, key)
        if value is None or value is _INVALID:
            return None
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {type_name(value)} (quote it)")
            return None
        if not value:
            self.problem(where, "must not be empty")
            return None
        return Secret(value)

    def path_value(self, m: dict[str, Any], key: str, path: str) -> str | None:
        value = self.string(m, key, path)
        if value is None:
            return None
        return os.path.join(self.base_dir, os.path.expanduser(value))

    def secret_file(self, m: dict[str, Any], key: str, path: str) -> Secret | None:
        filename = self.path_value(m, key, path)
        if filename is None:
            return None
        where = join(path, key)
        try:
            with open(filename, encoding="utf-8") as stream:
                content = stream.read()
        except UnicodeDecodeError:
            self.problem(where, f"{filename} is not UTF-8 text")
            return None
        except OSError as error:
            self.problem(where, f"cannot read {filename}: {error.strerror or 'error'}")
            return None
        # Editors and `echo` add a trailing newline that is not part of the secret.
        content = content.rstrip("\r\n")
        if not content:
            self.problem(where, f"{filename} is empty")
            return None
        return Secret(content)

    def boolean(self, m: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = m.get(key)
        if value is None or value is _INVALID:
            return default
        if isinstance(value, bool):
            return value
        # Values from ${VAR} arrive as strings.
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self.problem(join(path, key), f"must be true or false, not {type_name(value)}")
        return default

    def integer(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        value = m.get(key)
        where = join(path, key)
        if value is None or value is _INVALID:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"must be a whole number, not {type_name(value)}")
            return default
        if value < minimum:
            self.problem(where, f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.problem(where, f"must be at most {maximum}, got {value}")
            return default
        return value

    def number(self, m: dict[str, Any], key: str, path: str) -> float | None:
        value = m.get(key)
        where = join(path, key)
        if value is None or value is _INVALID:
            return None
        if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(where, f"must be a number, not {type_name(value)}")
            return None
        if not math.isfinite(value) or value <= 0:
            self.problem(where, f"must be a positive number, got {value}")
            return None
        return float(value)

    def duration(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
    ) -> float:
        value = m.get(key)
        where = join(path, key)
        if value is None or value is _INVALID:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.problem(where, str(error))
            return default
        if seconds <= 0:
            self.problem(where, "must be a positive duration")
            return default
        if seconds < minimum:
            self.problem(where, f"must be at least {format_duration(minimum)}")
            return default
        if maximum is not None and seconds > maximum:
            self.problem(where, f"must be at most {format_duration(maximum)}")
            return default
        return seconds

    def string_list(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        check: Callable[[str], str | None],
    ) -> tuple[str, ...]:
        value = m.get(key)
        where = join(path, key)
        if value is None or value is _INVALID:
            return ()
        if not isinstance(value, list):
            self.problem(where, f"must be a list, not {type_name(value)}")
            return ()
        items: list[str] = []
        for i, item in enumerate(value):
            entry = f"{where}[{i}]"
            if item is _INVALID:
                continue
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                self.problem(entry, f"must be a string, not {type_name(item)}")
                continue
            complaint = check(item)
            if complaint:
                self.problem(entry, complaint)
                continue
            if item not in items:
                items.append(item)
        return tuple(items)

    # ---- the document

    def config(self, data: object) -> Config:
        data = self.expand(data, "")
        top = self.mapping(data, "", _TOP_KEYS)
        if top is None:
            return Config()
        poll_interval = self.duration(
            top, "poll_interval", "", DEFAULT_POLL_INTERVAL, minimum=MIN_POLL_INTERVAL
        )
        config = Config(
            poll_interval=poll_interval,
            state_file=self.path_value(top, "state_file", ""),
            retention=self.duration(top, "retention", "", DEFAULT_RETENTION),
            max_tracked_jobs=self.integer(
                top, "max_tracked_jobs", "", DEFAULT_MAX_TRACKED_JOBS, minimum=1
            ),
            per_job_series=self.boolean(top, "per_job_series", "", True),
            duration_buckets=self.buckets(top.get("duration_buckets")),
            clouds=self.clouds(top.get("clouds"), poll_interval),
        )
        return config

    def buckets(self, value: object) -> tuple[float, ...]:
        if value is None or value is _INVALID:
            return DEFAULT_DURATION_BUCKETS
        if not isinstance(value, list):
            self.problem("duration_buckets", f"must be a list, not {type_name(value)}")
            return DEFAULT_DURATION_BUCKETS
        if not value:
            self.problem("duration_buckets", "must list at least one bucket")
            return DEFAULT_DURATION_BUCKETS
        buckets: list[float] = []
        previous: float | None = None
        for i, item in enumerate(value):
            where = f"duration_buckets[{i}]"
            if item is _INVALID:
                continue
            try:
                bound = parse_duration(item)
            except ValueError as error:
                self.problem(where, str(error))
                continue
            if bound <= 0:
                self.problem(where, "must be positive")
            elif previous is not None and bound <= previous:
                self.problem(
                    where,
                    f"buckets must be strictly increasing ({bound:g} follows {previous:g})",
                )
            previous = bound
            buckets.append(bound)
        return tuple(buckets)

    def clouds(self, value: object, poll_interval: float) -> tuple[CloudConfig, ...]:
        if value is _INVALID:
            return ()
        if value is None:
            self.problem("clouds", "is required: list at least one CloudStack endpoint")
            return ()
        if not isinstance(value, list):
            self.problem("clouds", f"must be a list, not {type_name(value)}")
            return ()
        if not value:
            self.problem("clouds", "must list at least one CloudStack endpoint")
            return ()
        clouds: list[CloudConfig] = []
        first_index: dict[str, int] = {}
        for i, item in enumerate(value):
            path = f"clouds[{i}]"
            cloud = self.cloud(item, path, poll_interval)
            # Names are compared as written, so a clash shows even beside other problems.
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                if name in first_index:
                    self.problem(
                        f"{path}.name",
                        f"{name!r} is already the name of clouds[{first_index[name]}]; "
                        "names must be unique",
                    )
                    continue
                first_index[name] = i
            if cloud is not None:
                clouds.append(cloud)
        return tuple(clouds)

    def cloud(self, value: object, path: str, default_interval: float) -> CloudConfig | None:
        m = self.mapping(value, path, _CLOUD_KEYS)
        if m is None:
            return None
        name = self.string(m, "name", path, required=True, check=_check_name)
        url = self.string(m, "url", path, required=True, check=_check_url)
        if url is not None:
            url = url.rstrip("/")

        api_key, secret_key, username, password = self.credentials(m, path)
        domain = self.string(m, "domain", path)
        if domain is not None and m.get("username") is None:
            self.problem(join(path, "domain"), "is only used with username/password login")
        domain_id = self.string(m, "domain_id", path)
        if domain_id is not None and m.get("username") is None:
            self.problem(
                join(path, "domain_id"),
                "is the login domain of username/password login; to list one domain's "
                "jobs, set discovery.domain_id",
            )
        elif domain_id is not None and domain is not None:
            self.problem(join(path, "domain_id"), "give either domain or domain_id, not both")

        interval = self.duration(
            m, "poll_interval", path, default_interval, minimum=MIN_POLL_INTERVAL
        )
        timeout = self.duration(m, "timeout", path, min(DEFAULT_TIMEOUT, interval))
        if "timeout" in m and timeout > interval:
            self.problem(
                join(path, "timeout"),
                f"{format_duration(timeout)} is longer than the poll interval "
                f"({format_duration(interval)})",
            )

        jobs = self.string_list(m, "jobs", path, _check_job_id)
        jobs_file = self.path_value(m, "jobs_file", path)
        discovery = self.discovery(m.get("discovery"), join(path, "discovery"))
        if (
            discovery is not None
            and not discovery.enabled
            and not m.get("jobs")
            and m.get("jobs_file") is None
        ):
            self.problem(
                path,
                "nothing to track: discovery is disabled and neither jobs nor jobs_file is set",
            )

        verify_tls = self.boolean(m, "verify_tls", path, True)
        ca_file = self.path_value(m, "ca_file", path)
        if ca_file is not None:
            self.check_ca_file(ca_file, join(path, "ca_file"), url, verify_tls)

        max_concurrency = self.integer(
            m, "max_concurrency", path, DEFAULT_MAX_CONCURRENCY, minimum=1
        )
        max_rate = self.number(m, "max_requests_per_second", path)
        signature_lifetime = self.duration(
            m,
            "signature_lifetime",
            path,
            DEFAULT_SIGNATURE_LIFETIME,
            maximum=MAX_SIGNATURE_LIFETIME,
        )
        page_size = self.integer(
            m, "page_size", path, MAX_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE
        )
        events = (
            self.events(m["events"], join(path, "events"), name or "")
            if m.get("events") is not None
            else None
        )
        if name is None or url is None:
            return None
        return CloudConfig(
            name=name,
            url=url,
            api_key=api_key,
            secret_key=secret_key,
            username=username,
            password=password,
            domain=domain,
            domain_id=domain_id,
            poll_interval=interval,
            jobs=jobs,
            jobs_file=jobs_file,
            discovery=discovery or DiscoveryConfig(),
            verify_tls=verify_tls,
            ca_file=ca_file,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_requests_per_second=max_rate,
            signature_lifetime=signature_lifetime,
            page_size=page_size,
            events=events,
        )

    def events(self, value: object, path: str, cloud: str) -> EventsConfig | None:
        m = self.mapping(value, path, _EVENTS_KEYS)
        if m is None:
            return None
        url = self.string(m, "url", path, required=True, check=_check_amqp_url)
        password, _ = self.either(m, "password", path)
        url_password: Secret | None = None
        if url is not None:
            parsed = URL(url)
            if parsed.password is not None:
                url_password = Secret(parsed.password)
                url = str(parsed.with_password(None))
                if password is not None:
                    self.problem(
                        join(path, "password"),
                        "the URL holds a password already: give it in one place",
                    )
        exchange = self.string(m, "exchange", path, check=_check_amqp_name)
        queue = self.string(m, "queue", path, check=_check_amqp_name)
        verify_tls = self.boolean(m, "verify_tls", path, True)
        ca_file = self.path_value(m, "ca_file", path)
        if ca_file is not None:
            self.check_ca_file(ca_file, join(path, "ca_file"), url, verify_tls, "amqps")
        queue_expires = self.duration(m, "queue_expires", path, DEFAULT_QUEUE_EXPIRES, minimum=60.0)
        max_length = self.integer(m, "queue_max_length", path, DEFAULT_QUEUE_MAX_LENGTH, minimum=1)
        prefetch = self.integer(m, "prefetch", path, DEFAULT_PREFETCH, minimum=1, maximum=65535)
        reconnect_min = self.duration(m, "reconnect_min", path, DEFAULT_RECONNECT_MIN)
        reconnect_max = self.duration(m, "reconnect_max", path, DEFAULT_RECONNECT_MAX)
        if reconnect_max < reconnect_min:
            self.problem(
                join(path, "reconnect_max"),
                f"{format_duration(reconnect_max)} is shorter than reconnect_min "
                f"({format_duration(reconnect_min)})",
            )
        if url is None:
            return None
        return EventsConfig(
            url=url,
            password=password or url_password,
            exchange=exchange or DEFAULT_EVENTS_EXCHANGE,
            queue=queue or f"cloudstack-job-exporter-{cloud}",
            verify_tls=verify_tls,
            ca_file=ca_file,
            queue_expires=queue_expires,
            queue_max_length=max_length,
            prefetch=prefetch,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
        )

    def either(self, m: dict[str, Any], key: str, path: str) -> tuple[Secret | None, bool]:
        """The secret from `key` or `key_file`, and whether either was given at all."""
        file_key = f"{key}_file"
        given_direct = m.get(key) is not None
        given_file = m.get(file_key) is not None
        if given_direct and given_file:
            self.problem(join(path, file_key), f"set {key} or {file_key}, not both")
            return None, True
        if given_file:
            return self.secret_file(m, file_key, path), True
        return self.secret(m, key, path), given_direct

    def credentials(
        self, m: dict[str, Any], path: str
    ) -> tuple[Secret | None, Secret | None, str | None, Secret | None]:
        api_key, has_api_key = self.either(m, "api_key", path)
        secret_key, has_secret_key = self.either(m, "secret_key", path)
        password, has_password = self.either(m, "password", path)
        username = self.string(m, "username", path)
        has_username = m.get("username") is not None

        keys = has_api_key or has_secret_key
        login = has_username or has_password
        if keys and login:
            self.problem(
                path,
                "set either api_key and secret_key, or username and password, not both",
            )
        elif has_api_key and not has_secret_key:
            self.problem(join(path, "secret_key"), "is required with api_key (or secret_key_file)")
        elif has_secret_key and not has_api_key:
            self.problem(join(path, "api_key"), "is required with secret_key (or api_key_file)")
        elif has_username and not has_password:
            self.problem(join(path, "password"), "is required with username (or password_file)")
        elif has_password and not has_username:
            self.problem(join(path, "username"), "is required with password")
        elif not keys and not login:
            self.problem(
                path,
                "no credentials: set api_key and secret_key (or their _file variants), "
                "or username and password",
            )
        return api_key, secret_key, username, password

    def discovery(self, value: object, path: str) -> DiscoveryConfig | None:
        if value is None:
            return DiscoveryConfig()
        m = self.mapping(value, path, _DISCOVERY_KEYS)
        if m is None:
            return None
        account = self.string(m, "account", path)
        domain_id = self.string(m, "domain_id", path)
        if m.get("account") is not None and m.get("domain_id") is None:
            self.problem(
                join(path, "domain_id"),
                "is required with account (an account name is unique only within a domain)",
            )
        return DiscoveryConfig(
            enabled=self.boolean(m, "enabled", path, True),
            listall=self.boolean(m, "listall", path, True),
            account=account,
            domain_id=domain_id,
            include=self.string_list(m, "include", path, _check_regex),
            exclude=self.string_list(m, "exclude", path, _check_regex),
            include_internal=self.boolean(m, "include_internal", path, False),
        )

    def check_ca_file(
        self, ca_file: str, where: str, url: str | None, verify: bool, tls_scheme: str = "https"
    ) -> None:
        if not verify:
            self.problem(where, "has no effect with verify_tls: false")
            return
        if url is not None and not url.lower().startswith(f"{tls_scheme}:"):
            self.problem(where, f"is only used with an {tls_scheme} URL")
            return
        try:
            ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError:  # before OSError, its base class
            self.problem(where, f"{ca_file} holds no usable PEM certificate")
        except OSError as error:
            self.problem(where, f"cannot read {ca_file}: {error.strerror or 'error'}")


def _check_name(value: str) -> str | None:
    if _NAME_RE.fullmatch(value):
        return None
    return (
        f"{_show(value, 40)} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def _check_url(value: str) -> str | None:
    example = "e.g. https://cloud.example.com/client/api"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return f"is not a valid URL ({example})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL with a host ({example})"
    if "@" in parts.netloc:
        # Do not echo it: the part before @ is a credential.
        return "must not contain user:password@; set username and password instead"
    if parts.query or parts.fragment:
        return f"must not have a query string or fragment ({example})"
    if not parts.path.rstrip("/").endswith("/client/api"):
        return f"must end in /client/api ({example}), got {_show(value)}"
    return None


def _check_amqp_url(value: str) -> str | None:
    try:
        url = URL(value)
    except ValueError:
        return "is not a URL"
    if url.scheme not in ("amqp", "amqps"):
        return f"must be an amqp:// or amqps:// URL, not {_show(url.scheme or value)}"
    if not url.host:
        return "has no host"
    try:
        url.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return "has an invalid port"
    return None


def _check_amqp_name(value: str) -> str | None:
    # AMQP short strings: at most 255 bytes; CloudStack's names are plain words.
    if not value or len(value.encode()) > 255:
        return "must be 1 to 255 bytes"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain spaces or control characters"
    return None


def _check_job_id(value: str) -> str | None:
    if is_operator_job_id(value):
        return None
    return (
        f"{_show(value, 40)} is not a job ID (a UUID such as 6f3b0c7e-0000-4000-8000-000000000001)"
    )


def _check_regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as error:
        return f"invalid regular expression: {error}"
    return None
