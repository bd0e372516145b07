"""The exporter service in its own process, reporting each poll cycle as a JSON line.

The benchmark runs this instead of `python -m exporter` so that the exporter's CPU time and
resident memory are its own (the simulator and the benchmark's clients run elsewhere) and so
that it learns when each cycle started and ended without scraping 100 MB of /metrics to find
out. It is the real `Service` (poller, tracker, renderer, web server), unchanged; only
`CloudPoller.poll_once` is wrapped to time it.

    python benchmarks/probe.py CONFIG_FILE

stdout gets one JSON object a line: {"event": "listening", "port": P}, then per cycle
{"event": "cycle", "start": .., "end": .., "cpu": .., "tracked": .., "listed": .., ...}
(times are time.monotonic(), cpu is this process's user+system seconds at the cycle's start).
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from exporter.config import load_config
from exporter.options import Options
from exporter.poller import CloudPoller, CycleResult
from exporter.service import Service
from exporter.web import bound_ports


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    # Every thread of the process (renders run in a worker thread), at nanosecond resolution.
    return time.process_time()


def instrument() -> None:
    original = CloudPoller.poll_once

    async def timed(self: CloudPoller) -> CycleResult:
        start, cpu = time.monotonic(), cpu_seconds()
        result = await original(self)
        emit(
            event="cycle",
            cloud=self.cloud.name,
            start=start,
            end=time.monotonic(),
            cpu=cpu,
            cpu_end=cpu_seconds(),
            ok=result.ok,
            tracked=self.tracker.size,
            listed=result.listed,
            queried=result.queried,
            error=str(result.error) if result.error else None,
        )
        return result

    CloudPoller.poll_once = timed  # type: ignore[method-assign]


async def main(config_file: str) -> None:
    instrument()
    options = Options(config_file=config_file, listen_address="127.0.0.1:0")
    service = Service(load_config(config_file), options)
    await service.start()
    emit(event="listening", port=bound_ports(service._runner)[0])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await service.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1]))
