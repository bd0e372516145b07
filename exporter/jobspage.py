"""The operator's jobs page: `/jobs` (HTML) and `/jobs?format=json`, from one rendering snapshot.

Everything here is pure: it reads immutable tracker views and per-cloud health, and returns
bytes. The web server runs `select()` and the renderers in a worker thread, so a table of
100,000 jobs never holds the event loop.

Every value from CloudStack is untrusted (error texts carry user-chosen names): it is escaped
for HTML text and attributes; the page has no script at all, its one style block is allowed by
hash in a strict Content-Security-Policy, and refreshing is a `<meta http-equiv=refresh>` that
reloads the same URL, filters included.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from exporter.jobs import JobStatus
from exporter.tracker import TrackedJob, TrackerView

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # rows per page: bounds the page however many jobs are tracked
MAX_TEXT = 200  # a free-text filter longer than this is refused, not searched
REFRESH_SECONDS = 30

# Sortable columns and what each sorts by. Missing values sort last in either direction.
SORT_FIELDS = (
    "cloud",
    "job_id",
    "cmd",
    "status",
    "result_code",
    "instance_type",
    "instance_id",
    "account",
    "management_server",
    "created",
    "completed",
    "duration",
    "age",
)

# What the page says for a finished job whose error text is empty, by what CloudStack does
# (cloudstack-api.md §4 and §6): these jobs carry no `jobresult` at all.
REASON_RESTART = (
    "no result: failed by a management-server restart or node loss (CloudStack stores no "
    "error text for these)"
)
REASON_QUEUE = (
    "no result: failed for blocking a queue too long (job.cancel.threshold.minutes; "
    "CloudStack stores no error text)"
)
REASON_CANCELLED = "cancelled by an administrator (cancelAsyncJob); CloudStack gives no reason"


class QueryError(ValueError):
    """A bad query parameter; the message is shown to the user as it is."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    cloud: str | None = None
    statuses: frozenset[JobStatus] = frozenset()
    cmd: str | None = None
    text: str | None = None
    sort: str | None = None  # None: pending oldest first, then failures, then successes
    descending: bool = False
    page: int = 1
    limit: int = DEFAULT_LIMIT
    json: bool = False

    def params(self, **changes: Any) -> str:
        """The query string of this query with some parameters changed (links keep filters)."""
        values: dict[str, Any] = {
            "cloud": self.cloud,
            "status": sorted(s.label for s in self.statuses) or None,
            "cmd": self.cmd,
            "q": self.text,
            "sort": None if self.sort is None else ("-" if self.descending else "") + self.sort,
            "limit": None if self.limit == DEFAULT_LIMIT else self.limit,
            "page": None if self.page == 1 else self.page,
        }
        values.update(changes)
        pairs: list[tuple[str, str]] = []
        for key, value in values.items():
            if value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                pairs.append((key, str(item)))
        return urlencode(pairs)


_STATUS_BY_LABEL = {s.label: s for s in JobStatus}


def parse_query(params: Mapping[str, Sequence[str]]) -> JobQuery:
    """A JobQuery from the query parameters (name -> every value given, in order)."""
    known = {"cloud", "status", "cmd", "q", "sort", "page", "limit", "format"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise QueryError(
            f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )

    def one(name: str) -> str | None:
        values = params.get(name) or []
        if len(values) > 1:
            raise QueryError(f"{name}: give it once")
        return values[0] if values else None

    statuses: set[JobStatus] = set()
    for value in params.get("status") or []:
        for label in value.split(","):
            if label not in _STATUS_BY_LABEL:
                raise QueryError(
                    f"status: {label[:40]!r} is not one of {', '.join(_STATUS_BY_LABEL)}"
                )
            statuses.add(_STATUS_BY_LABEL[label])
    sort = one("sort") or None
    descending = False
    if sort is not None:
        descending = sort.startswith("-")
        sort = sort.lstrip("-")
        if sort not in SORT_FIELDS:
            raise QueryError(f"sort: {sort[:40]!r} is not one of {', '.join(SORT_FIELDS)}")
    text = one("q") or None
    if text is not None and len(text) > MAX_TEXT:
        raise QueryError(f"q: at most {MAX_TEXT} characters")
    fmt = one("format") or "html"
    if fmt not in ("html", "json"):
        raise QueryError("format: html or json")
    return JobQuery(
        cloud=one("cloud") or None,
        statuses=frozenset(statuses),
        cmd=one("cmd") or None,
        text=text,
        sort=sort,
        descending=descending,
        page=_positive(one("page"), "page", 1, 1_000_000),
        limit=_positive(one("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT),
        json=fmt == "json",
    )


def _positive(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"{name}: expected a whole number, got {value[:20]!r}") from None
    if number < 1:
        raise QueryError(f"{name}: at least 1")
    return min(number, maximum)


@dataclass(frozen=True, slots=True)
class CloudHealth:
    """One cloud's health as the page shows it."""

    name: str
    up: bool | None  # None: not polled yet
    last_success: float | None
    poll_duration: float | None
    tracked: int
    last_error: str = ""  # why the last poll failed; "" after a success
    events: str | None = None  # the event stream's state, None when not configured


@dataclass(frozen=True, slots=True)
class JobsView:
    """What the page reads: the tracker views of the snapshot /metrics was rendered from, and
    each cloud's health as of now. Taken on the event loop (cheap), read in a thread."""

    views: Sequence[TrackerView] = ()
    clouds: Sequence[CloudHealth] = ()


@dataclass(frozen=True, slots=True)
class Row:
    cloud: str
    tracked: TrackedJob
    now: float  # the tracker's time of the last poll: ages are as of then

    @property
    def age(self) -> float | None:
        created = self.tracked.job.created
        if created is None or self.tracked.job.status.final:
            return None
        return max(0.0, self.now - created)

    @property
    def duration(self) -> float | None:
        job = self.tracked.job
        if job.created is None or job.completed is None:
            return None
        return max(0.0, job.completed - job.created)


@dataclass(frozen=True, slots=True)
class Page:
    query: JobQuery
    rows: list[Row]
    total: int  # rows matching the filters, all pages
    tracked: int  # jobs tracked, all clouds
    clouds: list[CloudHealth] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # for the command filter's choices
    generated: float = 0.0

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.query.limit))


def reason(job_status: JobStatus, result_code: int, error: str) -> str:
    """The error text, or what an empty one means for a job that did not succeed."""
    if error or job_status in (JobStatus.PENDING, JobStatus.SUCCEEDED):
        return error
    if job_status is JobStatus.CANCELLED:
        return REASON_CANCELLED
    return REASON_RESTART if result_code == 530 else REASON_QUEUE


def _matches(tracked: TrackedJob, query: JobQuery, needle: str | None) -> bool:
    job = tracked.job
    if query.statuses and job.status not in query.statuses:
        return False
    if query.cmd is not None and job.cmd != query.cmd:
        return False
    if needle is not None:
        haystack = (job.job_id, job.instance_id, job.account, job.account_id, job.error)
        return any(needle in value.lower() for value in haystack if value)
    return True


_GROUP = {
    JobStatus.PENDING: 0,
    JobStatus.FAILED: 1,
    JobStatus.CANCELLED: 1,
    JobStatus.SUCCEEDED: 2,
}


def _default_order(jobs: Sequence[TrackedJob]) -> list[int]:
    """Pending oldest first, then failed and cancelled, then succeeded, each most recent first.

    Each group is sorted by a float alone: a sort comparing floats runs in C's fast path, one
    comparing 100,000 tuples holds the GIL long enough (about 80 ms) to starve the event loop.
    """
    groups: tuple[list[int], list[int], list[int]] = ([], [], [])
    keys: tuple[list[float], list[float], list[float]] = ([], [], [])
    for index, tracked in enumerate(jobs):
        job = tracked.job
        group = _GROUP[job.status]
        if group == 0:
            key = job.created if job.created is not None else math.inf
        else:
            key = -(job.completed or tracked.finished_at or 0.0)
        groups[group].append(index)
        keys[group].append(key)
    order: list[int] = []
    for members, values in zip(groups, keys, strict=True):
        ranks = sorted(range(len(values)), key=values.__getitem__)
        order.extend(members[rank] for rank in ranks)
    return order


def _value(name: str, cloud: str, tracked: TrackedJob, now: float) -> Any:
    """What column `name` sorts by; None or "" when the job has no value there."""
    job = tracked.job
    if name == "cloud":
        return cloud
    if name == "status":
        return int(job.status)
    if name == "account":
        return job.account or job.account_id
    if name == "management_server":
        return job.management_server_name or job.management_server_id
    if name == "duration":
        if job.created is None or job.completed is None:
            return None
        return max(0.0, job.completed - job.created)
    if name == "age":
        if job.created is None or job.status.final:
            return None
        return max(0.0, now - job.created)
    return getattr(job, name)


def select(
    views: Iterable[TrackerView],
    query: JobQuery,
    clouds: Sequence[CloudHealth] = (),
    now: float | None = None,
) -> Page:
    """Filter, sort and cut one page of rows. Reads only immutable views: safe in a thread.

    Matching jobs are kept as they are (no object per job) and sorted by index; only the
    page's rows become `Row`s, so a 100,000-job table costs one pass and one sort."""
    needle = query.text.lower() if query.text else None
    filtering = bool(query.statuses) or query.cmd is not None or needle is not None
    view_list = list(views)
    matched: list[TrackedJob] = []
    owner: list[int] = []  # the index in view_list of each matched job
    tracked = 0
    commands: set[str] = set()
    for index, view in enumerate(view_list):
        tracked += len(view.jobs)
        commands.update(cmd for cmd, _ in view.summary().jobs_by_cmd_status)
        if query.cloud is not None and view.cloud != query.cloud:
            continue
        jobs = [t for t in view.jobs if _matches(t, query, needle)] if filtering else view.jobs
        matched.extend(jobs)
        owner.extend([index] * len(jobs))
    if query.sort is None:
        order = _default_order(matched)
    else:
        name = query.sort
        values = [
            _value(name, view_list[o].cloud, t, view_list[o].now)
            for t, o in zip(matched, owner, strict=True)
        ]
        present = [i for i, v in enumerate(values) if v not in (None, "")]
        missing = [i for i, v in enumerate(values) if v in (None, "")]
        present.sort(key=values.__getitem__, reverse=query.descending)
        order = present + missing
    start = (query.page - 1) * query.limit
    rows = [
        Row(view_list[owner[i]].cloud, matched[i], view_list[owner[i]].now)
        for i in order[start : start + query.limit]
    ]
    return Page(
        query=query,
        rows=rows,
        total=len(order),
        tracked=tracked,
        clouds=list(clouds),
        commands=sorted(c for c in commands if c),
        generated=time.time() if now is None else now,
    )


# --------------------------------------------------------------------------- JSON


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def row_dict(row: Row) -> dict[str, Any]:
    job = row.tracked.job
    return {
        "cloud": row.cloud,
        "job_id": job.job_id,
        "status": job.status.label,
        "cmd": job.cmd,
        "cmd_class": job.cmd_class,
        "result_code": job.result_code,
        "error": job.error,
        "reason": reason(job.status, job.result_code, job.error),
        "instance_type": job.instance_type,
        "instance_id": job.instance_id,
        "account": job.account,
        "account_id": job.account_id,
        "user_id": job.user_id,
        "domain_id": job.domain_id,
        "domain_path": job.domain_path,
        "management_server_id": job.management_server_id,
        "management_server_name": job.management_server_name,
        "created": _iso(job.created),
        "completed": _iso(job.completed),
        "duration_seconds": row.duration,
        "age_seconds": row.age,
    }


def render_json(page: Page) -> bytes:
    return orjson.dumps(
        {
            "total": page.total,
            "page": page.query.page,
            "pages": page.pages,
            "limit": page.query.limit,
            "tracked": page.tracked,
            "clouds": [_health_dict(c) for c in page.clouds],
            "jobs": [row_dict(r) for r in page.rows],
        }
    )


def _health_dict(health: CloudHealth) -> dict[str, Any]:
    return {
        "cloud": health.name,
        "up": health.up,
        "last_successful_poll": _iso(health.last_success),
        "poll_duration_seconds": health.poll_duration,
        "tracked_jobs": health.tracked,
        "last_error": health.last_error,
        "events": health.events,
    }


# --------------------------------------------------------------------------- HTML

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.2em}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th a{color:inherit}td.n{text-align:right;white-space:nowrap}
tr.group th{background:#f3f3f3}
.pending{color:#8a6d00}.failed,.cancelled,.down{color:#b00020}.succeeded,.up{color:#1b6e20}
.err{max-width:28em;min-width:14em;overflow-wrap:anywhere;white-space:pre-wrap}
.health{display:flex;flex-wrap:wrap;gap:1em;margin:.5em 0}
.health div{border:1px solid #ccc;border-radius:4px;padding:.4em .8em}
form{margin:.8em 0}code{font-size:.95em}.muted{color:#666}
td code{font-size:.85em}td.id code{white-space:nowrap}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# No script, no outside resource, no framing; the one style block by its hash.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _time(ts: float | None) -> str:
    return "" if ts is None else _e(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)))


def health_strip(clouds: Sequence[CloudHealth], now: float) -> str:
    """Per-cloud health boxes (the landing page shows them too)."""
    if not clouds:
        return '<p class="muted">No cloud configured.</p>'
    parts = []
    for c in clouds:
        if c.up is None:
            state = '<span class="muted">not polled yet</span>'
        elif c.up:
            state = '<span class="up">up</span>'
        else:
            state = '<span class="down">down</span>'
        last = f"{_ago(now - c.last_success)} ago" if c.last_success is not None else "never"
        lines = [
            f"<strong>{_e(c.name)}</strong> {state}",
            f"last successful poll: {_e(last)}",
            "poll duration: " + ("" if c.poll_duration is None else _e(f"{c.poll_duration:.2f}s")),
            f"tracked jobs: {c.tracked}",
        ]
        if c.events is not None:
            lines.append(f"event stream: {_e(c.events)}")
        if c.last_error:
            lines.append(f'last poll error: <span class="err down">{_e(c.last_error)}</span>')
        parts.append("<div>" + "<br>".join(lines) + "</div>")
    return '<div class="health">' + "".join(parts) + "</div>"


_COLUMNS = (
    ("cloud", "cloud"),
    ("status", "status"),
    ("cmd", "command"),
    ("instance_type", "instance type"),
    ("instance_id", "instance id"),
    ("account", "account"),
    ("management_server", "management server"),
    ("created", "created (UTC)"),
    ("completed", "completed (UTC)"),
    ("duration", "duration"),
    ("age", "age"),
    ("result_code", "result code"),
    ("job_id", "job id"),
)
_GROUP_TITLES = ("Pending, oldest first", "Failed and cancelled", "Succeeded, most recent first")


def _header(query: JobQuery) -> str:
    cells = []
    for name, title in _COLUMNS:
        descending = query.sort == name and not query.descending
        arrow = ""
        if query.sort == name:
            arrow = " ▼" if query.descending else " ▲"
        sort = ("-" if descending else "") + name
        href = "?" + query.params(sort=sort, page=None)
        cells.append(f'<th><a href="{_e(href)}">{_e(title)}</a>{arrow}</th>')
    cells.append("<th>error</th>")
    return "<tr>" + "".join(cells) + "</tr>"


def _row(row: Row) -> str:
    job = row.tracked.job
    status = job.status.label
    account = job.account or job.account_id
    server = job.management_server_name or job.management_server_id
    text = reason(job.status, job.result_code, job.error)
    error_class = "err" if job.error else "err muted"
    cells = (
        f"<td>{_e(row.cloud)}</td>",
        f'<td class="{status}">{status}</td>',
        f'<td title="{_e(job.cmd_class)}">{_e(job.cmd)}</td>',
        f"<td>{_e(job.instance_type)}</td>",
        f"<td><code>{_e(job.instance_id)}</code></td>",
        f"<td>{_e(account)}</td>",
        f"<td>{_e(server)}</td>",
        f'<td class="n">{_time(job.created)}</td>',
        f'<td class="n">{_time(job.completed)}</td>',
        f'<td class="n">{_ago(row.duration)}</td>',
        f'<td class="n">{_ago(row.age)}</td>',
        f'<td class="n">{job.result_code if job.status.final else ""}</td>',
        f'<td class="id"><code>{_e(job.job_id)}</code></td>',
        f'<td class="{error_class}">{_e(text)}</td>',
    )
    return "<tr>" + "".join(cells) + "</tr>"


def _filters(page: Page) -> str:
    q = page.query
    clouds = "".join(
        f'<option value="{_e(c.name)}"{" selected" if q.cloud == c.name else ""}>'
        f"{_e(c.name)}</option>"
        for c in page.clouds
    )
    statuses = "".join(
        f'<label><input type="checkbox" name="status" value="{s.label}"'
        f"{' checked' if s in q.statuses else ''}> {s.label}</label> "
        for s in JobStatus
    )
    commands = "".join(
        f'<option value="{_e(c)}"{" selected" if q.cmd == c else ""}>{_e(c)}</option>'
        for c in page.commands
    )
    hidden = ""
    if q.sort is not None:
        sort = ("-" if q.descending else "") + q.sort
        hidden += f'<input type="hidden" name="sort" value="{_e(sort)}">'
    if q.limit != DEFAULT_LIMIT:
        hidden += f'<input type="hidden" name="limit" value="{q.limit}">'
    return (
        '<form method="get" action="">'
        f'<label>cloud <select name="cloud"><option value="">all</option>{clouds}</select></label> '
        f"{statuses}"
        '<label>command <select name="cmd"><option value="">all</option>'
        f"{commands}</select></label> "
        f'<label>search <input type="search" name="q" value="{_e(q.text or "")}" '
        f'maxlength="{MAX_TEXT}" placeholder="job id, instance id, account, error"></label> '
        f"{hidden}"
        '<button type="submit">Filter</button> <a href="?">clear</a></form>'
    )


def _pager(page: Page) -> str:
    q = page.query
    first = (q.page - 1) * q.limit + 1 if page.total else 0
    last = min(page.total, q.page * q.limit)
    parts = [f"rows {first}–{last} of {page.total} matching ({page.tracked} tracked)"]
    if q.page > 1:
        parts.append(f'<a href="?{_e(q.params(page=q.page - 1))}">previous</a>')
    if q.page < page.pages:
        parts.append(f'<a href="?{_e(q.params(page=q.page + 1))}">next</a>')
    json_href = "?" + q.params(format="json")
    parts.append(f'<a href="{_e(json_href)}">JSON</a>')
    return "<p>" + " · ".join(parts) + "</p>"


def render_html(page: Page, *, title: str = "CloudStack jobs") -> bytes:
    groups = page.query.sort is None
    body: list[str] = []
    current = -1
    for row in page.rows:
        if groups:
            group = _GROUP[row.tracked.job.status]
            if group != current:
                current = group
                body.append(
                    f'<tr class="group"><th colspan="{len(_COLUMNS) + 1}">'
                    f"{_GROUP_TITLES[group]}</th></tr>"
                )
        body.append(_row(row))
    if not body:
        body.append(
            f'<tr><td colspan="{len(_COLUMNS) + 1}" class="muted">No job matches.</td></tr>'
        )
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>{_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p><a href="/">home</a> · refreshed every {REFRESH_SECONDS} s, as of {_time(page.generated)} UTC</p>
{health_strip(page.clouds, page.generated)}
{_filters(page)}
{_pager(page)}
<table>
<thead>{_header(page.query)}</thead>
<tbody>
{"".join(body)}
</tbody>
</table>
{_pager(page)}
</body>
</html>
"""
    return doc.encode()


def build(view: JobsView, query: JobQuery) -> bytes:
    """The page (or its JSON) for one query: the whole expensive part, for a worker thread."""
    page = select(view.views, query, view.clouds)
    return render_json(page) if query.json else render_html(page)


def render_error(message: str) -> bytes:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Bad request</title><style>{STYLE}</style></head><body><h1>Bad request</h1>"
        f'<p class="err">{_e(message)}</p><p><a href="?">all jobs</a></p></body></html>'
    ).encode()
