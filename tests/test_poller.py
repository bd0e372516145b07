"""Scheduling: back-off after failures, and clouds that poll independently of each other."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from exporter_harness import Exporter, cloud_yaml, write_config
from simulator_fixtures import SimHandle

from exporter.client import CloudStackClient
from exporter.config import CloudConfig
from exporter.poller import MAX_BACKOFF, CloudPoller
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

pytest_plugins = ["simulator_fixtures"]


def poller_with(interval: float, failures: int) -> CloudPoller:
    url = "http://127.0.0.1:9/client/api"
    cloud = CloudConfig(name="a", url=url, api_key="k", secret_key="s", poll_interval=interval)
    metrics = ExporterMetrics()
    tracker = JobTracker("a", metrics.cloud("a"), retention=60, max_jobs=10, watermark=0)
    client = CloudStackClient(url, api_key="k", secret_key="s")
    poller = CloudPoller(cloud, client, tracker, metrics.cloud("a"))
    poller.failures = failures
    return poller


def test_back_off_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    assert poller_with(10, 0).next_delay(rng) == 10
    delays = [poller_with(10, n).next_delay(rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        base = min(10 * 2 ** (n - 1), MAX_BACKOFF)
        assert 0.8 * base <= delay <= 1.2 * base
    # Jitter: many exporters failing together do not retry in lockstep.
    assert len({round(poller_with(10, 3).next_delay(rng), 6) for _ in range(20)}) > 1
    # The cap never drops below the poll interval itself.
    assert poller_with(900, 5).next_delay(rng) >= 0.8 * 900


async def test_a_hanging_cloud_does_not_delay_another(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    await simulator.create_jobs(2)
    await second_simulator.create_jobs(2)
    config = write_config(
        tmp_path / "c.yaml",
        [
            cloud_yaml("fast", simulator, extra="poll_interval: 1s\n"),
            cloud_yaml("slow", second_simulator, extra="poll_interval: 4s\ntimeout: 3s\n"),
        ],
    )
    await second_simulator.add_fault("latency", seconds=30)
    async with Exporter(config) as exporter:
        await simulator.reset_counters()
        # While "slow" waits out its timeout, "fast" keeps its one-second schedule.
        await asyncio.sleep(3.5)
        lists = (await simulator.counters())["by_command"].get("listAsyncJobs", 0)
        assert lists >= 3
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="fast") == 1
        assert metrics.value("cloudstack_up", cloud="slow") == 0
        assert len(metrics.job_ids("fast")) == 2
