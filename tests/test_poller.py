"""Scheduling: back-off after failures, and clouds that poll independently of each other."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from exporter_harness import Exporter, cloud_yaml, write_config
from factories import api_job
from simulator_fixtures import SimHandle

from exporter.client import ClientSettings, CloudStackClient
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
    client = CloudStackClient(ClientSettings(url, api_key="k", secret_key="s"))
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


class _ListedPages(CloudStackClient):
    """A client whose listing is given pages: the one way to list a job twice, as a listing
    that moves while it is paged can."""

    def __init__(self, pages: list[list[dict[str, object]]]) -> None:
        super().__init__(
            ClientSettings("http://127.0.0.1:9/client/api", api_key="k", secret_key="s")
        )
        self.pages = pages

    async def list_async_jobs_pages(self, **_: object):  # type: ignore[override]
        for page in self.pages:
            yield page


def _entry(proc_status: int) -> dict[str, object]:
    return api_job(
        "job-1",
        cmd="org.apache.cloudstack.api.command.user.vm.StartVMCmd",
        jobprocstatus=proc_status,
        accountid=None,
        userid=None,
    )


async def test_a_job_listed_twice_ends_as_its_last_view() -> None:
    url = "http://127.0.0.1:9/client/api"
    cloud = CloudConfig(name="a", url=url, api_key="k", secret_key="s")
    metrics = ExporterMetrics()
    tracker = JobTracker("a", metrics.cloud("a"), retention=60, max_jobs=10, watermark=0)
    client = _ListedPages([[_entry(0)]])
    poller = CloudPoller(cloud, client, tracker, metrics.cloud("a"), clock=lambda: 1e9)
    await poller.poll_once()
    # A changed view, then the unchanged one (the tracked job itself): the last one counts.
    client.pages = [[_entry(3)], [_entry(0)]]
    await poller.poll_once()
    tracked = tracker.get("job-1")
    assert tracked is not None and tracked.job.proc_status == 0
    client.pages = [[_entry(0)], [_entry(5)]]
    await poller.poll_once()
    tracked = tracker.get("job-1")
    assert tracked is not None and tracked.job.proc_status == 5
    await client.close()
