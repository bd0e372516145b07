"""The exporter consuming CloudStack's AsyncJobEvent stream from a real RabbitMQ node, the
simulator publishing to it as CloudStack does (cloudstack-api.md §9), polling beside it.

Every test drives the poll cycles itself (the poll interval is an hour): whatever a test sees
counted between cycles came from the events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

pytest.register_assert_rewrite("simulator_fixtures", "rabbitmq", "exporter_harness")
from binaries import require  # noqa: E402
from exporter_harness import Exporter, Metrics, cloud_yaml, write_config  # noqa: E402
from rabbitmq import RabbitNode, unique_name  # noqa: E402
from simulator_fixtures import SimHandle, _running  # noqa: E402

pytest_plugins = ["rabbitmq"]

GUARD = 60.0  # seconds: only so that a broken test ends; never a speed limit
SHORT = [0.2, 0.4, 0.6, 0.9, 1.3, 1.7, 2.2, 2.8]  # seconds: every one shorter than a poll


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not await check():
        assert time.monotonic() < deadline, f"not reached in {GUARD:.0f} s: {what}"
        await asyncio.sleep(0.05)


class Bus:
    """One test's exchange and queue on the shared node, the simulator publishing to it."""

    def __init__(self, node: RabbitNode, sim: SimHandle) -> None:
        self.node = node
        self.sim = sim
        self.exchange = unique_name("cloudstack-events")
        self.queue = unique_name("exporter")

    async def publish_from_simulator(self, **settings: Any) -> None:
        await self.sim.control(
            "PUT",
            "/events",
            {
                "url": self.node.url,
                "exchange": self.exchange,
                "reconnect_interval": 0.5,
                **settings,
            },
        )

    def events_yaml(self, url: str | None = None) -> str:
        return f"""
            events:
              url: {url or self.node.url}
              exchange: {self.exchange}
              queue: {self.queue}
              reconnect_min: 200ms
              reconnect_max: 1s
            """

    async def publish(self, routing_key: str, body: bytes) -> None:
        """A message as CloudStack sends it, written by hand (duplicates, disorder, garbage)."""
        connection = await aio_pika.connect(self.node.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            message = aio_pika.Message(
                body, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, routing_key=routing_key)

    async def published(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.sim.control("GET", "/events")
        return answer


@pytest.fixture
async def sim(rabbitmq: RabbitNode) -> AsyncIterator[SimHandle]:
    async for handle in _running("+0000", seed=5, version="4.21.0.0"):
        yield handle


@pytest.fixture
async def bus(rabbitmq: RabbitNode, sim: SimHandle) -> Bus:
    bus = Bus(rabbitmq, sim)
    await bus.publish_from_simulator()
    return bus


async def connected(exporter: Exporter, cloud: str = "a") -> None:
    async def check() -> bool:
        m = await exporter.metrics()
        return m.value("cloudstack_exporter_events_connected", cloud=cloud) == 1

    await eventually(check, "the exporter's queue bound")


async def finished_count(exporter: Exporter) -> float:
    return (await exporter.metrics()).total("cloudstack_async_jobs_finished_total")


def durations(m: Metrics) -> tuple[float, float]:
    return (
        m.total("cloudstack_async_job_duration_seconds_count"),
        m.total("cloudstack_async_job_duration_seconds_sum"),
    )


async def truth_durations(sim: SimHandle, ids: list[str]) -> list[float]:
    out = []
    for job_id in ids:
        job = await sim.job(job_id)
        assert job is not None and job["completed"] is not None
        out.append(job["completed"] - job["created"])
    return out


# --------------------------------------------------------------------------- counting


async def test_every_short_job_is_counted_once_with_its_duration(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        ids = []
        for i, seconds in enumerate(SHORT):
            outcome = {"outcome": "failure", "result_code": 533} if i % 3 == 2 else {}
            ids += await sim.create_jobs(1, cmd="StopVMCmd", duration=seconds, **outcome)

        async def all_counted() -> bool:
            return await finished_count(exporter) >= len(ids)

        await eventually(all_counted, "every job counted from its events")
        await asyncio.sleep(1.5)  # anything counted twice would show by now
        m = await exporter.metrics()
        assert m.total("cloudstack_async_jobs_finished_total") == len(ids)
        assert m.total("cloudstack_async_jobs_finished_total", status="failed") == 2
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="event") == len(
            ids
        )
        assert m.value("cloudstack_exporter_events_received_total", type="submit") == len(ids)
        assert m.value("cloudstack_exporter_events_received_total", type="complete") == len(ids)
        count, total = durations(m)
        assert count == len(ids)
        truth = await truth_durations(sim, ids)
        # From the receipt times: within the publishing latency of CloudStack's own times.
        assert abs(total - sum(truth)) / len(ids) <= 0.5, (total, sum(truth))
        for job_id in ids:
            assert m.value("cloudstack_async_job_status", job_id=job_id) in (1, 2)

        # A poll afterwards learns nothing new and counts nothing again.
        await exporter.cycle()
        assert await finished_count(exporter) == len(ids)
        assert (await exporter.metrics()).value("cloudstack_exporter_event_gaps_total") == 0
        # Every family of the event stream, with series, passes promtool's lint silently.
        _, _, body = await exporter.get("/metrics", Accept="text/plain")
        result = subprocess.run(
            [require("promtool"), "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, b"")


async def test_an_update_is_counted_and_leaves_the_job_running(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        (job_id,) = await sim.create_jobs(1, cmd="AttachVolumeCmd")
        await sim.set_procstatus(job_id, 3)

        async def updated() -> bool:
            m = await exporter.metrics()
            return m.value("cloudstack_exporter_events_received_total", type="update") == 1

        await eventually(updated, "the update received")
        m = await exporter.metrics()
        assert m.value("cloudstack_async_job_status", job_id=job_id) == 0
        assert await finished_count(exporter) == 0
        await sim.finish(job_id)

        async def ended() -> bool:
            return await finished_count(exporter) == 1

        await eventually(ended, "the job ended by its complete")
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="event") == 1


async def test_a_reload_that_takes_events_away_removes_the_stream_series(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        write_config(config, [cloud_yaml("a", sim)])
        assert await exporter.service.reload()
        m = await exporter.metrics()
        assert m.value("cloudstack_up", cloud="a") == 1
        # Neither "connected" nor any other event-stream series of a cloud without a stream.
        stream_series = ("cloudstack_exporter_event", "cloudstack_exporter_jobs_finished_by_source")
        assert not [s for s in m.samples if s[0].startswith(stream_series)]
        _, _, page = await exporter.get("/jobs?format=json")
        assert json.loads(page)["clouds"][0]["events"] is None

        # Given back: connected again, its counters from zero.
        write_config(config, [cloud_yaml("a", sim, extra=bus.events_yaml())])
        assert await exporter.service.reload()
        await connected(exporter)


async def test_a_jobs_end_shows_without_a_poll(sim: SimHandle, bus: Bus, tmp_path: Path) -> None:
    (job_id,) = await sim.create_jobs(1, cmd="DeployVMCmd", created_ago=30)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        await exporter.cycle()
        m = await exporter.metrics()
        assert m.value("cloudstack_async_job_status", job_id=job_id) == 0
        await sim.finish(job_id, "failure", result_code=530, errortext="Insufficient capacity")

        async def shown() -> bool:
            m = await exporter.metrics()
            return m.value("cloudstack_async_job_status", job_id=job_id) == 2

        await eventually(shown, "the failure on /metrics")
        m = await exporter.metrics()
        ((info, _),) = m.find("cloudstack_async_job_info", job_id=job_id)
        assert info["error"] == "Insufficient capacity"
        assert m.value("cloudstack_async_job_result_code", job_id=job_id) == 530
        # Listed pending, ended by its event: counted once, from the event.
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="event") == 1
        assert m.total("cloudstack_async_jobs_finished_total") == 1
        # Its submit came before the exporter listened: the times are CloudStack's.
        _, _, body = await exporter.get(f"/jobs?format=json&q={job_id}")
        (row,) = json.loads(body)["jobs"]
        assert row["status"] == "failed"
        page = json.loads(body)["clouds"][0]
        assert page["events"] == "connected"


async def test_a_job_a_restart_killed_is_found_by_polling(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        (job_id,) = await sim.create_jobs(1, cmd="MigrateVMCmd")

        async def tracked() -> bool:
            m = await exporter.metrics()
            return m.value("cloudstack_async_job_status", job_id=job_id) == 0

        await eventually(tracked, "the job tracked from its submit")
        await sim.finish(job_id, "restart")  # CloudStack publishes nothing for these
        await asyncio.sleep(0.5)
        assert (await exporter.metrics()).value("cloudstack_async_job_status", job_id=job_id) == 0
        await exporter.cycle()  # not listed any more: queried
        m = await exporter.metrics()
        assert m.value("cloudstack_async_job_status", job_id=job_id) == 2
        assert m.value("cloudstack_async_job_result_code", job_id=job_id) == 530
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="query") == 1
        assert m.total("cloudstack_async_jobs_finished_total") == 1


# --------------------------------------------------------------------------- disorder


def _body(job_id: str, status: str, **extra: Any) -> bytes:
    body = {
        "jobId": job_id,
        "command": "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin",
        "commandEventType": "VM.STOP",
        "status": status,
        "resultCode": "0" if status != "FAILED" else "530",
        "processStatus": "0",
        "instanceType": "VirtualMachine",
        "instanceUuid": "51df4992-7374-41f7-ac03-6a4eee654b63",
        "user": "6f3b0c7e-0000-4000-8000-00000000aaaa",
        "account": "6f3b0c7e-0000-4000-8000-00000000bbbb",
        "cmdInfo": {"sessionkey": "SESSION-SECRET-1234", "signature": "SIGNATURE-SECRET"},
        **extra,
    }
    return json.dumps(body).encode()


def _key(kind: str) -> str:
    return (
        f"management-server.AsyncJobEvent.{kind}.VirtualMachine."
        "51df4992-7374-41f7-ac03-6a4eee654b63"
    )


async def test_duplicates_and_disorder_count_each_job_once(
    sim: SimHandle, bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        # Jobs the simulator knows (so the queries after events answer), ended at once, whose
        # own events are lost: the test publishes theirs by hand.
        await bus.publish_from_simulator(drop_share=1.0)
        ids = await sim.create_jobs(3, cmd="StopVMCmd", duration=0)

        async def ended() -> bool:
            states = [(await sim.job(i) or {}).get("status") for i in ids]
            return states == [1, 1, 1]

        # CloudStack publishes a complete once the end is committed: so does this test.
        await eventually(ended, "the jobs ended in the simulator")
        a, b, c = ids
        # a: submit, complete, complete again (a redelivery as seen by the consumer)
        await bus.publish(_key("submit"), _body(a, "IN_PROGRESS"))
        await bus.publish(_key("complete"), _body(a, "SUCCEEDED"))
        await bus.publish(_key("complete"), _body(a, "SUCCEEDED"))
        # b: complete before submit
        await bus.publish(_key("complete"), _body(b, "SUCCEEDED"))
        await bus.publish(_key("submit"), _body(b, "IN_PROGRESS"))
        # c: a submit whose body already shows the end (published late, from 2026)
        await bus.publish(_key("submit"), _body(c, "SUCCEEDED"))

        async def three() -> bool:
            return await finished_count(exporter) >= 3

        await eventually(three, "three jobs counted")
        await exporter.cycle()
        await asyncio.sleep(1.0)
        m = await exporter.metrics()
        assert m.total("cloudstack_async_jobs_finished_total") == 3
        assert m.total("cloudstack_async_job_duration_seconds_count") == 3
        for job_id in ids:
            assert m.value("cloudstack_async_job_status", job_id=job_id) == 1
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="event") == 3
    text = caplog.text + m.text
    assert "SESSION-SECRET" not in text and "SIGNATURE-SECRET" not in text


async def test_malformed_messages_are_rejected_counted_and_the_stream_goes_on(
    sim: SimHandle, bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        await bus.publish(_key("complete"), b"<html>not json</html>")
        await bus.publish(_key("complete"), json.dumps({"status": "SUCCEEDED"}).encode())
        (job_id,) = await sim.create_jobs(1, cmd="StopVMCmd", duration=0.3)

        async def counted() -> bool:
            return await finished_count(exporter) == 1

        await eventually(counted, "the good job counted after the bad messages")
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_events_malformed_total") == 2
        assert m.value("cloudstack_exporter_events_connected") == 1
        assert m.value("cloudstack_async_job_status", job_id=job_id) == 1
    warnings = [r.getMessage() for r in caplog.records if "message rejected" in r.getMessage()]
    assert warnings and "cloudstack_exporter_events_malformed_total" in warnings[0]


async def test_pre_416_bodies_are_read(rabbitmq: RabbitNode, tmp_path: Path) -> None:
    async for sim in _running("+0000", seed=6, version="4.15.2.0"):
        bus = Bus(rabbitmq, sim)
        await bus.publish_from_simulator()
        config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
        async with Exporter(config) as exporter:
            await connected(exporter)
            ids = await sim.create_jobs(2, cmd="CreateSnapshotCmd", duration=0.4)
            ids += await sim.create_jobs(
                1, cmd="CreateSnapshotCmd", duration=0.4, outcome="failure", errortext="no space"
            )

            async def counted() -> bool:
                return await finished_count(exporter) == 3

            await eventually(counted, "three 4.15 jobs counted")
            m = await exporter.metrics()
            assert m.value("cloudstack_exporter_events_malformed_total") == 0
            ((info, _),) = m.find("cloudstack_async_job_info", job_id=ids[2])
            assert info["error"] == "no space"


# --------------------------------------------------------------------------- lost events


async def test_dropped_events_show_as_gaps_and_polling_still_ends_every_job(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await connected(exporter)
        await exporter.cycle()  # a listing while connected: later new jobs must have events
        await bus.publish_from_simulator(drop_share=1.0)
        ids = await sim.create_jobs(3, cmd="StartVMCmd")  # pending; their submits are lost
        await exporter.cycle()  # listed, never heard of
        await asyncio.sleep(0.2)
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_event_gaps_total") == 0  # not judged yet
        await asyncio.sleep(5.0)  # the grace for a submit still on its way
        await exporter.cycle()
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_event_gaps_total") == 3
        for job_id in ids:
            await sim.finish(job_id)
        await exporter.cycle()  # their completes are lost too: the queries end them
        m = await exporter.metrics()
        assert m.total("cloudstack_async_jobs_finished_total") == 3
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="query") == 3


# --------------------------------------------------------------------------- the broker


async def test_broker_down_at_start_then_up_and_restarted_mid_run(
    rabbitmq_restartable: RabbitNode, sim: SimHandle, tmp_path: Path
) -> None:
    node = rabbitmq_restartable
    bus = Bus(node, sim)
    node.stop()
    await bus.publish_from_simulator()
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())])
    async with Exporter(config) as exporter:
        await asyncio.sleep(0.5)
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_events_connected", cloud="a") == 0
        assert m.value("cloudstack_up", cloud="a") == 1  # polling does not wait for the broker
        await asyncio.to_thread(node.start)
        await connected(exporter)
        await eventually(
            lambda: _sim_connected(bus), "the simulator publishing to the broker again"
        )
        (first,) = await sim.create_jobs(1, cmd="StopVMCmd", duration=0.3)

        async def counted(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return await finished_count(exporter) == n

            return check

        await eventually(await counted(1), "a job counted once the broker is up")

        await asyncio.to_thread(node.stop)

        async def down() -> bool:
            m = await exporter.metrics()
            return m.value("cloudstack_exporter_events_connected", cloud="a") == 0

        await eventually(down, "the stream seen down")
        _, _, body = await exporter.get("/jobs?format=json")
        assert json.loads(body)["clouds"][0]["events"].startswith("disconnected")
        await asyncio.to_thread(node.start)
        await connected(exporter)
        await eventually(
            lambda: _sim_connected(bus), "the simulator publishing to the broker again"
        )
        (second,) = await sim.create_jobs(1, cmd="StopVMCmd", duration=0.3)
        await eventually(await counted(2), "a job counted after the broker restarted")
        m = await exporter.metrics()
        assert m.value("cloudstack_async_job_status", job_id=first) == 1
        assert m.value("cloudstack_async_job_status", job_id=second) == 1


async def _sim_connected(bus: Bus) -> bool:
    return bool((await bus.published())["connected"])


async def test_a_restarted_exporter_consumes_the_backlog_and_counts_each_job_once(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    top = f"state_file: {tmp_path / 'state.json'}\n"
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml())], top=top
    )
    async with Exporter(config) as exporter:
        await connected(exporter)
        running = await sim.create_jobs(2, cmd="MigrateVMCmd")

        async def tracked() -> bool:
            m = await exporter.metrics()
            return all(m.value("cloudstack_async_job_status", job_id=i) == 0 for i in running)

        await eventually(tracked, "both jobs tracked from their submits")
    # The exporter is away; its durable queue keeps what CloudStack publishes meanwhile.
    for job_id in running:
        await sim.finish(job_id)
    short = await sim.create_jobs(2, cmd="StopVMCmd", duration=0.2)
    await asyncio.sleep(1.0)  # every one of them ended while nobody consumed
    async with Exporter(config) as exporter:

        async def all_counted() -> bool:
            return await finished_count(exporter) == 4

        await eventually(all_counted, "the backlog counted")
        await exporter.cycle()
        await asyncio.sleep(1.0)
        m = await exporter.metrics()
        assert m.total("cloudstack_async_jobs_finished_total") == 4
        assert m.total("cloudstack_async_job_duration_seconds_count") == 4
        for job_id in running + short:
            assert m.value("cloudstack_async_job_status", job_id=job_id) == 1
        # The backlog's receipt times say nothing of when the jobs ran: their times come
        # from queryAsyncJobResult, so the durations are CloudStack's.
        truth = await truth_durations(sim, running + short)
        _, total = durations(m)
        assert abs(total - sum(truth)) <= 4 * 1.0  # CloudStack's stamps are whole seconds


# --------------------------------------------------------------------------- secrets


async def test_the_broker_password_is_never_shown(
    sim: SimHandle, bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = bus.node.url.replace("guest:guest", "guest:Br0kerPassw0rd")
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=bus.events_yaml(url=wrong))]
    )
    async with Exporter(config) as exporter:

        async def refused() -> bool:
            _, _, body = await exporter.get("/jobs?format=json")
            state = json.loads(body)["clouds"][0]["events"]
            return bool(state) and "credentials" in state

        await eventually(refused, "the broker refusing the password")
        m = await exporter.metrics()
        _, _, page = await exporter.get("/jobs")
        _, _, landing = await exporter.get("/")
    shown = caplog.text + m.text + page.decode() + landing.decode()
    assert "Br0kerPassw0rd" not in shown
    assert "event stream unavailable: the broker refused the credentials" in caplog.text


# --------------------------------------------------------------------------- scope


async def test_events_outside_the_discovery_scope_are_ignored(
    sim: SimHandle, bus: Bus, tmp_path: Path
) -> None:
    answer = await sim.control("GET", "/accounts")
    ops = next(a for a in answer["accounts"] if a["account"] == "ops")
    scope = f"""
        discovery:
          account: ops
          domain_id: {ops["domainid"]}
          exclude: ['CreateSnapshotCmd']
        """
    extra = textwrap.dedent(scope) + textwrap.dedent(bus.events_yaml())
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim, extra=extra)])
    async with Exporter(config) as exporter:
        await connected(exporter)
        mine = await sim.create_jobs(2, cmd="StopVMCmd", duration=0.3, account="ops")
        others = await sim.create_jobs(2, cmd="StopVMCmd", duration=0.3, account="admin")
        filtered = await sim.create_jobs(1, cmd="CreateSnapshotCmd", duration=0.3, account="ops")

        async def counted() -> bool:
            return await finished_count(exporter) >= 2

        await eventually(counted, "the scope's jobs counted from their events")
        await asyncio.sleep(1.0)
        await exporter.cycle()
        m = await exporter.metrics()
        assert m.job_ids("a") == set(mine)
        assert not set(others + filtered) & m.job_ids("a")
        assert m.total("cloudstack_async_jobs_finished_total") == 2
        assert m.value("cloudstack_exporter_jobs_finished_by_source_total", source="event") == 2
        # The scope's account UUIDs come from listAccounts, as polling's scope from its names.
        assert m.total("cloudstack_api_requests_total", command="listAccounts", code="200") >= 1
