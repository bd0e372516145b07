"""The simulator's event bus against a real RabbitMQ node, consumed with aio-pika as any
consumer would: exchange, routing keys, properties and bodies as cloudstack-api.md §9 says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiohttp
import pytest

pytest.register_assert_rewrite("simulator_fixtures", "rabbitmq")
from rabbitmq import RabbitNode, unique_name  # noqa: E402
from simulator_fixtures import SimHandle, _running  # noqa: E402

from exporter.signing import signature  # noqa: E402

pytest_plugins = ["rabbitmq"]

GUARD = 60.0  # seconds: only so a broken test ends; never a speed limit
VM_ID = "51df4992-7374-41f7-ac03-6a4eee654b63"
SUBMIT_KEYS = {
    "jobId",
    "command",
    "commandEventType",
    "status",
    "resultCode",
    "processStatus",
    "instanceType",
    "instanceUuid",
    "user",
    "account",
    "cmdInfo",
}


class Consumer:
    """A queue bound to every AsyncJobEvent of one exchange."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, exchange: str) -> None:
        self.channel = channel
        self.exchange = exchange
        self.messages: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def bind(self) -> None:
        exchange = await self.channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "*.AsyncJobEvent.#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await self.messages.put(message)

    async def next(self) -> aio_pika.abc.AbstractIncomingMessage:
        return await asyncio.wait_for(self.messages.get(), GUARD)

    async def body(self) -> tuple[str, dict[str, Any]]:
        message = await self.next()
        return message.routing_key or "", json.loads(message.body)


async def events(sim: SimHandle) -> dict[str, Any]:
    answer: dict[str, Any] = await sim.control("GET", "/events")
    return answer


async def wait_for(sim: SimHandle, connected: bool) -> dict[str, Any]:
    deadline = time.monotonic() + GUARD
    while True:
        state = await events(sim)
        if state["connected"] is connected:
            return state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)


async def attach(sim: SimHandle, node: RabbitNode, **settings: Any) -> Consumer:
    exchange = unique_name("events")
    connection = await aio_pika.connect(node.url)
    _OPEN.append(connection)
    consumer = Consumer(await connection.channel(), exchange)
    await consumer.bind()
    await sim.control(
        "PUT",
        "/events",
        {"url": node.url, "exchange": exchange, "reconnect_interval": 0.5, **settings},
    )
    await wait_for(sim, True)
    return consumer


_OPEN: list[aio_pika.abc.AbstractConnection] = []  # the test's consumer connections


@pytest.fixture(autouse=True)
async def _close_consumers() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


@pytest.fixture
async def sim(rabbitmq: RabbitNode) -> AsyncIterator[SimHandle]:
    async for handle in _running("+0000", seed=3, version="4.21.0.0"):
        yield handle


async def query(sim: SimHandle, jobid: str) -> dict[str, Any]:
    params = {
        "command": "queryAsyncJobResult",
        "jobid": jobid,
        "response": "json",
        "apikey": sim.admin.api_key,
    }
    params["signature"] = signature(params, sim.admin.secret_key)
    async with aiohttp.ClientSession() as session, session.get(sim.url, params=params) as resp:
        answer: dict[str, Any] = (await resp.json(content_type=None))["queryasyncjobresultresponse"]
        return answer


async def test_exchange_is_topic_durable_and_other_parameters_fail(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    async with await aio_pika.connect(rabbitmq.url) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(consumer.exchange, aio_pika.ExchangeType.TOPIC, passive=True)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_exchange(
                consumer.exchange, aio_pika.ExchangeType.TOPIC, durable=False
            )
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_exchange(
                consumer.exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_exchange(
                consumer.exchange, aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=True
            )


async def test_vm_job_submit_and_complete(sim: SimHandle, rabbitmq: RabbitNode) -> None:
    consumer = await attach(sim, rabbitmq)
    (jobid,) = await sim.create_jobs(cmd="StopVMCmd", instance_id=VM_ID)
    message = await consumer.next()
    assert message.routing_key == f"management-server.AsyncJobEvent.submit.VirtualMachine.{VM_ID}"
    assert message.content_type == "text/plain"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.priority == 0
    assert not message.headers
    # CloudStack sends no message id either, but aiormq stamps one on every publish.
    assert message.timestamp is None and message.type is None and message.expiration is None
    raw = message.body.decode()
    assert "\\u003d" in raw and "=" not in raw  # Gson escapes the signature's padding
    body = json.loads(raw)
    assert set(body) == SUBMIT_KEYS
    admin = sim.sim.directory.user_by_key(sim.admin.api_key)
    assert admin is not None
    assert body["jobId"] == jobid
    assert body["command"] == "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin"
    assert body["commandEventType"] == "VM.STOP"
    assert body["status"] == "IN_PROGRESS"
    assert body["resultCode"] == "0" and body["processStatus"] == "0"
    assert body["instanceType"] == "VirtualMachine" and body["instanceUuid"] == VM_ID
    assert body["user"] == admin.uuid and body["account"] == admin.account.uuid
    info = body["cmdInfo"]
    assert info["command"] == "stopVirtualMachine" and info["id"] == VM_ID
    assert info["apikey"] == sim.admin.api_key
    for key in ("signature", "expires", "signatureversion", "ctxStartEventId", "ctxDetails"):
        assert isinstance(info[key], str)
    assert info["ctxUserId"] == admin.uuid and info["ctxAccountId"] == admin.account.uuid
    assert info["cmdEventType"] == "VM.STOP" and info["httpmethod"] == "GET"

    await sim.finish(jobid)
    key, body = await consumer.body()
    assert key == f"management-server.AsyncJobEvent.complete.VirtualMachine.{VM_ID}"
    assert set(body) == SUBMIT_KEYS | {"jobResult"}
    assert body["status"] == "SUCCEEDED" and body["resultCode"] == "0"
    result = body["jobResult"]
    assert result["class"] == "org.apache.cloudstack.api.response.UserVmResponse"
    assert result["object"] == "virtualmachine" and result["id"] == VM_ID
    assert (await events(sim))["published"] == {"total": 2, "submit": 1, "complete": 1}


async def test_failed_job_carries_the_exception_response(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    (jobid,) = await sim.create_jobs(cmd="DeployVMCmd")
    await consumer.next()
    await sim.finish(jobid, "failure", result_code=533, errortext="no capacity <here> & 'there'")
    message = await consumer.next()
    assert "\\u003c" in message.body.decode() and "\\u0027" in message.body.decode()
    body = json.loads(message.body)
    assert body["status"] == "FAILED" and body["resultCode"] == "533"
    assert body["commandEventType"] == "VM.CREATE"
    assert body["jobResult"] == {
        "uuidList": [],
        "errorcode": 533,
        "errortext": "no capacity <here> & 'there'",
        "class": "org.apache.cloudstack.api.response.ExceptionResponse",
        "object": "null",
    }


async def test_the_exchange_exists_only_once_an_event_was_published(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    exchange = unique_name("events")
    await sim.control(
        "PUT", "/events", {"url": rabbitmq.url, "exchange": exchange, "reconnect_interval": 0.5}
    )
    await wait_for(sim, True)
    async with await aio_pika.connect(rabbitmq.url) as connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, passive=True)
        await sim.create_jobs()
        deadline = time.monotonic() + GUARD
        while (await events(sim))["published"]["total"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # Published to no queue (the broker drops it), but the exchange is there now.
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, passive=True)


async def test_update_carries_the_values_from_before_the_change(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    (jobid,) = await sim.create_jobs(cmd="AttachVolumeCmd", instance_id=VM_ID)
    await consumer.body()  # submit
    await sim.set_procstatus(jobid, 7)
    key, body = await consumer.body()
    assert key.startswith("management-server.AsyncJobEvent.update.")
    assert body["status"] == "IN_PROGRESS" and body["processStatus"] == "0"
    assert "jobResult" not in body
    assert (await query(sim, jobid))["jobprocstatus"] == 7
    assert (await events(sim))["published"]["update"] == 1
    await sim.finish(jobid)
    with pytest.raises(Exception, match="finished"):
        await sim.set_procstatus(jobid, 8)  # a finished job's status no longer moves


async def test_a_job_submitted_through_the_api_carries_its_own_request(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    """cmdInfo is what the client sent: a session caller's sessionkey among it (spec §9)."""
    consumer = await attach(sim, rabbitmq)
    ops = sim.ops
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        form = {"command": "login", "response": "json", "username": ops.username}
        form |= {"password": ops.password, "domain": ops.domain}
        async with session.post(sim.url, data=form) as resp:
            key = (await resp.json(content_type=None))["loginresponse"]["sessionkey"]
        params = {"command": "stopVirtualMachine", "id": VM_ID, "response": "json"}
        async with session.get(sim.url, params={**params, "sessionkey": key}) as resp:
            jobid = (await resp.json(content_type=None))["stopvirtualmachineresponse"]["jobid"]
    _, body = await consumer.body()
    assert body["jobId"] == jobid
    info = body["cmdInfo"]
    assert info["sessionkey"] == key and info["command"] == "stopVirtualMachine"
    assert info["id"] == VM_ID and "apikey" not in info and "signature" not in info


async def test_routing_key_without_resource_and_with_dots(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    await sim.create_jobs(cmd="AddBananaCmd")
    key, body = await consumer.body()
    assert key == "management-server.AsyncJobEvent.submit.None.*"
    assert body["instanceType"] == "None" and "instanceUuid" not in body
    assert body["commandEventType"] == "unknown"
    await sim.create_jobs(cmd="AddBananaCmd", instance_type="Fruit.Type", instance_id="a.b.c")
    key, body = await consumer.body()
    assert key == "management-server.AsyncJobEvent.submit.Fruit-Type.a-b-c"
    assert body["instanceType"] == "Fruit.Type" and body["instanceUuid"] == "a.b.c"


async def test_accountinfo_switch(sim: SimHandle, rabbitmq: RabbitNode) -> None:
    consumer = await attach(sim, rabbitmq)
    await sim.create_jobs(account="ops")
    _, body = await consumer.body()
    assert not {"username", "accountname", "domainname"} & set(body)
    await sim.control("PUT", "/events", {"accountinfo": True})
    await sim.create_jobs(account="ops")
    _, body = await consumer.body()
    assert body["username"] == "ops" and body["accountname"] == "ops"
    assert body["domainname"] == "Ops"


async def test_pre_416_string_forms(rabbitmq: RabbitNode) -> None:
    async for sim in _running("+0000", seed=3, version="4.15.2.0"):
        consumer = await attach(sim, rabbitmq)
        (jobid,) = await sim.create_jobs(cmd="StopVMCmd", instance_id=VM_ID)
        _, body = await consumer.body()
        assert isinstance(body["cmdInfo"], str)
        assert json.loads(body["cmdInfo"])["apikey"] == sim.admin.api_key
        await sim.finish(jobid)
        _, body = await consumer.body()
        cls, obj, rest = body["jobResult"].split("/", 2)
        assert cls == "org.apache.cloudstack.api.response.UserVmResponse"
        assert obj == "virtualmachine" and json.loads(rest)["id"] == VM_ID


async def test_nothing_for_work_pseudo_restart_and_purge(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    await sim.create_jobs(cmd="VmWorkStop")
    await sim.create_jobs(pseudo=True)
    await sim.restart()  # fails both without a word
    (old,) = await sim.create_jobs(cmd="StopVMCmd", duration=0)
    (stale,) = await sim.create_jobs(cmd="StopVMCmd")  # purged while pending
    await sim.advance(2 * 1440 * 60)
    await sim.purge()
    assert await sim.job(old) is None and await sim.job(stale) is None
    (marker,) = await sim.create_jobs(cmd="StartVMCmd")
    seen = [json.loads((await consumer.next()).body) for _ in range(4)]
    assert sorted((b["jobId"], b["status"]) for b in seen) == sorted(
        [(old, "IN_PROGRESS"), (old, "SUCCEEDED"), (stale, "IN_PROGRESS"), (marker, "IN_PROGRESS")]
    )
    await sim.restart()  # the marker fails by restart: no complete
    (last,) = await sim.create_jobs(cmd="StartVMCmd")
    _, body = await consumer.body()
    assert body["jobId"] == last
    assert consumer.messages.empty()


async def test_complete_arrives_after_the_final_state_is_committed(
    sim: SimHandle, rabbitmq: RabbitNode
) -> None:
    consumer = await attach(sim, rabbitmq)
    jobids = await sim.create_jobs(5, cmd="CreateVolumeCmd", duration=0.3)
    done = 0
    while done < len(jobids):
        _, body = await consumer.body()
        if body["status"] == "IN_PROGRESS":
            continue
        answer = await query(sim, body["jobId"])
        assert answer["jobstatus"] == 1 and "completed" in answer
        assert body["jobResult"]["object"] == "volume"
        done += 1


async def test_broker_down_drops_then_reconnects(rabbitmq_restartable: RabbitNode) -> None:
    node = rabbitmq_restartable
    async for sim in _running("+0000", seed=3, version="4.21.0.0"):
        await attach(sim, node)
        await asyncio.to_thread(node.stop)
        await wait_for(sim, False)
        await sim.create_jobs(3)
        state = await events(sim)
        assert state["dropped"]["unreachable"] == 3 and state["published"]["total"] == 0
        await asyncio.to_thread(node.start)
        state = await wait_for(sim, True)
        assert state["connects"] == 2
        connection = await aio_pika.connect(node.url)
        _OPEN.append(connection)
        consumer = Consumer(await connection.channel(), state["settings"]["exchange"])
        await consumer.bind()
        (jobid,) = await sim.create_jobs()
        _, body = await consumer.body()
        assert body["jobId"] == jobid
        assert (await events(sim))["published"]["total"] == 1


async def test_broker_unreachable_at_start_keeps_the_api_answering(rabbitmq: RabbitNode) -> None:
    async for sim in _running("+0000", seed=3, version="4.21.0.0"):
        dead = f"amqp://guest:secret-pw@127.0.0.1:{rabbitmq.dist_port}/nope"
        await sim.control("PUT", "/events", {"url": dead, "reconnect_interval": 0.2})
        (jobid,) = await sim.create_jobs()
        assert (await query(sim, jobid))["jobstatus"] == 0
        state = await events(sim)
        assert "secret-pw" not in json.dumps(state)
        assert state["dropped"]["total"] == 1 and not state["connected"]


async def test_hanging_broker_never_holds_up_the_api() -> None:
    # Accepts connections and never says a word, like a broker that hangs.
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async for sim in _running("+0000", seed=3, version="4.21.0.0"):
            await sim.control("PUT", "/events", {"url": f"amqp://guest:guest@127.0.0.1:{port}/"})
            while not held:
                await asyncio.sleep(0.01)
            jobids = await sim.create_jobs(3)
            for jobid in jobids:
                assert (await query(sim, jobid))["jobstatus"] == 0
            state = await events(sim)
            assert state["dropped"]["unreachable"] == 3 and not state["connected"]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def _dropped_ids(node: RabbitNode, share: float) -> tuple[list[str], list[str]]:
    async for sim in _running("+0000", seed=5, version="4.21.0.0"):
        consumer = await attach(sim, node, drop_share=share)
        jobids = await sim.create_jobs(40)
        state = await events(sim)
        got: list[str] = []
        published = 40 - state["dropped"].get("fault", 0)
        for _ in range(published):
            got.append(json.loads((await consumer.next()).body)["jobId"])
        return jobids, got
    raise AssertionError("unreachable")


async def test_drop_share_fault_is_deterministic(rabbitmq: RabbitNode) -> None:
    jobids, got = await _dropped_ids(rabbitmq, 0.5)
    assert 5 < len(got) < 35
    assert set(got) < set(jobids)
    again_ids, again = await _dropped_ids(rabbitmq, 0.5)
    assert again_ids == jobids and again == got  # same seed, same gaps


async def test_command_line_flags_publish(rabbitmq: RabbitNode, tmp_path: Path) -> None:
    exchange = unique_name("cli")
    connection = await aio_pika.connect(rabbitmq.url)
    _OPEN.append(connection)
    consumer = Consumer(await connection.channel(), exchange)
    await consumer.bind()
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudstack_simulator",
        "--listen",
        "127.0.0.1:0",
        "--workload",
        "20",
        "--events.url",
        rabbitmq.url,
        "--events.exchange",
        exchange,
        "--events.accountinfo",
        "--log-level",
        "debug",
        stderr=(tmp_path / "stderr").open("wb"),  # a file: debug logs would fill a pipe
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        try:
            key, body = await consumer.body()
        except TimeoutError:
            raise AssertionError((tmp_path / "stderr").read_text()[-3000:]) from None
        assert key.startswith("management-server.AsyncJobEvent.submit.")
        assert body["status"] == "IN_PROGRESS" and "accountname" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), GUARD) == 0
    stderr = (tmp_path / "stderr").read_text()
    assert "guest:guest" not in stderr and "Traceback" not in stderr
