"""Every job counted? Polling at 15 s, 5 s and 2 s beside the AsyncJobEvent stream.

One simulator publishes its AsyncJobEvents to a private RabbitMQ node and runs a workload of
realistic short jobs (volume creation and snapshot deletion in seconds, stop and start in
10-20 s, deploys in about a minute, some failures). Five exporters watch it at once, each in
its own process: four poll only (every 15 s, 10 s, 5 s, 2 s), one consumes the event stream (and
polls every 5 minutes). When every job has ended and the slowest poller has had a cycle more,
each exporter's `/metrics` is compared with the simulator's truth:

- completeness: sum of `cloudstack_async_jobs_finished_total` / jobs that finished
  (target with events: 100%), and jobs counted twice (counter total minus distinct finished
  job IDs; target 0);
- mean duration: `cloudstack_async_job_duration_seconds` _sum/_count against the true mean of
  completed - created (target with events: error at most 0.5 s);
- cost to CloudStack: the exporter's own `cloudstack_api_requests_total` per minute;
- freshness (events): `/metrics` is fetched every 100 ms, and for each job the time from its
  completion (the simulator's truth) to the first body that shows it final (target: p99 at
  most 1.5 s);
- CPU: a burst of short jobs (two events each), the events exporter's CPU time against a bare
  consumer's (benchmarks/bare_consumer.py: the same AMQP library, declarations and decoding,
  nothing else) consuming the same burst from its own queue (target at most 3x).

    python benchmarks/events.py            # the full run (about 6 minutes); always exits 0
    python benchmarks/events.py --quick    # a shorter workload and burst, same report
    python benchmarks/events.py --smoke    # seconds of tiny workload; exits 1 on any error
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench import API_KEY, PYTHON, SECRET_KEY, Child, machine, spawn, verdict  # noqa: E402

from cloudstack_simulator.broker import SERVER, RabbitNode, free_port  # noqa: E402

EXCHANGE = "cloudstack-events"
TARGET_COUNTED = 1.0
TARGET_MEAN_ERROR = 0.5  # seconds
TARGET_P99 = 1.5  # seconds
TARGET_CPU_RATIO = 3.0
SCRAPE_EVERY = 0.1  # seconds, for the freshness figure
TICK = os.sysconf("SC_CLK_TCK")

# Medians in seconds; log-normal spread; failure probabilities by result code.
MIX: dict[str, dict[str, Any]] = {
    "CreateVolumeCmd": {"weight": 3, "median": 2.0, "sigma": 0.4},
    "DeleteSnapshotCmd": {"weight": 3, "median": 1.5, "sigma": 0.4},
    "StopVMCmd": {"weight": 2, "median": 12.0, "sigma": 0.3, "failures": {"530": 0.05}},
    "StartVMCmd": {"weight": 2, "median": 15.0, "sigma": 0.3, "failures": {"530": 0.05}},
    "DeployVMCmd": {"weight": 1, "median": 55.0, "sigma": 0.25, "failures": {"533": 0.1}},
}


# The smoke run proves the chain works; its short jobs end soon after the workload stops.
SMOKE_MIX: dict[str, dict[str, Any]] = {
    "CreateVolumeCmd": {"weight": 1, "median": 1.0, "sigma": 0.4},
    "StopVMCmd": {"weight": 1, "median": 3.0, "sigma": 0.3, "failures": {"530": 0.2}},
}


@dataclass(frozen=True)
class Settings:
    rate: float  # jobs a second
    duration: float  # seconds of workload
    burst: int  # jobs of the CPU burst (two events each)
    mix: dict[str, dict[str, Any]]


FULL = Settings(rate=1.8, duration=150.0, burst=2500, mix=MIX)
QUICK = Settings(rate=1.8, duration=45.0, burst=1000, mix=MIX)
SMOKE = Settings(rate=2.0, duration=6.0, burst=100, mix=SMOKE_MIX)


@dataclass
class Watcher:
    """One exporter under test."""

    name: str
    poll_interval: float
    events: bool
    child: Child | None = None
    port: int = 0
    counted: float = 0.0
    distinct: int = 0
    observed: float = 0.0
    duration_sum: float = 0.0
    requests: float = 0.0
    requests_before: float = 0.0
    gaps: float = 0.0
    by_source: dict[str, float] = field(default_factory=dict)
    by_status: dict[str, float] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


# --- processes ---------------------------------------------------------------------------------


async def start_simulator(broker_url: str) -> tuple[Child, str]:
    sim = await spawn(
        PYTHON, "-m", "cloudstack_simulator", "--listen", "127.0.0.1:0", "--seed", "1",
        "--events.url", broker_url, "--events.exchange", EXCHANGE,
    )  # fmt: skip
    pattern = re.compile(r"listening on (http://\S+/client/api)")

    def url(_: list[dict[str, Any]], lines: list[str]) -> str | None:
        for line in lines:
            if match := pattern.search(line):
                return match.group(1)
        return None

    return sim, await sim.wait_for(url, timeout=60)


def write_config(path: Path, api: str, w: Watcher, broker_url: str) -> None:
    text = (
        f"poll_interval: {w.poll_interval}\n"
        "max_tracked_jobs: 100000\n"
        "clouds:\n"
        "  - name: sim\n"
        f"    url: {api}\n"
        f"    api_key: {API_KEY}\n"
        f"    secret_key: {SECRET_KEY}\n"
    )
    if w.events:
        text += (
            "    events:\n"
            f"      url: {broker_url}\n"
            f"      exchange: {EXCHANGE}\n"
            f"      queue: bench-{w.name}\n"
            "      reconnect_min: 200ms\n"
        )
    path.write_text(text)


async def start_exporter(w: Watcher, api: str, broker_url: str, workdir: Path) -> None:
    config = workdir / f"{w.name}.yaml"
    write_config(config, api, w, broker_url)
    w.port = free_port()
    w.child = await spawn(
        PYTHON, "-m", "exporter", f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{w.port}", "--log.level=warn",
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


# --- reading /metrics --------------------------------------------------------------------------


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        resp.raise_for_status()
        return await resp.text()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(rows: list[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(v for n, _, v in rows if n == name)


async def wait_until(check: Any, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


async def read_watcher(session: aiohttp.ClientSession, w: Watcher) -> None:
    rows = samples(await fetch(session, w.metrics_url))
    w.counted = total(rows, "cloudstack_async_jobs_finished_total")
    w.observed = total(rows, "cloudstack_async_job_duration_seconds_count")
    w.duration_sum = total(rows, "cloudstack_async_job_duration_seconds_sum")
    w.requests = total(rows, "cloudstack_api_requests_total")
    w.gaps = total(rows, "cloudstack_exporter_event_gaps_total")
    w.distinct = len(
        {lb["job_id"] for n, lb, v in rows if n == "cloudstack_async_job_status" and v != 0}
    )
    w.by_source = {}
    w.by_status = {}
    for n, lb, v in rows:
        if n == "cloudstack_exporter_jobs_finished_by_source_total":
            w.by_source[lb["source"]] = w.by_source.get(lb["source"], 0) + v
        if n == "cloudstack_async_jobs_finished_total":
            w.by_status[lb["status"]] = w.by_status.get(lb["status"], 0) + v


STATUS_LINE = re.compile(r'^cloudstack_async_job_status\{[^}]*job_id="([^"]+)"[^}]*\} (\S+)$', re.M)


async def follow_ends(session: aiohttp.ClientSession, url: str, seen: dict[str, float]) -> None:
    """Record when each job first shows a final status on /metrics, until cancelled."""
    while True:
        started = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError):
            text = await fetch(session, url)
            now = time.time()
            for job_id, value in STATUS_LINE.findall(text):
                if value not in ("0", "0.0") and job_id not in seen:
                    seen[job_id] = now
        await asyncio.sleep(max(0.0, SCRAPE_EVERY - (time.monotonic() - started)))


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Result:
    watchers: list[Watcher]
    truth_finished: int = 0
    truth_by_status: dict[str, int] = field(default_factory=dict)
    truth_mean: float = math.nan
    truth_short: int = 0  # finished jobs shorter than 15 s
    minutes: float = 0.0
    latencies: list[float] = field(default_factory=list)
    burst_events: int = 0
    exporter_cpu: float = math.nan
    bare_cpu: float = math.nan
    errors: list[str] = field(default_factory=list)


async def truth(session: aiohttp.ClientSession, control: str) -> tuple[dict[str, Any], list[Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        params = {"status": "all", "limit": "1000", "offset": str(len(jobs))}
        async with session.get(f"{control}/jobs", params=params) as resp:
            body = await resp.json()
        jobs += body["jobs"]
        if len(body["jobs"]) < 1000:
            return body["stats"], jobs


async def measure(settings: Settings, workdir: Path) -> Result:
    watchers = [
        Watcher("poll-15s", 15.0, events=False),
        Watcher("poll-10s", 10.0, events=False),
        Watcher("poll-5s", 5.0, events=False),
        Watcher("poll-2s", 2.0, events=False),
        Watcher("events", 300.0, events=True),
    ]
    result = Result(watchers)
    node = RabbitNode(workdir / "rabbit")
    sim: Child | None = None
    bare: Child | None = None
    print("  starting a private RabbitMQ node", flush=True)
    await asyncio.to_thread(node.start)
    try:
        sim, api = await start_simulator(node.url)
        control = api.replace("/client/api", "/sim")
        for w in watchers:
            await start_exporter(w, api, node.url, workdir)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            events = watchers[-1]

            async def ready() -> bool:
                for w in watchers:
                    async with session.get(f"http://127.0.0.1:{w.port}/-/ready") as resp:
                        if resp.status != 200:
                            return False
                rows = samples(await fetch(session, events.metrics_url))
                return total(rows, "cloudstack_exporter_events_connected") == 1

            await wait_until(ready, 60, "the exporters to be ready and the stream connected")
            for w in watchers:
                w.requests_before = total(
                    samples(await fetch(session, w.metrics_url)), "cloudstack_api_requests_total"
                )

            seen: dict[str, float] = {}
            follower = asyncio.create_task(follow_ends(session, events.metrics_url, seen))
            started = time.monotonic()
            # API jobs only: VM work sub-jobs have no events and no exporter counts them.
            workload = {"rate": settings.rate, "seed": 7, "mix": settings.mix, "work_jobs": False}
            async with session.post(f"{control}/workload", json=workload) as resp:
                resp.raise_for_status()
            print(f"  workload: {settings.rate:g} jobs/s for {settings.duration:.0f} s", flush=True)
            await asyncio.sleep(settings.duration)
            async with session.delete(f"{control}/workload") as resp:
                resp.raise_for_status()

            async def drained() -> bool:
                async with session.get(f"{control}/jobs", params={"limit": "0"}) as resp:
                    return int((await resp.json())["stats"]["pending"]) == 0

            await wait_until(drained, 300, "every job of the workload to end")
            # The slowest poller needs one more cycle to query the last jobs that left the list.
            await asyncio.sleep(max(w.poll_interval for w in watchers if not w.events) + 5)
            result.minutes = (time.monotonic() - started) / 60
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

            stats, jobs = await truth(session, control)
            finished = [j for j in jobs if j["completed"] is not None]
            result.truth_finished = len(finished)
            for j in finished:
                result.truth_by_status[j["status_label"]] = (
                    result.truth_by_status.get(j["status_label"], 0) + 1
                )
            durations = [j["completed"] - j["created"] for j in finished]
            result.truth_mean = statistics.fmean(durations) if durations else math.nan
            result.truth_short = sum(d < 15 for d in durations)
            result.latencies = sorted(
                seen[j["jobid"]] - j["completed"] for j in finished if j["jobid"] in seen
            )
            missing = [j["jobid"] for j in finished if j["jobid"] not in seen]
            if missing:
                result.errors.append(f"{len(missing)} jobs never showed final on /metrics")
            if stats["pending"]:
                result.errors.append(f"{stats['pending']} jobs still pending")
            for w in watchers:
                await read_watcher(session, w)

            # CPU: the poll-only exporters stop so that they do not compete for the CPUs.
            for w in watchers[:-1]:
                assert w.child is not None
                await w.child.stop()
            bare = await spawn(
                PYTHON, str(BENCH / "bare_consumer.py"), node.url, EXCHANGE, "bench-bare",
                "--report-every", "100",
            )  # fmt: skip
            await bare.wait_for(
                lambda ev, _: True if any(e.get("event") == "ready" for e in ev) else None, 30
            )
            result.burst_events = 2 * settings.burst
            assert events.child is not None
            rows = samples(await fetch(session, events.metrics_url))
            received_before = total(rows, "cloudstack_exporter_events_received_total")
            await asyncio.sleep(2)  # a debounced render of the reads above is done
            exporter_before = cpu_seconds(events.child.proc.pid)
            bare_before = cpu_seconds(bare.proc.pid)
            burst = {"count": settings.burst, "cmd": "CreateVolumeCmd", "duration": 0.5}
            async with session.post(f"{control}/jobs", json=burst) as resp:
                resp.raise_for_status()
            print(f"  burst: {settings.burst:,} jobs of 0.5 s", flush=True)

            def bare_done(ev: list[dict[str, Any]], _: list[str]) -> bool | None:
                n = max((e.get("n", 0) for e in ev if e.get("event") == "consumed"), default=0)
                return True if n >= result.burst_events else None

            await bare.wait_for(bare_done, 120)
            bare_after = cpu_seconds(bare.proc.pid)

            async def exporter_done() -> bool:
                rows = samples(await fetch(session, events.metrics_url))
                received = total(rows, "cloudstack_exporter_events_received_total")
                return received - received_before >= result.burst_events

            await wait_until(exporter_done, 120, "the exporter to consume the burst", every=1.0)
            await asyncio.sleep(2)  # its last debounced render belongs to the burst
            exporter_after = cpu_seconds(events.child.proc.pid)
            result.exporter_cpu = exporter_after - exporter_before
            result.bare_cpu = bare_after - bare_before
    finally:
        for child in [bare, *(w.child for w in watchers), sim]:
            if child is not None:
                await child.stop()
        await asyncio.to_thread(node.stop)
    return result


# --- the report --------------------------------------------------------------------------------


def pct(n: float, d: float) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def report(r: Result) -> None:
    n = r.truth_finished
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.truth_by_status.items()))
    print()
    print(
        f"truth: {n} jobs finished ({statuses}); {r.truth_short} of them shorter than 15 s; "
        f"true mean duration {r.truth_mean:.1f} s"
    )
    header = f"{'':34}" + "".join(f"{w.name:>12}" for w in r.watchers)
    print(header)

    def row(label: str, cells: Sequence[str]) -> None:
        print(f"{label:34}" + "".join(f"{c:>12}" for c in cells))

    row("finished jobs counted", [f"{w.counted:.0f}/{n}" for w in r.watchers])
    row("  share counted", [pct(w.counted, n) for w in r.watchers])
    row("  counted twice", [f"{w.counted - w.distinct:.0f}" for w in r.watchers])
    row("  observed in the histogram", [f"{w.observed:.0f}" for w in r.watchers])
    for status in sorted(r.truth_by_status):
        row(
            f"  {status} counted",
            [f"{w.by_status.get(status, 0):.0f}/{r.truth_by_status[status]}" for w in r.watchers],
        )
    means = [w.duration_sum / w.observed if w.observed else math.nan for w in r.watchers]
    row("mean duration", [f"{m:.1f} s" for m in means])
    row("  error against the truth", [f"{m - r.truth_mean:+.2f} s" for m in means])
    rates = [(w.requests - w.requests_before) / r.minutes for w in r.watchers]
    row("CloudStack requests per minute", [f"{x:.1f}" for x in rates])
    events = r.watchers[-1]
    row("finishes learned from", ["" for _ in r.watchers[:-1]] + [""])
    for source in ("event", "list", "query"):
        row(f"  {source}", [f"{w.by_source.get(source, 0):.0f}" for w in r.watchers])
    row("event gaps", ["" for _ in r.watchers[:-1]] + [f"{events.gaps:.0f}"])

    lat = r.latencies
    p50 = statistics.median(lat) if lat else math.nan
    p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else math.nan
    print()
    print(
        f"completion to final status on /metrics (events, /metrics read every "
        f"{SCRAPE_EVERY * 1000:.0f} ms, {len(lat)} jobs): median {p50:.2f} s, p99 {p99:.2f} s, "
        f"max {lat[-1] if lat else math.nan:.2f} s"
    )
    ratio = r.exporter_cpu / r.bare_cpu if r.bare_cpu > 0 else math.inf
    per_k = 1000 / r.burst_events if r.burst_events else math.nan
    print(
        f"CPU per 1,000 events ({r.burst_events:,} events): exporter "
        f"{r.exporter_cpu * per_k * 1000:.0f} ms, bare consumer {r.bare_cpu * per_k * 1000:.0f} ms"
        f" ({ratio:.2f}x)"
    )
    error = abs(means[-1] - r.truth_mean)
    checks = [
        (f"events: {pct(events.counted, n)} of finished jobs counted (100%)",
         n > 0 and events.counted >= TARGET_COUNTED * n),
        (f"events: {events.counted - events.distinct:.0f} jobs counted twice (0)",
         events.counted == events.distinct and events.observed == events.counted),
        (f"events: mean duration error {error:.2f} s (<= {TARGET_MEAN_ERROR} s)",
         error <= TARGET_MEAN_ERROR),
        (f"events: completion to /metrics p99 {p99:.2f} s (<= {TARGET_P99} s)",
         p99 <= TARGET_P99),
        (f"events: CPU {ratio:.2f}x the bare consumer (<= {TARGET_CPU_RATIO:g}x)",
         ratio <= TARGET_CPU_RATIO),
    ]  # fmt: skip
    print()
    for text, ok in checks:
        print(f"  {verdict(ok)}  {text}")
    for error_text in r.errors:
        print(f"  ERROR {error_text}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter workload and burst")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds of tiny workload; exit 1 on any error"
    )
    args = parser.parse_args(argv)
    if not SERVER.exists():
        print(f"event benchmark skipped: no RabbitMQ server ({SERVER})")
        return 0
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="exporter-events-bench-") as tmp:
        try:
            result = asyncio.run(measure(settings, Path(tmp)))
        except Exception as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    report(result)
    if args.smoke:
        return 1 if result.errors else 0
    return 0  # a report: a missed target is a finding, not a failure of the script


if __name__ == "__main__":
    raise SystemExit(main())
