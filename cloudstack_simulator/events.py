"""The event bus of the simulated management server: AsyncJobEvent messages published to RabbitMQ
the way CloudStack's ApiServer.handleAsyncJobPublishEvent and RabbitMQEventBus do (see
cloudstack-api.md §9).

The store tells the bus when a job is stored (`submit`) and when its end is committed
(`complete`); the body is built at once, from the state of that moment, and queued. One worker
publishes the queue in order, so a job's `submit` always goes out before its `complete`. The API
never waits for the broker: a full queue, a broker that is down or a publish that hangs longer
than `publish_timeout` drops the event and counts it, as CloudStack drops it (no buffer, no
retry). While the broker is unreachable the bus tries again every `reconnect_interval` (10 s
in CloudStack).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.abc

from cloudstack_simulator import catalog
from cloudstack_simulator.store import (
    CANCELLED,
    FAILED,
    PENDING,
    SUCCEEDED,
    JobStore,
    SimJob,
    version_tuple,
)

log = logging.getLogger("cloudstack_simulator.events")

STATUS_NAMES = {
    PENDING: "IN_PROGRESS",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
}
RESPONSE_PACKAGE = "org.apache.cloudstack.api.response"
# The result object of a success -> the Java response class that serialises it.
RESPONSE_CLASSES = {
    "virtualmachine": "UserVmResponse",
    "volume": "VolumeResponse",
    "snapshot": "SnapshotResponse",
    "template": "TemplateResponse",
    "success": "SuccessResponse",
}
# Short class name -> (the API command, its action event type).
COMMAND_EVENTS: dict[str, tuple[str, str]] = {
    "DeployVMCmd": ("deployVirtualMachine", "VM.CREATE"),
    "StartVMCmd": ("startVirtualMachine", "VM.START"),
    "StopVMCmd": ("stopVirtualMachine", "VM.STOP"),
    "RebootVMCmd": ("rebootVirtualMachine", "VM.REBOOT"),
    "DestroyVMCmd": ("destroyVirtualMachine", "VM.DESTROY"),
    "MigrateVMCmd": ("migrateVirtualMachine", "VM.MIGRATE"),
    "CreateSnapshotCmd": ("createSnapshot", "SNAPSHOT.CREATE"),
    "DeleteSnapshotCmd": ("deleteSnapshot", "SNAPSHOT.DELETE"),
    "CreateVolumeCmd": ("createVolume", "VOLUME.CREATE"),
    "MigrateVolumeCmd": ("migrateVolume", "VOLUME.MIGRATE"),
    "CreateTemplateCmd": ("createTemplate", "TEMPLATE.CREATE"),
    "RestartNetworkCmd": ("restartNetwork", "NETWORK.RESTART"),
}
DROP_REASONS = ("stopped", "unreachable", "timeout", "error", "queue_full", "fault")
_GSON_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "=": "\\u003d",
        "'": "\\u0027",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


class EventsError(ValueError):
    """A setting the bus cannot take; the message says why."""


def gson(value: Any) -> str:
    """JSON as Gson writes it: compact, nulls left out by the caller, HTML characters escaped."""
    # The escaped characters are never structural in JSON, so escaping the whole text is safe.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_GSON_ESCAPES)


def routing_word(value: str | None) -> str:
    return value.replace(".", "-") if value else "*"


def routing_key(event_type: str, resource_type: str | None, resource_uuid: str | None) -> str:
    words = ("management-server", "AsyncJobEvent", event_type, resource_type, resource_uuid)
    return ".".join(routing_word(w) for w in words)


def redact_url(url: str) -> str:
    """The URL without its password, for logs and the control API."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_api_job(job: SimJob) -> bool:
    """Jobs of the API dispatcher: not pseudo jobs (no cmd), not VM work jobs."""
    if job.cmd is None:
        return False
    return not job.cmd.rpartition(".")[2].startswith("VmWork")


@dataclass
class EventSettings:
    url: str = ""  # amqp://user:password@host:port/vhost; empty: no bus configured
    exchange: str = "cloudstack-events"
    accountinfo: bool = False  # the global setting event.accountinfo
    reconnect_interval: float = 10.0
    publish_timeout: float = 2.0
    drop_share: float = 0.0  # the fault: this share of events is dropped on purpose
    queue_size: int = 10_000
    settle_interval: float = 0.1  # how often due jobs are ended, so `complete` goes out on time

    def describe(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["url"] = redact_url(self.url)
        return out


class EventBus:
    """Publishes the AsyncJobEvent of every API job to one RabbitMQ exchange."""

    def __init__(
        self, store: JobStore, settings: EventSettings | None = None, *, seed: int | None = 0
    ) -> None:
        self.store = store
        self.settings = settings or EventSettings()
        self._rng = random.Random(seed)
        self.published: Counter[str] = Counter()  # by event type
        self.dropped: Counter[str] = Counter()  # by reason
        self._queue: asyncio.Queue[tuple[str, str, bytes]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None  # declared on first use
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._configured = asyncio.Event()  # set while there is a URL
        self._next_attempt = 0.0
        self.connects = 0
        self.last_error: str | None = None
        store.observers.append(self._observe)

    # -- settings --------------------------------------------------------------------------
    def configure(self, data: Mapping[str, Any]) -> None:
        """Change settings (the keys of EventSettings); a new URL or exchange reconnects."""
        new = EventSettings(**self.settings.__dict__)
        for key, value in data.items():
            if key not in new.__dataclass_fields__:
                raise EventsError(f"unknown setting {key!r:.40}")
            current = getattr(new, key)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise EventsError(f"{key}: true or false")
            elif isinstance(current, str):
                if not isinstance(value, str):
                    raise EventsError(f"{key}: a string")
            elif not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise EventsError(f"{key}: a non-negative number")
            setattr(new, key, type(current)(value))
        if new.drop_share > 1:
            raise EventsError("drop_share: between 0 and 1")
        if new.url and urlsplit(new.url).scheme not in ("amqp", "amqps"):
            raise EventsError("url: amqp://... or amqps://...")
        if new.queue_size < 1 or new.reconnect_interval <= 0 or new.publish_timeout <= 0:
            raise EventsError("queue_size, reconnect_interval, publish_timeout: above 0")
        changed = (new.url, new.exchange) != (self.settings.url, self.settings.exchange)
        self.settings = new
        if new.url:
            self._configured.set()
        else:
            self._configured.clear()
        if changed:
            self._next_attempt = 0.0
            self._drop_connection()
            self._wake.set()

    def describe(self) -> dict[str, Any]:
        return {
            "settings": self.settings.describe(),
            "connected": self._connected.is_set(),
            "connects": self.connects,
            "last_error": self.last_error,
            "published": {"total": sum(self.published.values()), **self.published},
            "dropped": {"total": sum(self.dropped.values()), **self.dropped},
            "queued": self._queue.qsize() if self._queue is not None else 0,
        }

    def reset_counters(self) -> None:
        self.published.clear()
        self.dropped.clear()

    # -- the store's side ------------------------------------------------------------------
    def _observe(self, event_type: str, job: SimJob) -> None:
        try:
            self._enqueue(event_type, job)
        except Exception:  # never let the bus fail a job
            log.exception("event for job %s not built", job.uuid)
            self.dropped["error"] += 1

    def _enqueue(self, event_type: str, job: SimJob) -> None:
        if not self.settings.url:
            return  # no bus configured: nothing to publish, nothing lost
        if not is_api_job(job) or job.shape == "restart":
            return  # CloudStack publishes nothing for these (restart failures: straight to the DB)
        if self._queue is None:
            self.dropped["stopped"] += 1
            return
        if self.settings.drop_share and self._rng.random() < self.settings.drop_share:
            self.dropped["fault"] += 1
            return
        if not self._connected.is_set():
            self.dropped["unreachable"] += 1
            return
        key = routing_key(event_type, self._resource_type(job), job.instance_id)
        body = gson(self.body(event_type, job)).encode()
        try:
            self._queue.put_nowait((event_type, key, body))
        except asyncio.QueueFull:
            self.dropped["queue_full"] += 1

    @staticmethod
    def _resource_type(job: SimJob) -> str:
        if job.instance_type is None:
            return "None" if job.instance_id is None else "unknown"
        return job.instance_type

    def body(self, event_type: str, job: SimJob) -> dict[str, Any]:
        """The event's JSON object (before Gson), from the job as it is now."""
        short = (job.cmd or "").rpartition(".")[2].removesuffix("ByAdmin")
        known = catalog.resolve(short)
        api_name, event_kind = COMMAND_EVENTS.get(known.name if known else short, ("", "unknown"))
        old = version_tuple(self.store.version) < (4, 16)
        out: dict[str, Any] = {
            "jobId": job.uuid,
            "command": job.cmd,
            "commandEventType": event_kind,
            "status": STATUS_NAMES[job.status],
            "resultCode": str(job.result_code),
            "processStatus": str(job.proc_status),
            "instanceType": self._resource_type(job),
            "user": job.user.uuid,
            "account": job.account.uuid,
        }
        if job.instance_id is not None:
            out["instanceUuid"] = job.instance_id
        if event_type != "submit":
            result = self._job_result(job, old)
            if result is not None:
                out["jobResult"] = result
        info = self._cmd_info(job, api_name or short, event_kind)
        out["cmdInfo"] = gson(info) if old else info
        if self.settings.accountinfo:
            out["username"] = job.user.username
            out["accountname"] = job.account.name
            out["domainname"] = job.account.domain.name
        return out

    @staticmethod
    def _job_result(job: SimJob, old: bool) -> Any:
        result = job.result
        if result is None:
            return None
        if job.status == SUCCEEDED and isinstance(result, dict) and len(result) == 1:
            obj, inner = next(iter(result.items()))
            java = f"{RESPONSE_PACKAGE}.{RESPONSE_CLASSES.get(obj, 'SuccessResponse')}"
            fields_ = dict(inner) if isinstance(inner, dict) else {obj: inner}
        else:
            obj, java = "null", f"{RESPONSE_PACKAGE}.ExceptionResponse"
            if isinstance(result, dict):
                fields_ = {"uuidList": [], **result}
            else:  # a text result
                fields_ = {"uuidList": [], "errorcode": job.result_code, "errortext": result}
        if old:
            return f"{java}/{obj}/{gson(fields_)}"
        return {**fields_, "class": java, "object": obj}

    def _cmd_info(self, job: SimJob, command: str, event_kind: str) -> dict[str, str]:
        params = job.request
        if params is None:
            # No real request made this job (the control API did): the signed request a client
            # would have sent, secrets included, so consumers can prove they never leak them.
            params = {"command": command, "response": "json"}
            if job.instance_id is not None:
                params["id"] = job.instance_id
            if job.user.api_key:
                params["apikey"] = job.user.api_key
                digest = hashlib.sha1(job.uuid.encode()).digest()  # shaped like a signature
                params["signature"] = base64.b64encode(digest).decode()
                params["signatureversion"] = "3"
                params["expires"] = job.created_text
        info = dict(params)
        info.update(
            ctxUserId=str(job.user.uuid),
            ctxAccountId=str(job.account.uuid),
            ctxStartEventId=str(job.seq),
            cmdEventType=event_kind,
            ctxDetails=gson({"interface com.cloud.vm.VirtualMachine": job.instance_id or ""}),
            httpmethod="GET",
        )
        return info

    # -- the broker's side -----------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._queue = asyncio.Queue(self.settings.queue_size)
        if self.settings.url:
            self._configured.set()
        self._tasks = [
            asyncio.create_task(self._connector(), name="events-connector"),
            asyncio.create_task(self._publisher(), name="events-publisher"),
            asyncio.create_task(self._settler(), name="events-settler"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._queue is not None:
            self.dropped["stopped"] += self._queue.qsize()
        self._queue = None
        await self._close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def _drop_connection(self) -> None:
        self._connected.clear()
        connection, self._connection, self._exchange = self._connection, None, None
        self._channel = None
        if connection is not None:
            task = asyncio.get_running_loop().create_task(self._close_quietly(connection))
            task.add_done_callback(lambda _: None)

    @staticmethod
    async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)

    async def _close(self) -> None:
        self._connected.clear()
        connection, self._connection, self._exchange = self._connection, None, None
        self._channel = None
        if connection is not None:
            await self._close_quietly(connection)

    async def _connector(self) -> None:
        while True:
            if self._connected.is_set() or not self.settings.url:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._next_attempt - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self._next_attempt = time.monotonic() + self.settings.reconnect_interval
            await self._connect()

    def _scrub(self, text: str) -> str:
        """`text` without the broker's password (errors may quote the URL)."""
        with contextlib.suppress(ValueError):
            password = urlsplit(self.settings.url).password
            if password:
                text = text.replace(password, "***")
        return text

    async def _connect(self) -> None:
        url, exchange_name = self.settings.url, self.settings.exchange
        try:
            connection = await asyncio.wait_for(
                aio_pika.connect(url, timeout=self.settings.publish_timeout),
                self.settings.publish_timeout + 1,
            )
        except Exception as exc:
            self.last_error = self._scrub(f"{type(exc).__name__}: {exc}")[:300]
            log.warning("event bus %s unreachable; events are dropped", redact_url(url))
            return
        if (url, exchange_name) != (self.settings.url, self.settings.exchange):
            await self._close_quietly(connection)
            return
        self._channel = await connection.channel()
        self._exchange = None  # declared with the first event (see _send)
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        self.connects += 1
        self.last_error = None
        self._connected.set()
        log.info("event bus connected to %s", redact_url(url))

    def _on_close(self, connection: Any, exc: BaseException | None = None) -> None:
        if connection is not self._connection:
            return
        self._connection = self._exchange = self._channel = None
        self._connected.clear()
        self.last_error = f"connection closed: {type(exc).__name__}" if exc else "closed"
        self._wake.set()

    async def _publisher(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            event_type, key, body = await queue.get()
            channel = self._channel
            if channel is None:
                self.dropped["unreachable"] += 1
                continue
            message = aio_pika.Message(
                body,
                content_type="text/plain",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                priority=0,
            )
            try:
                await asyncio.wait_for(
                    self._send(channel, message, key), self.settings.publish_timeout
                )
            except TimeoutError:
                self.dropped["timeout"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.dropped["error"] += 1
                self.last_error = f"{type(exc).__name__}"
                self._drop_connection()
                self._wake.set()
            else:
                self.published[event_type] += 1

    async def _send(
        self, channel: aio_pika.abc.AbstractChannel, message: aio_pika.Message, key: str
    ) -> None:
        exchange = self._exchange
        if exchange is None:
            # RabbitMQEventBus declares the exchange as it publishes (topic, durable, no
            # arguments): a fresh broker has none until CloudStack's first event.
            exchange = await channel.declare_exchange(
                self.settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=False
            )
            if self._channel is channel:
                self._exchange = exchange
        await exchange.publish(message, routing_key=key)

    async def _settler(self) -> None:
        # Jobs end lazily in the store; while a bus is configured, settle them on time.
        while True:
            await self._configured.wait()
            await asyncio.sleep(self.settings.settle_interval)
            if self.settings.url:
                try:
                    self.store.refresh()
                except Exception:
                    log.exception("settling due jobs failed")


__all__ = ["DROP_REASONS", "EventBus", "EventSettings", "EventsError", "gson", "routing_key"]
