"""The benchmark keeps working: `benchmarks/bench.py --smoke` runs end to end at tiny N.

It starts its own simulators and exporters (each in its own process), so this proves the
whole measuring chain: the bare client, discovery, request counting, scrapes, the
generate_latest baseline and the report. No figure is asserted (timings are noise here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rabbitmq

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_prints_the_table_and_exits_0() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for row in (
        "cycles to track every pending job",
        "CloudStack requests, cycle after jobs left",
        "naive poller (a query per job)",
        "exporter CPU per cycle",
        "bare aiohttp fetch+decode CPU",
        "GET /metrics plain, median",
        "generate_latest() same series, median",
        "cycles missed, 10 scrapers",
        "exporter RSS after polling",
        "exporter RSS after the scrapes",
    ):
        assert row in out, f"missing row {row!r}:\n{out}"
    # Every target is judged, and the cost model holds even at tiny N.
    assert out.count("PASS") + out.count("FAIL") == 7, out
    assert "PASS  CloudStack: requests = ceil(pending/500) + jobs that left" in out, out
    assert "PASS  discovery" in out, out
    assert "ERROR" not in out, out


def test_bad_sizes_are_refused_with_a_message() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--sizes=0,10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--sizes needs at least two positive job counts" in run.stderr
    assert "Traceback" not in run.stderr


def test_event_benchmark_smoke_run_counts_every_job_once() -> None:
    """`benchmarks/events.py --smoke`: broker, simulator, five exporters, the bare consumer."""
    rabbitmq.require()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "events.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for row in (
        "finished jobs counted",
        "  counted twice",
        "mean duration",
        "CloudStack requests per minute",
        "completion to final status on /metrics",
        "CPU per 1,000 events",
    ):
        assert row in out, f"missing row {row!r}:\n{out}"
    assert out.count("PASS") + out.count("FAIL") == 5, out
    # Not timings: with events every finished job is counted, and none twice, at any size.
    assert "PASS  events: 100.0% of finished jobs counted (100%)" in out, out
    assert "PASS  events: 0 jobs counted twice (0)" in out, out
    assert "ERROR" not in out, out


def test_jobs_page_benchmark_smoke_run_finds_every_page_bounded() -> None:
    """`benchmarks/jobspage.py --smoke`: the real web app, every query, the loop probe."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "jobspage.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    for row in (
        "default page (100 rows)",
        "1,000 rows",
        "status=failed",
        "JSON, 100 rows",
        "baseline: sort every job by age",
        "worst loop lateness",
    ):
        assert row in out, f"missing row {row!r}:\n{out}"
    assert out.count("PASS") + out.count("FAIL") == 2, out
    # Not a timing: the same rows make the same page whatever the number of tracked jobs.
    assert "PASS  bounded" in out, out
    # The default page shows 100 jobs at either size.
    line = next(x for x in out.splitlines() if x.startswith("default page"))
    assert line.count("/ 100") == 2, line
    assert "Traceback" not in run.stderr, run.stderr


def test_jobs_page_benchmark_refuses_bad_sizes() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "jobspage.py"), "--sizes=10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--sizes needs at least two positive job counts" in run.stderr
