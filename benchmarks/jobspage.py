"""What `/jobs` costs at 1,000 and 100,000 tracked jobs, and what it does to the event loop.

The real web application (`exporter.web.make_app`) serves a real tracker's jobs in this
process; a client in another thread asks for the page the way operators and scripts do
(the default page, 1,000 rows, a status filter, free text, a sort, the JSON, the last page),
while a probe on the loop measures how late a 10 ms tick fires. Baseline, in the same run:
one pass that sorts every tracked job by creation time, the least any page showing the
oldest pending jobs first must do.

    python benchmarks/jobspage.py [--sizes 1000,100000] [--repeat 5] [--smoke]

Targets: every page bounded (a page of as many rows at most 1.1 times its size at the
smallest N, whatever the number of jobs); the loop never late by more than 50 ms while
pages are built. Like the other benchmarks it is a report: it prints PASS or FAIL per target
and exits 0 whatever the figures (non-zero only when something could not be measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.jobs import parse_job
from exporter.jobspage import CloudHealth, JobsView
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker
from exporter.web import make_app

COMMANDS = (
    "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
    "org.apache.cloudstack.api.command.user.vm.StartVMCmd",
    "org.apache.cloudstack.api.command.user.vm.StopVMCmd",
    "org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd",
    "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
    "org.apache.cloudstack.api.command.admin.vm.MigrateVMCmd",
)

QUERIES = (
    ("default page (100 rows)", ""),
    ("1,000 rows", "?limit=1000"),
    ("status=failed", "?status=failed"),
    ("free text", "?q=tenant-3"),
    ("sort by duration", "?sort=-duration"),
    ("JSON, 100 rows", "?format=json"),
    ("last page", "?page=LAST"),
)


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(ts))


def raw_job(i: int, now: float) -> dict[str, Any]:
    """A job object as queryAsyncJobResult answers it: 60% pending, 35% succeeded, 5% failed."""
    created = now - 7200 + (i * 7) % 7000
    status = 0 if i % 20 < 12 else (2 if i % 20 == 19 else 1)
    obj: dict[str, Any] = {
        "jobid": f"{i:08x}-0000-4000-8000-{i:012x}",
        "cmd": COMMANDS[i % len(COMMANDS)],
        "jobstatus": status,
        "jobprocstatus": 0,
        "jobresultcode": 0 if status < 2 else 530,
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": f"{i:08x}-1111-4000-8000-{i:012x}",
        "accountid": f"acc-{i % 40}",
        "account": f"tenant-{i % 40}",
        "domainid": "dom-1",
        "domainpath": "ROOT",
        "userid": f"user-{i % 40}",
        "created": _date(created),
    }
    if status == 0:
        obj["managementserverid"] = f"ms-{i % 3}"
    else:
        obj["completed"] = _date(created + 5 + i % 90)
        obj["jobresulttype"] = "object"
        obj["jobresult"] = (
            {"errorcode": 530, "errortext": f"host {i % 50} has no capacity for VM {i}"}
            if status == 2
            else {"virtualmachine": {"id": obj["jobinstanceid"]}}
        )
    return obj


def make_tracker(n: int) -> JobTracker:
    now = time.time()
    tracker = JobTracker(
        "prod",
        ExporterMetrics((1.0, 10.0, 100.0)).cloud("prod"),
        retention=86400,
        max_jobs=n + 1,
        watermark=now - 86400,
    )
    for i in range(n):
        tracker.apply(parse_job(raw_job(i, now)), now)
    return tracker


class Source:
    """The service's `jobs_view()`, minus the service: the tracker's view, taken once."""

    def __init__(self, tracker: JobTracker) -> None:
        self.view = tracker.view()
        self.health = [CloudHealth("prod", True, time.time(), 0.4, tracker.size)]

    def jobs_view(self) -> JobsView:
        return JobsView([self.view], self.health)


class _NoMetrics:
    def body(self, openmetrics: bool, gzip: bool) -> bytes:
        return b""


class Server:
    """The app on a loop of its own thread, with a lateness probe on that loop."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.loop = asyncio.new_event_loop()
        self.worst_lateness = 0.0
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.loop.run_forever()

    async def _start(self) -> None:
        self.runner = web.AppRunner(make_app(_NoMetrics(), lambda: True, jobs=self.source))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        self._probe = asyncio.ensure_future(self._tick())
        self._started.set()

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + 0.01
            await asyncio.sleep(0.01)
            self.worst_lateness = max(self.worst_lateness, time.monotonic() - due)

    def __enter__(self) -> Server:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the web app did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._probe.cancel()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def fetch(url: str) -> tuple[float, int, int]:
    """Seconds, bytes and job rows of one page."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        if answer.status != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status}")
        body = answer.read()
    seconds = time.perf_counter() - start
    # JSON lists its jobs; in HTML each job's row has one id cell.
    rows = len(json.loads(body)["jobs"]) if "format=json" in url else body.count(b'<td class="id">')
    return seconds, len(body), rows


def baseline(tracker: JobTracker, repeat: int) -> float:
    jobs = list(tracker.jobs())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sorted(jobs, key=lambda t: t.job.created or 0.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n: int, repeat: int) -> dict[str, Any]:
    tracker = make_tracker(n)
    base = baseline(tracker, repeat)
    last = max(1, -(-n // 100))
    result: dict[str, Any] = {"baseline": base, "pages": {}}
    with Server(Source(tracker)) as server:
        url = f"http://127.0.0.1:{server.port}/jobs"
        fetch(url)  # first request: imports and caches warmed
        server.worst_lateness = 0.0
        for name, query in QUERIES:
            times, size, rows = [], 0, 0
            for _ in range(repeat):
                seconds, size, rows = fetch(url + query.replace("LAST", str(last)))
                times.append(seconds)
            result["pages"][name] = (statistics.median(times), size, rows)
        result["lateness"] = server.worst_lateness
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="job counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="requests per query (median)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to prove it runs")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in ("200,2000" if args.smoke else args.sizes).split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1 or args.repeat < 1:
        parser.error("--sizes needs at least two positive job counts and --repeat at least 1")
    sizes.sort()
    repeat = 2 if args.smoke else args.repeat

    results = {}
    for n in sizes:
        start = time.monotonic()
        results[n] = measure(n, repeat)
        print(f"  measured {n:,} jobs in {time.monotonic() - start:.0f} s", flush=True)

    print("\neach page: median time / size / job rows")
    header = f"{'':<34}" + "".join(f"{f'{n:,} jobs':>28}" for n in sizes)
    print()
    print(header)
    print("-" * len(header))
    for name, _ in QUERIES:
        cells = []
        for n in sizes:
            seconds, size, rows = results[n]["pages"][name]
            cells.append(f"{seconds * 1000:,.0f} ms / {size / 1024:,.0f} KiB / {rows:,}")
        print(f"{name:<34}" + "".join(f"{c:>28}" for c in cells))
    print(
        f"{'baseline: sort every job by age':<34}"
        + "".join(f"{results[n]['baseline'] * 1000:>25,.1f} ms" for n in sizes)
    )
    print(
        f"{'  default page / baseline':<34}"
        + "".join(
            f"{results[n]['pages'][QUERIES[0][0]][0] / results[n]['baseline']:>28.1f}"
            for n in sizes
        )
    )
    print(
        f"{'worst loop lateness':<34}"
        + "".join(f"{results[n]['lateness'] * 1000:>25,.1f} ms" for n in sizes)
    )
    print()

    # Bounded: a page that shows as many rows at the largest N as at the smallest is no
    # bigger there (the table's size must not leak into the page).
    small, big = sizes[0], sizes[-1]
    same = [
        name
        for name, _ in QUERIES
        if results[big]["pages"][name][2] == results[small]["pages"][name][2]
    ]
    grown = max(
        (results[big]["pages"][name][1] / results[small]["pages"][name][1] for name in same),
        default=float("inf"),
    )
    lateness = max(results[n]["lateness"] for n in sizes)
    checks = [
        (
            grown <= 1.1,
            f"bounded: a page of as many rows is {grown:.2f}x at {big:,} its size at {small:,}"
            f" ({len(same)} of {len(QUERIES)} queries; <= 1.1)",
        ),
        (
            lateness <= 0.05,
            f"loop: worst lateness {lateness * 1000:.1f} ms while pages are built (<= 50 ms)",
        ),
    ]
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
