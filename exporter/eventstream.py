"""One cloud's AsyncJobEvent stream from RabbitMQ (cloudstack-api.md §9), with aio-pika.

aio-pika (over aiormq) is the well-kept asyncio AMQP client; its plain `connect` is used with a
reconnect loop of our own rather than `connect_robust`, because every (re)connect must be
known here: it starts a full poll (polling is the source of truth for the pending set), and it
tells which deliveries are the backlog that waited in the durable queue (their receipt times
say nothing about when the job ran).

Per message: parse, hand to the listener, then ack; a message that cannot be read is rejected
without requeue and counted. The broker password is a secret: only `safe_url` is ever shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL

from exporter.events import BINDING_KEY, JobEvent, MalformedEvent, parse_event

log = logging.getLogger(__name__)
# aiormq logs every failed connection attempt as an error with the broker's address; the
# stream logs one line per distinct failure itself (see run), so theirs would only repeat it.
logging.getLogger("aiormq").setLevel(logging.CRITICAL)
logging.getLogger("aio_pika").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What the stream needs, validated by the configuration."""

    url: str  # amqp:// or amqps://, the password already in it (never logged)
    exchange: str = "cloudstack-events"
    queue: str = "cloudstack-job-exporter"
    verify_tls: bool = True
    ca_file: str | None = None
    queue_expires: float = 86400.0  # seconds unused before the broker deletes the queue
    queue_max_length: int = 100_000  # messages; the oldest are dropped beyond it
    prefetch: int = 100
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    timeout: float = 10.0


def safe_url(url: str) -> str:
    """The broker URL without its password, for logs and the jobs page."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparseable broker URL>"
    return str(parsed.with_password(None)) if parsed.password is not None else str(parsed)


class StreamListener(Protocol):
    def connected(self, backlog: int) -> None:
        """The queue is bound; `backlog` messages were waiting in it."""

    def disconnected(self, reason: str) -> None: ...

    def event(self, event: JobEvent, received: float, live: bool) -> None:
        """Apply one event; `live` is False for backlog and redeliveries."""

    def malformed(self, reason: str) -> None: ...


class EventStream:
    """Consume one cloud's events until stopped, reconnecting with jittered back-off."""

    def __init__(
        self,
        cloud: str,
        settings: StreamSettings,
        listener: StreamListener,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cloud = cloud
        self.settings = settings
        self.listener = listener
        self.clock = clock
        self.state = "connecting"
        self.last_error = ""
        self._backlog = 0

    def _ssl_context(self) -> ssl.SSLContext | None:
        if URL(self.settings.url).scheme != "amqps":
            return None
        context = ssl.create_default_context(cafile=self.settings.ca_file)
        if not self.settings.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.reconnect_min
        where = safe_url(self.settings.url)
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = self.settings.reconnect_min  # a session ran: start the back-off anew
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every broker or network failure: retry later
                reason = _describe(exc)
                if reason != self.last_error:
                    log.warning(
                        "event stream unavailable: %s",
                        reason,
                        extra={"cloud": self.cloud, "broker": where},
                    )
                self.last_error = reason
                self.state = f"disconnected: {reason}"
                self.listener.disconnected(reason)
            if stop.is_set():
                break
            wait = delay * random.uniform(0.8, 1.2)
            delay = min(self.settings.reconnect_max, delay * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        self.state = "stopped"

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        connection = await aio_pika.connect(
            s.url,
            ssl_context=self._ssl_context(),
            timeout=s.timeout,
            client_properties={"connection_name": f"cloudstack-job-exporter {self.cloud}"},
        )
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=s.prefetch)
            # CloudStack's exact parameters: anything else is 406 and breaks its publishing.
            exchange = await channel.declare_exchange(
                s.exchange, aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=False
            )
            queue = await channel.declare_queue(
                s.queue,
                durable=True,
                arguments={
                    "x-expires": int(s.queue_expires * 1000),
                    "x-max-length": s.queue_max_length,
                },
            )
            await queue.bind(exchange, routing_key=BINDING_KEY)
            declared = queue.declaration_result
            self._backlog = int(getattr(declared, "message_count", 0) or 0)
            closed: asyncio.Future[BaseException | None] = (
                asyncio.get_running_loop().create_future()
            )

            def on_close(_connection: Any, exc: BaseException | None = None) -> None:
                if not closed.done():
                    closed.set_result(exc)

            connection.close_callbacks.add(on_close)
            await queue.consume(self._on_message, no_ack=False)
            self.state = "connected"
            if self.last_error:
                log.info("event stream connected again", extra={"cloud": self.cloud})
            else:
                log.info("event stream connected", extra={"cloud": self.cloud})
            self.last_error = ""
            self.listener.connected(self._backlog)
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            waiting: set[asyncio.Future[Any]] = {closed, stopping}
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not stop.is_set():
                exc = closed.result() if closed.done() else None
                raise ConnectionError(_describe(exc) if exc else "connection closed by the broker")
        finally:
            if not connection.is_closed:
                await connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        received = self.clock()
        live = True
        if self._backlog > 0:
            self._backlog -= 1
            live = False
        if message.redelivered:
            live = False
        try:
            event = parse_event(message.routing_key or "", message.body)
        except MalformedEvent as exc:
            self.listener.malformed(str(exc))
            await message.reject(requeue=False)
            return
        try:
            self.listener.event(event, received, live)
        except Exception:
            # A bug of ours must not loop the message forever: logged, dropped.
            log.exception("event not applied", extra={"cloud": self.cloud})
            await message.reject(requeue=False)
            return
        await message.ack()


def _describe(exc: BaseException | Any) -> str:
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return (
            f"the broker refused a declaration (406 PRECONDITION_FAILED): {exc}; the exchange "
            "must be topic and durable as CloudStack declares it, and an existing queue must "
            "have the configured expiry and length cap"
        )
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.AMQPConnectionError):
        text = str(exc)
        if "ACCESS_REFUSED" in text or "authentication" in text.lower():
            return "the broker refused the credentials"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
