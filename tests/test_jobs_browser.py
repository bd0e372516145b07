"""The jobs page in a real browser: Debian's Chromium, driven by selenium."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from browser import console_errors, navigating, save_screenshot

from exporter import jobspage
from exporter.jobs import parse_job
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker
from exporter.web import make_app

pytest_plugins = ["browser"]

SCRIPT_TEXT = "<script>window.pwned = 1</script>"
IMG_TEXT = '"><img src=x onerror="window.pwned = 2">'
CMDS = ("StopVMCmd", "StartVMCmd", "DeployVMCmd", "CreateSnapshotCmd")


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(ts))


def api_job(i: int, status: int, now: float, error: str = "") -> dict[str, Any]:
    created = now - 3600 + i % 3000
    obj: dict[str, Any] = {
        "jobid": f"00000000-0000-4000-8000-{i:012d}",
        "jobstatus": status,
        "jobprocstatus": 0,
        "jobresultcode": 530 if status == 2 else 0,
        "cmd": f"org.apache.cloudstack.api.command.admin.vm.{CMDS[i % len(CMDS)]}ByAdmin",
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": f"11111111-0000-4000-8000-{i:012d}",
        "accountid": "acc-uuid",
        "account": f"tenant-{i % 7}",
        "userid": "user-uuid",
        "created": _date(created),
    }
    if status:
        obj["completed"] = _date(created + 5 + i % 400)
        obj["jobresulttype"] = "object"
        obj["jobresult"] = (
            {"errorcode": 530, "errortext": error or f"host {i} unreachable"}
            if status == 2
            else {"virtualmachine": {"id": obj["jobinstanceid"]}}
        )
    return obj


class Source:
    def __init__(self, trackers: list[JobTracker]) -> None:
        self.trackers = trackers

    def jobs_view(self) -> jobspage.JobsView:
        return jobspage.JobsView(
            [t.view() for t in self.trackers],
            [
                jobspage.CloudHealth(t.cloud, True, time.time() - 3, 0.25, len(t.view().jobs))
                for t in self.trackers
            ],
        )


def tracker_with(jobs: list[dict[str, Any]], cloud: str = "prod") -> JobTracker:
    tracker = JobTracker(
        cloud,
        ExporterMetrics((1.0, 10.0, 100.0)).cloud(cloud),
        retention=86400,
        max_jobs=200_000,
        watermark=time.time() - 86400,
    )
    now = time.time()
    for obj in jobs:
        tracker.apply(parse_job(obj), now)
    return tracker


class _Metrics:
    def body(self, openmetrics: bool, gzip: bool) -> bytes:
        return b""


def serve(source: Source) -> Iterator[str]:
    """The real web app in a thread of its own: selenium blocks, the server must not."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        app = make_app(_Metrics(), lambda: True, jobs=source)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    started.wait(30)
    try:
        yield f"http://127.0.0.1:{holder['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture
def small_site() -> Iterator[str]:
    now = time.time()
    jobs = [api_job(i, i % 3, now) for i in range(60)]
    jobs.append(api_job(900, 2, now, error=SCRIPT_TEXT))
    jobs.append(api_job(901, 2, now, error=IMG_TEXT))
    yield from serve(Source([tracker_with(jobs)]))


def rows(driver: Any) -> list[Any]:
    return [
        r
        for r in driver.find_elements("css selector", "tbody tr")
        if "group" not in (r.get_attribute("class") or "")
    ]


def column(driver: Any, title: str) -> list[str]:
    headers = [h.text.rstrip(" ▲▼") for h in driver.find_elements("css selector", "thead th")]
    index = headers.index(title)
    return [r.find_elements("tag name", "td")[index].text for r in rows(driver)]


def test_the_page_loads_with_no_console_errors_and_groups_the_jobs(
    browser: Any, small_site: str
) -> None:
    browser.get(small_site + "/jobs")
    assert browser.title == "CloudStack jobs"
    assert console_errors(browser) == []
    groups = [g.text for g in browser.find_elements("css selector", "tr.group th")]
    assert groups == [
        "Pending, oldest first",
        "Failed and cancelled",
        "Succeeded, most recent first",
    ]
    statuses = column(browser, "status")
    assert statuses == sorted(statuses, key=["pending", "failed", "succeeded"].index)
    assert "prod" in browser.find_element("css selector", ".health").text
    save_screenshot(browser, "jobs-page.png")


def test_filters_from_the_form_give_a_link_that_can_be_shared(
    browser: Any, small_site: str
) -> None:
    browser.get(small_site + "/jobs")
    browser.find_element("css selector", "input[name=status][value=failed]").click()
    browser.find_element("css selector", "select[name=cmd] option[value=StopVMCmd]").click()
    navigating(browser, browser.find_element("css selector", "form button").click)
    assert "status=failed" in browser.current_url and "cmd=StopVMCmd" in browser.current_url
    assert set(column(browser, "status")) == {"failed"}
    assert set(column(browser, "command")) == {"StopVMCmd"}
    shared = browser.current_url
    browser.get(shared)  # what the refresh does: the same URL, the same rows
    assert set(column(browser, "status")) == {"failed"}
    assert console_errors(browser) == []


def test_free_text_finds_a_job_by_its_instance(browser: Any, small_site: str) -> None:
    browser.get(small_site + "/jobs")
    field = browser.find_element("css selector", "input[name=q]")
    field.send_keys("11111111-0000-4000-8000-000000000017")
    navigating(browser, field.submit)
    assert column(browser, "instance id") == ["11111111-0000-4000-8000-000000000017"]


def test_sorting_by_a_column_and_back(browser: Any, small_site: str) -> None:
    browser.get(small_site + "/jobs?status=succeeded")
    navigating(browser, browser.find_element("link text", "job id").click)
    ids = column(browser, "job id")
    assert ids == sorted(ids) and len(ids) > 1
    assert "status=succeeded" in browser.current_url  # sorting keeps the filters
    navigating(browser, browser.find_element("link text", "job id").click)
    assert column(browser, "job id") == sorted(ids, reverse=True)


def test_markup_in_an_error_text_is_shown_as_text_and_runs_nothing(
    browser: Any, small_site: str
) -> None:
    browser.get(small_site + "/jobs?status=failed&limit=1000")
    errors = column(browser, "error")
    assert SCRIPT_TEXT in errors and IMG_TEXT in errors
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements("css selector", "tbody img") == []
    assert browser.find_elements("css selector", "tbody script") == []
    assert console_errors(browser) == []


def test_a_hundred_thousand_jobs_give_one_bounded_page(browser: Any) -> None:
    now = time.time()
    tracker = tracker_with([api_job(i, i % 3, now) for i in range(100_000)])
    for url in serve(Source([tracker])):
        browser.get(url + "/jobs")
        assert len(rows(browser)) == jobspage.DEFAULT_LIMIT
        assert "of 100000 matching" in browser.find_element("tag name", "body").text
        browser.get(url + "/jobs?limit=100000")
        assert len(rows(browser)) == jobspage.MAX_LIMIT
        assert len(browser.page_source) < 2_000_000
