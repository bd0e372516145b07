"""The API fault matrix: every way a CloudStack endpoint (or what stands in front of it) can fail.

Two clouds, each on its own simulator; faults are injected into cloud "a" only, so every test
also proves that cloud "b" is untouched. In every case the exporter keeps serving the last good
state, reports `cloudstack_up 0` for the failing cloud, logs one concise line per distinct
failure (and one when it recovers), and recovers by itself once the fault is gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from exporter_harness import Exporter, Metrics, cloud_yaml, write_config
from simulator_fixtures import Credentials, SimHandle

from exporter.config import load_config

pytest_plugins = ["simulator_fixtures"]

# Cloud "a" gives up on an answer after 1 s, so "a server that answers after 40 s" is quick.
A_EXTRA = "timeout: 1s\n"


def two_clouds(
    tmp_path: Path,
    a: SimHandle,
    b: SimHandle,
    *,
    a_creds: Credentials | None = None,
    a_extra: str = A_EXTRA,
    top: str = "",
) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        [cloud_yaml("a", a, a_creds, extra=a_extra), cloud_yaml("b", b)],
        top=top,
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What an operator sees at the default level: the exporter's records at info and above."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO
        and r.name.startswith("exporter")
        and not r.name.startswith("cloudstack_simulator")
    ]


def assert_concise(record: logging.LogRecord) -> None:
    message = record.getMessage()
    assert not record.exc_info, f"traceback logged: {message}"
    assert "\n" not in message and "Traceback" not in message
    assert len(message) < 400, message


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def job_series(metrics: Metrics, cloud: str, without: str = "") -> list[Sample]:
    """Every per-job sample of one cloud: what "the last good state" means for a scrape.
    (Ages are left out: a job's age keeps growing while its cloud cannot be asked.)"""
    return sorted(
        (name, tuple(sorted(labels.items())), value)
        for name, labels, value in metrics.samples
        if name.startswith("cloudstack_async_job_")
        and name != "cloudstack_async_job_age_seconds"
        and labels.get("cloud") == cloud
        and labels.get("job_id") not in (None, without)
    )


# kind -> (fault spec, the `code` label of the failed listAsyncJobs call, a word of the log line)
FAILING: dict[str, tuple[dict[str, Any], str, str]] = {
    "proxy_502": ({}, "502", "502"),
    "truncated": ({}, "error", "cut short"),
    "empty": ({}, "error", "empty body"),
    "xml": ({}, "error", "XML"),
    "not_json": ({}, "error", "not JSON"),
    "reset": ({}, "error", "127.0.0.1"),
    "outage": ({}, "error", "cannot connect"),
    "latency": ({"seconds": 40}, "error", "within 1s"),
    # Ill-typed JSON is an unreadable body, whatever the HTTP status said.
    "asyncjobs_not_list": ({}, "error", "not a list"),
    "http_error": ({"status": 503}, "503", "503"),
}


@pytest.mark.parametrize("kind", list(FAILING))
async def test_failure_keeps_last_state_logs_once_and_recovers(
    kind: str,
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec, code, word = FAILING[kind]
    a_ids = await simulator.create_jobs(3, cmd="DeployVMCmd")
    b_ids = await second_simulator.create_jobs(2, cmd="StopVMCmd")
    caplog.set_level(logging.DEBUG)
    async with Exporter(two_clouds(tmp_path, simulator, second_simulator)) as exporter:
        good = await exporter.metrics()
        assert good.job_ids("a") == set(a_ids)
        calls = {"cloud": "a", "command": "listAsyncJobs", "code": code}
        calls_before = good.total("cloudstack_api_requests_total", **calls)
        caplog.clear()

        await simulator.add_fault(kind, **spec)
        await second_simulator.finish(b_ids[0], "success")
        await asyncio.wait_for(exporter.cycle(3), timeout=30)
        metrics = await exporter.metrics()

        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.value("cloudstack_up", cloud="b") == 1
        assert job_series(metrics, "a") == job_series(good, "a")  # the last good state
        assert metrics.value("cloudstack_async_job_status", cloud="b", job_id=b_ids[0]) == 1
        assert metrics.total("cloudstack_api_requests_total", **calls) == calls_before + 3
        assert metrics.value("cloudstack_exporter_malformed_jobs_total", cloud="a") in (0, None)
        failed = lines(caplog)
        assert len(failed) == 1, [r.getMessage() for r in failed]
        assert failed[0].levelno == logging.ERROR
        assert getattr(failed[0], "cloud", None) == "a"
        assert word in failed[0].getMessage()
        assert_concise(failed[0])

        caplog.clear()
        await simulator.clear_faults()
        await simulator.finish(a_ids[0], "failure", result_code=530, errortext="no capacity")
        await exporter.cycle(3)
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.value("cloudstack_async_job_status", cloud="a", job_id=a_ids[0]) == 2
        recovered = lines(caplog)
        assert [r.getMessage() for r in recovered] == ["cloud recovered"]
        assert getattr(recovered[0], "cloud", None) == "a"


# Faults that corrupt single job entries: the entries are skipped and counted, the poll succeeds.
ENTRY_FAULTS = ["jobstatus_abc", "created_yesterday", "cmd_null", "entries_not_objects"]


@pytest.mark.parametrize("kind", ENTRY_FAULTS)
async def test_malformed_list_entries_are_skipped_counted_and_never_poison_others(
    kind: str,
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a_ids = await simulator.create_jobs(4, cmd="StartVMCmd")
    await second_simulator.create_jobs(1)
    caplog.set_level(logging.DEBUG)
    async with Exporter(two_clouds(tmp_path, simulator, second_simulator)) as exporter:
        good = await exporter.metrics()
        caplog.clear()
        await simulator.add_fault(kind, commands=["listAsyncJobs"])
        # One job finishes meanwhile: it leaves the (corrupted) list and is queried as usual.
        await simulator.finish(a_ids[1], "success")
        await exporter.cycle(3)
        metrics = await exporter.metrics()

        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.value("cloudstack_up", cloud="b") == 1
        malformed = metrics.value("cloudstack_exporter_malformed_jobs_total", cloud="a")
        assert malformed is not None and malformed >= 3
        assert metrics.job_ids("a") == set(a_ids)
        assert metrics.value("cloudstack_async_job_status", cloud="a", job_id=a_ids[1]) == 1
        # The pending ones keep their last good series: nothing was overwritten by garbage.
        assert job_series(metrics, "a", without=a_ids[1]) == job_series(good, "a", without=a_ids[1])
        warned = lines(caplog)
        assert len(warned) == 1, [r.getMessage() for r in warned]
        assert warned[0].levelno == logging.WARNING
        assert "malformed" in warned[0].getMessage()
        assert_concise(warned[0])

        caplog.clear()
        await simulator.clear_faults()
        await exporter.cycle(2)
        assert len(lines(caplog)) == 1  # "no more malformed entries"
        again = await exporter.metrics()
        assert again.value("cloudstack_exporter_malformed_jobs_total", cloud="a") == malformed


@pytest.mark.parametrize("kind", ["jobstatus_abc", "created_yesterday", "cmd_null"])
async def test_malformed_query_answer_does_not_corrupt_the_job(
    kind: str, simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(2, cmd="StopVMCmd")
    async with Exporter(two_clouds(tmp_path, simulator, second_simulator)) as exporter:
        await simulator.add_fault(kind, commands=["queryAsyncJobResult"])
        await simulator.finish(ids[0], "success")
        await exporter.cycle(2)
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        # Still shown as it was last seen well: pending, with its command.
        status = metrics.find("cloudstack_async_job_status", cloud="a", job_id=ids[0])
        assert [(labels["cmd"], value) for labels, value in status] == [("StopVMCmd", 0)]
        assert metrics.total("cloudstack_async_jobs_finished_total", cloud="a") == 0
        assert metrics.value("cloudstack_exporter_malformed_jobs_total", cloud="a") == 2

        await simulator.clear_faults()
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_async_job_status", cloud="a", job_id=ids[0]) == 1
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="StopVMCmd",
                status="succeeded",
                result_code="0",
            )
            == 1
        )


async def test_count_as_a_string_still_lists_every_page(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(5)
    extra = A_EXTRA + "page_size: 2\n"
    async with Exporter(
        two_clouds(tmp_path, simulator, second_simulator, a_extra=extra)
    ) as exporter:
        await simulator.add_fault("count_string", commands=["listAsyncJobs"])
        await simulator.reset_counters()
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.job_ids("a") == set(ids)
        # Without a usable count, the short third page ends the listing: no extra request.
        assert (await simulator.counters())["by_command"] == {"listAsyncJobs": 3}


async def test_scrape_answers_while_a_poll_hangs(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(2)
    config = two_clouds(tmp_path, simulator, second_simulator, a_extra="timeout: 5s\n")
    async with Exporter(config) as exporter:
        await simulator.add_fault("latency", seconds=40)
        await simulator.reset_counters()
        cycle = asyncio.create_task(exporter.cycle())
        for _ in range(200):  # until the request is on the wire, held by the server
            if (await simulator.counters())["total"]:
                break
            await asyncio.sleep(0.01)

        metrics = await asyncio.wait_for(exporter.metrics(), timeout=4)
        status, _, _ = await asyncio.wait_for(exporter.get("/-/healthy"), timeout=4)
        assert not cycle.done()  # the scrape did not wait for the poll
        assert status == 200
        assert metrics.value("cloudstack_up", cloud="a") == 1  # the last good state
        assert metrics.job_ids("a") == set(ids)

        await asyncio.wait_for(cycle, timeout=20)  # the client's timeout, not the server's 40 s
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.job_ids("a") == set(ids)


def test_default_request_timeout_is_at_most_ten_seconds(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "clouds:\n  - name: a\n    url: http://127.0.0.1:1/client/api\n"
        "    api_key: k\n    secret_key: s\n"
    )
    cloud = load_config(str(path)).clouds[0]
    assert 0 < cloud.timeout <= 10


async def test_throttling_is_honoured_without_failing_the_poll(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Root admins are exempt from the API limit; a normal account is not.
    ids = await simulator.create_jobs(2, account="ops")
    await simulator.throttle(1, interval=1.0)
    config = two_clouds(tmp_path, simulator, second_simulator, a_creds=simulator.ops)
    async with Exporter(config) as exporter:
        await simulator.reset_counters()
        caplog.set_level(logging.INFO)
        caplog.clear()
        await exporter.cycle(3)
        metrics = await exporter.metrics()
        counters = await simulator.counters()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.job_ids("a") == set(ids)
        throttled = counters["by_code"].get("429", 0)
        # Each limited call waited out the window the server named, so each cycle met the
        # limit at most once and its retry went through; a client that did not wait would
        # have been refused again and again.
        assert 1 <= throttled <= 3
        assert counters["by_code"]["200"] == 3
        assert (
            metrics.value(
                "cloudstack_api_requests_total", cloud="a", command="listAsyncJobs", code="429"
            )
            == throttled
        )
        assert lines(caplog) == []


async def test_a_long_throttle_fails_the_poll_and_delays_the_next_one(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await simulator.create_jobs(1, account="ops")
    config = two_clouds(tmp_path, simulator, second_simulator, a_creds=simulator.ops)
    async with Exporter(config) as exporter:
        await simulator.throttle(1, interval=600)
        caplog.set_level(logging.INFO)
        caplog.clear()
        await exporter.cycle(3)  # the first call opens the window; the next ones are refused
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.value("cloudstack_up", cloud="b") == 1
        failed = lines(caplog)
        assert len(failed) == 1 and "429" in failed[0].getMessage()
        assert_concise(failed[0])
        # The server asked for ~10 minutes: the next poll is not sooner, whatever the back-off.
        assert exporter.poller("a").next_delay() >= 500
        await simulator.throttle(None)
        await exporter.cycle()
        assert (await exporter.metrics()).value("cloudstack_up", cloud="a") == 1
        assert exporter.poller("a").next_delay() == exporter.poller("a").cloud.poll_interval


async def test_revoked_key_is_one_line_until_new_keys_are_loaded(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = await simulator.create_jobs(2, account="ops")
    config = two_clouds(tmp_path, simulator, second_simulator)
    async with Exporter(config) as exporter:
        caplog.set_level(logging.DEBUG)
        caplog.clear()
        await simulator.revoke_key(api_key=simulator.admin.api_key)
        await exporter.cycle(3)
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.value("cloudstack_up", cloud="b") == 1
        assert metrics.job_ids("a") == set(ids)
        assert (
            metrics.value(
                "cloudstack_api_requests_total", cloud="a", command="listAsyncJobs", code="401"
            )
            == 3
        )
        failed = lines(caplog)
        assert len(failed) == 1
        assert "401" in failed[0].getMessage() and "api_key" in failed[0].getMessage()
        assert_concise(failed[0])
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert simulator.admin.api_key not in text and simulator.admin.secret_key not in text

        # The operator puts new keys in the file and reloads: polling resumes, history kept.
        two_clouds(tmp_path, simulator, second_simulator, a_creds=simulator.ops)
        assert await exporter.service.reload()
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.job_ids("a") == set(ids)


async def test_disabled_account_recovers_by_itself_when_enabled(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await simulator.create_jobs(1, account="ops")
    config = two_clouds(tmp_path, simulator, second_simulator, a_creds=simulator.ops)
    async with Exporter(config) as exporter:
        caplog.set_level(logging.INFO)
        caplog.clear()
        await simulator.set_enabled("ops", False)
        await exporter.cycle(3)
        assert (await exporter.metrics()).value("cloudstack_up", cloud="a") == 0
        await simulator.set_enabled("ops", True)
        await exporter.cycle(2)
        assert (await exporter.metrics()).value("cloudstack_up", cloud="a") == 1
        messages = [r.getMessage() for r in lines(caplog)]
        assert len(messages) == 2 and "401" in messages[0]
        assert messages[1] == "cloud recovered"


async def test_a_storm_of_5xx_is_one_line_per_distinct_failure_and_backs_off(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await simulator.create_jobs(2)
    async with Exporter(two_clouds(tmp_path, simulator, second_simulator)) as exporter:
        caplog.set_level(logging.INFO)
        caplog.clear()
        await simulator.reset_counters()
        await simulator.add_fault("http_error", status=500, count=2)
        await simulator.add_fault("http_error", status=503, count=3)
        await simulator.add_fault("proxy_502", count=2)
        poller = exporter.poller("a")
        # A short interval for the back-off arithmetic; the test drives the cycles itself.
        poller.cloud = dataclasses.replace(poller.cloud, poll_interval=2.0)
        delays = []
        for _ in range(10):
            await exporter.cycle()
            delays.append(poller.next_delay())
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.value("cloudstack_up", cloud="b") == 1
        # One request a cycle: a failing server is not hammered with retries.
        assert (await simulator.counters())["total"] == 10
        messages = [r.getMessage() for r in lines(caplog)]
        assert len(messages) == 4, messages
        assert "500" in messages[0] and "503" in messages[1] and "502" in messages[2]
        assert messages[3] == "cloud recovered"
        # Exponential back-off while failing (jittered by at most 20 %); then back to normal.
        assert 1.6 <= delays[0] <= 2.4
        assert 0.8 * 128 <= delays[6] <= 1.2 * 128  # 2 s doubled six times
        assert delays[0] < delays[2] < delays[4] < delays[6]
        assert delays[7:] == [2.0, 2.0, 2.0]


async def test_session_login_survives_expired_sessions_and_reports_bad_passwords(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = await simulator.create_jobs(1, account="ops")
    ops = simulator.ops
    extra = A_EXTRA + f"username: {ops.username}\npassword: {ops.password}\ndomain: {ops.domain}\n"
    config = write_config(
        tmp_path / "config.yaml",
        [
            f"- name: a\n  url: {simulator.url}\n" + "".join(f"  {line}\n" for line in
                                                        extra.splitlines()),
            cloud_yaml("b", second_simulator),
        ],
    )  # fmt: skip
    async with Exporter(config) as exporter:
        caplog.set_level(logging.INFO)
        caplog.clear()
        await simulator.expire_sessions()
        await exporter.cycle(2)
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1  # logged in again, on its own
        assert metrics.job_ids("a") == set(ids)
        assert [r.levelno for r in lines(caplog)] == [logging.INFO]  # "logging in again"

        caplog.clear()
        await simulator.set_enabled("ops", False)
        await simulator.expire_sessions()
        await exporter.cycle(3)
        assert (await exporter.metrics()).value("cloudstack_up", cloud="a") == 0
        errors = [r for r in lines(caplog) if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert_concise(errors[0])
        assert ops.password not in errors[0].getMessage()


async def test_a_refused_login_before_a_query_is_the_cloud_down_not_the_jobs_forbidden(
    simulator: SimHandle, tmp_path: Path
) -> None:
    """Without discovery a cycle only queries; a query's re-login refused (531, as for
    another account's job) must fail the cycle and keep the jobs, not drop them."""
    ids = await simulator.create_jobs(2, account="ops")
    ops = simulator.ops
    login = f"username: {ops.username}\npassword: {ops.password}\ndomain: {ops.domain}\n"
    extra = A_EXTRA + login + f"jobs: [{', '.join(ids)}]\ndiscovery:\n  enabled: false\n"
    lines_ = "".join(f"  {line}\n" for line in extra.splitlines())
    config = write_config(
        tmp_path / "config.yaml", [f"- name: a\n  url: {simulator.url}\n" + lines_]
    )
    async with Exporter(config) as exporter:
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.job_ids("a") == set(ids)

        await simulator.set_enabled("ops", False)
        await simulator.expire_sessions()
        await exporter.cycle(2)
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.job_ids("a") == set(ids)
        dropped = "cloudstack_exporter_jobs_dropped_total"
        assert metrics.value(dropped, cloud="a", reason="forbidden") == 0

        await simulator.set_enabled("ops", True)
        await simulator.finish(ids[0], "success")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.value("cloudstack_async_job_status", cloud="a", job_id=ids[0]) == 1
        assert metrics.value("cloudstack_async_job_status", cloud="a", job_id=ids[1]) == 0


async def test_a_crashing_cycle_counts_as_a_failed_poll_and_polling_goes_on(
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug that raises inside a cycle (here: planted in the tracker) must not stop the
    exporter: the cloud shows down, readiness is reached, one line is logged, and polling
    recovers by itself once the cycle works again."""
    from exporter.tracker import JobTracker

    ids = await simulator.create_jobs(2)
    broken = {"a": True}
    expire = JobTracker.expire

    def planted(self: JobTracker, now: float) -> None:
        if broken.get(self.cloud):
            raise RuntimeError("planted bug")
        expire(self, now)

    monkeypatch.setattr(JobTracker, "expire", planted)
    caplog.set_level(logging.INFO)
    # Cloud "a" runs on its own loop every second; "b" keeps the harness's long interval.
    config = two_clouds(
        tmp_path, simulator, second_simulator, a_extra="poll_interval: 1s\ntimeout: 1s\n"
    )
    async with Exporter(config) as exporter:
        assert exporter.service.ready()  # although every cycle of "a" so far crashed
        status, _, _ = await exporter.get("/-/ready")
        assert status == 200
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.value("cloudstack_up", cloud="b") == 1
        while exporter.poller("a").failures < 2:  # a second crash, after the back-off
            await asyncio.sleep(0.05)
        crashed = lines(caplog)
        assert [r.getMessage() for r in crashed if getattr(r, "cloud", "") == "a"] == [
            "poll cycle crashed: RuntimeError"
        ]

        broken["a"] = False
        for _ in range(200):
            metrics = await exporter.metrics()
            if metrics.value("cloudstack_up", cloud="a") == 1:
                break
            await asyncio.sleep(0.05)
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.job_ids("a") == set(ids)
        assert lines(caplog)[-1].getMessage() == "cloud recovered"


# -- secrets ---------------------------------------------------------------------------------


# `name=value` with a value that is not masked ("***") or absent (a repr's "None").
QUERY_SECRET = re.compile(
    r"(?i)\b(apikey|signature|sessionkey|password|secretkey|jsessionid)=(?!None\b|'?\*\*\*)[^&\s,)]"
)


def secrets_of(exporter: Exporter, *known: str) -> set[str]:
    """Every credential in play: the configured ones (`known`) and what the clients got from
    the servers at login (session keys, cookies)."""
    found = set(known)
    for cloud in exporter.service.clouds.values():
        client = cloud.poller.client
        if client._session_key:
            found.add(client._session_key)
        if client._session is not None:
            found |= {cookie.value for cookie in client._session.cookie_jar if cookie.value}
    return {s for s in found if len(s) >= 4}


def everything_said(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record, raw (before any redaction by a handler): message, fields, exception."""
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.extend(str(v) for k, v in record.__dict__.items() if k not in ("msg", "args"))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


@pytest.mark.parametrize("auth", ["keys", "session"])
async def test_secrets_never_appear_in_logs_errors_metrics_or_reprs(
    auth: str,
    simulator: SimHandle,
    second_simulator: SimHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ops = simulator.ops
    await simulator.create_jobs(2, account="ops")
    if auth == "keys":
        config = two_clouds(tmp_path, simulator, second_simulator, a_creds=ops)
    else:
        login = f"username: {ops.username}\npassword: {ops.password}\ndomain: {ops.domain}\n"
        config = write_config(
            tmp_path / "config.yaml",
            [
                f"- name: a\n  url: {simulator.url}\n"
                + "".join(f"  {line}\n" for line in (A_EXTRA + login).splitlines()),
                cloud_yaml("b", second_simulator),
            ],
        )
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with Exporter(config) as exporter:
        configured = [second_simulator.admin.api_key, second_simulator.admin.secret_key]
        configured += [ops.api_key, ops.secret_key] if auth == "keys" else [ops.password]
        secrets = secrets_of(exporter, *configured)
        poller = exporter.poller("a")

        async def cycle() -> None:
            result = await poller.poll_once()
            if result.error is not None:
                errors.append(result.error)
            await exporter.service.settle()

        for kind, spec in [
            ("http_error", {"status": 401, "count": 1}),
            ("proxy_502", {"count": 1}),
            ("truncated", {"count": 1}),
            ("xml", {"count": 1}),
            ("reset", {"count": 1}),
            ("latency", {"seconds": 40, "count": 1}),
        ]:
            await simulator.add_fault(kind, **spec)
            await cycle()
        await simulator.expire_sessions()
        await cycle()
        secrets |= secrets_of(exporter)  # a new session key, after the new login
        await simulator.throttle(1, interval=600)
        await cycle()
        await cycle()
        await simulator.throttle(None)
        await simulator.set_enabled("ops", False)
        await simulator.expire_sessions()
        await cycle()
        await simulator.set_enabled("ops", True)
        await simulator.revoke_key(api_key=ops.api_key)
        await cycle()
        secrets |= secrets_of(exporter)
        assert len(errors) >= 6

        _, _, body = await exporter.get("/metrics")
        reprs = [
            repr(exporter.service.config),
            str(exporter.service.config),
            repr(poller.cloud),
            repr(poller.client),
            repr(poller),
        ]
    said = everything_said(caplog)
    shown = "\n".join([said, body.decode(), *reprs, *map(str, errors), *map(repr, errors)])
    shown += "\n".join(str(vars(e)) for e in errors)
    leaked = [s for s in secrets if s in shown]
    assert leaked == [], "secrets leaked"
    # Not even a signature (its value is unknown here) or a query string carrying one.
    assert QUERY_SECRET.search(shown) is None, QUERY_SECRET.search(shown)


# -- the real process ------------------------------------------------------------------------


async def test_daemon_rides_out_every_fault_with_one_line_each(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    """The command as deployed, at debug level: it stays up and keeps answering through a
    sequence of faults, logs each distinct failure once, recovers, and never logs a secret."""
    import json

    from exporter_process import ExporterProcess

    ids = await simulator.create_jobs(3)
    await simulator.workload(rate=5, seed=3)
    config = write_config(
        tmp_path / "config.yaml",
        [cloud_yaml("a", simulator, extra=A_EXTRA), cloud_yaml("b", second_simulator)],
    )
    config.write_text(config.read_text().replace("poll_interval: 1h", "poll_interval: 1s"))
    daemon = ExporterProcess(
        config, tmp_path / "exporter.log", "--log.level=debug", "--log.format=json"
    )
    faults = ["proxy_502", "truncated", "reset", "latency"]
    try:
        await daemon.start()

        def failed_lists(text: str) -> float:
            calls = Metrics(text).find(
                "cloudstack_api_requests_total", cloud="a", command="listAsyncJobs"
            )
            return sum(value for labels, value in calls if labels["code"] != "200")

        def still_serving(text: str) -> bool:
            metrics = Metrics(text)
            assert metrics.value("cloudstack_up", cloud="b") == 1
            assert metrics.job_ids("a") >= set(ids)
            return True

        for kind in faults:
            spec: dict[str, Any] = {"seconds": 40} if kind == "latency" else {}
            before = failed_lists((await daemon.get())[1])
            await simulator.add_fault(kind, commands=["listAsyncJobs"], **spec)
            # Two failing cycles (the second after a back-off), scraped all along.
            await daemon.until(
                lambda _, t, n=before + 2: still_serving(t) and failed_lists(t) >= n, timeout=30
            )
            await simulator.clear_faults()
            await daemon.until(
                lambda _, t: Metrics(t).value("cloudstack_up", cloud="a") == 1, timeout=30
            )
        assert daemon.alive
        code = await daemon.stop()
    finally:
        await daemon.kill()
    assert code == 0
    log = daemon.log_text()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log
    failures = [r for r in records if r["level"] == "error" and r.get("cloud") == "a"]
    assert len(failures) == len(faults), [r["msg"] for r in failures]
    recovered = [r for r in records if r["msg"] == "cloud recovered"]
    assert len(recovered) == len(faults)
    assert not [r for r in records if r["level"] in ("warn", "error") and r.get("cloud") == "b"]
    for secret in (
        simulator.admin.api_key,
        simulator.admin.secret_key,
        second_simulator.admin.secret_key,
    ):
        assert secret not in log
    assert "signature=" not in log.lower()
