"""The baseline of the event benchmark: an AsyncJobEvent consumer that does nothing else.

The same AMQP library (aio-pika), the same declarations, prefetch and manual ack as the
exporter, and the same decoding of every body (`exporter.events.parse_event`); no tracker, no
rendering, no HTTP. It prints one JSON line when its queue is bound and one each time it has
consumed `--report-every` messages, so that the benchmark can read its CPU time around a burst.

    python benchmarks/bare_consumer.py URL EXCHANGE QUEUE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.events import BINDING_KEY, MalformedEvent, parse_event


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def consume(url: str, exchange_name: str, queue_name: str, prefetch: int, every: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=False
        )
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-expires": 600_000, "x-max-length": 100_000}
        )
        await queue.bind(exchange, routing_key=BINDING_KEY)
        consumed = malformed = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal consumed, malformed
            try:
                parse_event(message.routing_key or "", message.body)
            except MalformedEvent:
                malformed += 1
                await message.reject(requeue=False)
            else:
                await message.ack()
            consumed += 1
            if consumed % every == 0:
                say(event="consumed", n=consumed, malformed=malformed)

        await queue.consume(on_message, no_ack=False)
        say(event="ready")
        await asyncio.Future()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("exchange")
    parser.add_argument("queue")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--report-every", type=int, default=100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(args.url, args.exchange, args.queue, args.prefetch, args.report_every))


if __name__ == "__main__":
    main()
