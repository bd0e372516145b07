"""Load test: many concurrent scrapers of /metrics while the exporter polls a large cloud.

It starts, on loopback only, a simulator with N pending jobs and a workload, and the exporter
(`python -m exporter`) polling it; then runs S scrapers that fetch /metrics back to back (gzip,
as Prometheus asks) for D seconds, while a monitor follows the exporter's own poll metrics.

It prints scrapes done, scrape latency (p50/p95/max), errors, and poll cycles expected vs done,
and exits 1 when a scrape failed, a poll failed, or a poll cycle was missed (two successful
polls further apart than 1.5 poll intervals). Every child process is stopped at the end, and
the whole run is bounded by --duration plus a fixed margin.

    python benchmarks/load.py                  # 10,000 jobs, 50 scrapers, 30 s, 5 s polls
    python benchmarks/load.py --smoke          # a few seconds, tiny values (used by the tests)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
# The simulator's built-in root admin: documented test keys, loopback only.
ADMIN_KEY, ADMIN_SECRET = "sim-admin-api-key", "sim-admin-secret-key"
STARTUP_TIMEOUT = 60.0
MARGIN = 90.0  # beyond --duration, for start-up and shutdown: the run never exceeds this

SIM_URL = re.compile(r"listening on (http://\S+/client/api)")
SERIES = re.compile(
    rb"^(cloudstack_up|cloudstack_exporter_last_successful_poll_timestamp_seconds|"
    rb"cloudstack_exporter_poll_duration_seconds|cloudstack_exporter_tracked_jobs)"
    rb'\{cloud="load"\} (\S+)$',
    re.MULTILINE,
)
REQUESTS = re.compile(
    rb'^cloudstack_api_requests_total\{cloud="load",code="([^"]*)",command="([^"]*)"\} (\S+)$',
    re.MULTILINE,
)


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    body_bytes: int = 0
    polls: set[float] = field(default_factory=set)  # last successful poll timestamps seen
    poll_seconds: list[float] = field(default_factory=list)
    down_seen: int = 0
    tracked: float = 0.0
    requests: dict[tuple[str, str], float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spawn(args: list[str], log: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # a Ctrl-C of the benchmark reaches it through us only
    )  # fmt: skip


async def wait_for_line(
    proc: asyncio.subprocess.Process, log: Path, pattern: re.Pattern[str]
) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{log.name}: exited with {proc.returncode}: {tail(log)}")
        match = pattern.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{log.name}: not started within {STARTUP_TIMEOUT:g}s: {tail(log)}")


async def wait_ready(
    session: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"the exporter exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/-/ready") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the exporter was not ready within {STARTUP_TIMEOUT:g}s")


def tail(path: Path, lines: int = 5) -> str:
    return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])


async def scraper(session: aiohttp.ClientSession, url: str, until: float, figures: Figures) -> None:
    headers = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4"}
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200 or not body:
                    figures.errors.append(f"HTTP {resp.status}, {len(body)} bytes")
                    continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            figures.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)
            continue
        figures.latencies.append(time.monotonic() - started)
        figures.body_bytes = len(body)


def read_health(text: bytes, figures: Figures) -> None:
    for name, value in SERIES.findall(text):
        number = float(value)
        if name == b"cloudstack_up" and number != 1:
            figures.down_seen += 1
        elif name == b"cloudstack_exporter_last_successful_poll_timestamp_seconds" and number:
            if number not in figures.polls:
                figures.polls.add(number)
        elif name == b"cloudstack_exporter_poll_duration_seconds":
            figures.poll_seconds.append(number)
        elif name == b"cloudstack_exporter_tracked_jobs":
            figures.tracked = number
    for code, command, value in REQUESTS.findall(text):
        figures.requests[(command.decode(), code.decode())] = float(value)


async def monitor(
    session: aiohttp.ClientSession, url: str, until: float, every: float, figures: Figures
) -> None:
    """Follows the exporter's own health metrics, often enough to see every poll."""
    while time.monotonic() < until:
        try:
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                raw = await resp.read()
                if resp.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                read_health(raw, figures)
        except (aiohttp.ClientError, TimeoutError) as exc:
            figures.errors.append(f"monitor: {type(exc).__name__}: {exc}")
        await asyncio.sleep(every)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace, work: Path) -> int:
    sim_log, exp_log = work / "simulator.log", work / "exporter.log"
    procs: list[asyncio.subprocess.Process] = []
    logs: list[IO[bytes]] = []
    try:
        logs.append(open(sim_log, "wb"))  # noqa: SIM115 (closed below)
        simulator = await spawn(
            [
                "-m", "cloudstack_simulator", "--listen", "127.0.0.1:0",
                "--jobs", str(args.jobs), "--workload", str(args.workload),
                "--seed", "1", "--log-level", "info",
            ],
            logs[-1],
        )  # fmt: skip
        procs.append(simulator)
        sim_url = await wait_for_line(simulator, sim_log, SIM_URL)
        control = sim_url.replace("/client/api", "/sim")

        config = work / "config.yaml"
        config.write_text(
            f"poll_interval: {args.poll_interval:g}s\n"
            "clouds:\n"
            "  - name: load\n"
            f"    url: {sim_url}\n"
            f"    api_key: {ADMIN_KEY}\n"
            f"    secret_key: {ADMIN_SECRET}\n"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        logs.append(open(exp_log, "wb"))  # noqa: SIM115 (closed below)
        exporter = await spawn(
            ["-m", "exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
            logs[-1],
        )
        procs.append(exporter)

        limit = aiohttp.TCPConnector(limit=args.scrapers + 2)
        timeout = aiohttp.ClientTimeout(total=max(30.0, args.poll_interval * 4))
        async with aiohttp.ClientSession(
            connector=limit, timeout=timeout, auto_decompress=False
        ) as session:
            await wait_ready(session, url, exporter)
            async with session.delete(control + "/counters") as resp:
                resp.raise_for_status()
            figures = Figures()
            cpu_before = cpu_seconds(exporter.pid)
            started = time.monotonic()
            wall_started = time.time()
            until = started + args.duration
            await asyncio.gather(
                monitor(session, url + "/metrics", until, args.poll_interval / 5, figures),
                *(scraper(session, url + "/metrics", until, figures) for _ in range(args.scrapers)),
            )
            elapsed = time.monotonic() - started
            wall_ended = time.time()
            cpu_after = cpu_seconds(exporter.pid)
            rss = peak_rss_mib(exporter.pid)
            # A poll that ended just before the window closed is shown a little later (after
            # its render): keep watching, unloaded, for one more interval.
            settle = time.monotonic() + args.poll_interval + 1
            await monitor(session, url + "/metrics", settle, args.poll_interval / 5, figures)
            async with session.get(control + "/counters") as resp:
                counters = json.loads(await resp.read())
            async with session.get(
                url + "/metrics", headers={"Accept-Encoding": "identity"}
            ) as resp:
                plain_bytes = len(await resp.read())
            alive = exporter.returncode is None
        return report(
            args, figures, elapsed, wall_started, wall_ended, counters, plain_bytes, alive,
            None if cpu_before is None or cpu_after is None else cpu_after - cpu_before, rss,
            exp_log,
        )  # fmt: skip
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for log in logs:
            log.close()


def report(
    args: argparse.Namespace,
    figures: Figures,
    elapsed: float,
    wall_started: float,
    wall_ended: float,
    counters: dict[str, Any],
    plain_bytes: int,
    alive: bool,
    cpu: float | None,
    rss: float | None,
    exp_log: Path,
) -> int:
    interval = args.poll_interval
    # The successful polls that ended during the window, and the gaps between them (the
    # window's edges count as well: a poll missed at the start or the end is a gap too).
    # The polls that ended in the window, counted from the last one before it: on schedule,
    # one every interval; a gap of more than 1.5 intervals is a missed cycle.
    anchor = max((t for t in figures.polls if t < wall_started), default=wall_started)
    polls = sorted(t for t in figures.polls if wall_started <= t <= wall_ended)
    edges = [anchor, *polls, wall_ended]
    missed = sum(1 for a, b in itertools.pairwise(edges) if b - a > 1.5 * interval)
    expected = int((wall_ended - anchor) // interval)
    done = len(polls)
    problems = [line for line in exp_log.read_text(errors="replace").splitlines()
                if "level=error" in line or "level=warn" in line]  # fmt: skip

    lat = figures.latencies
    print(f"setup            {args.jobs} pending jobs + workload {args.workload}/s, "
          f"poll every {interval:g}s, {args.scrapers} scrapers for {args.duration:g}s")  # fmt: skip
    print(f"tracked jobs     {figures.tracked:.0f}")
    print(
        f"/metrics size    {plain_bytes / 1e6:.2f} MB plain, {figures.body_bytes / 1e6:.2f} MB gzip"
    )
    print(f"scrapes          {len(lat)} ({len(lat) / elapsed:.1f}/s)")
    if lat:
        print(
            f"scrape latency   p50 {percentile(lat, 0.5) * 1000:.1f} ms, "
            f"p95 {percentile(lat, 0.95) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms, "
            f"mean {statistics.fmean(lat) * 1000:.1f} ms"
        )
    print(f"scrape errors    {len(figures.errors)}")
    for error in sorted(set(figures.errors))[:5]:
        print(f"                 {error}")
    print(f"poll cycles      expected {expected}, done {done}, missed {missed}, "
          f"failed (cloudstack_up 0 seen) {figures.down_seen}")  # fmt: skip
    if figures.poll_seconds:
        print(f"poll duration    max {max(figures.poll_seconds):.2f} s, "
              f"mean {statistics.fmean(figures.poll_seconds):.2f} s")  # fmt: skip
    by_command = counters.get("by_command", {})
    print(f"API requests     {json.dumps(by_command, sort_keys=True)} "  # window + settle
          f"by code {json.dumps(counters.get('by_code', {}), sort_keys=True)}")  # fmt: skip
    if cpu is not None:
        print(f"exporter CPU     {cpu:.1f} s in {elapsed:.1f} s ({100 * cpu / elapsed:.0f} %)")
    if rss is not None:
        print(f"exporter RSS     peak {rss:.0f} MiB")
    print(f"exporter log     {len(problems)} warning/error lines")
    for line in problems[:5]:
        print(f"                 {line[:200]}")

    failed = (
        bool(figures.errors) or missed > 0 or figures.down_seen > 0 or not alive
        or bool(problems) or not lat or done < max(1, expected - 1)
    )  # fmt: skip
    print("result           " + ("FAIL" if failed else "ok"))
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="pending jobs (default 10000)")
    parser.add_argument("--workload", type=float, default=5.0, help="new jobs per second (5)")
    parser.add_argument("--scrapers", type=int, default=50, help="concurrent scrapers (50)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (30)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds (5)")
    parser.add_argument("--smoke", action="store_true", help="tiny values, a few seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.workload, args.scrapers = 300, 2.0, 3
        args.duration, args.poll_interval = 4.0, 1.0
    if args.jobs < 0 or args.scrapers < 1 or args.duration <= 0 or args.poll_interval < 1:
        parser.error("--jobs >= 0, --scrapers >= 1, --duration > 0, --poll-interval >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="exporter-load-") as work:
        try:
            return asyncio.run(
                asyncio.wait_for(run(args, Path(work)), timeout=args.duration + MARGIN)
            )
        except (RuntimeError, TimeoutError) as exc:
            print(f"load: {exc or 'did not finish in time'}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
