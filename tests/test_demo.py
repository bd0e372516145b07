"""`make demo`'s program: the exporter against two embedded simulators, as a user starts it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest
from exporter_harness import Metrics
from exporter_process import ROOT
from ports import free_port

from cloudstack_simulator.broker import available


async def test_the_demo_serves_both_simulated_clouds_and_stops_cleanly() -> None:
    # With rabbitmq-server installed the demo consumes an event stream; it polls only without.
    with_events = available() is None
    if not with_events and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the demo cannot start RabbitMQ: {available()}")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo", f"--web.listen-address=127.0.0.1:{port}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(url + "/-/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            async with session.get(url + "/metrics") as resp:
                assert resp.status == 200
                metrics = Metrics(await resp.text())
        for cloud in ("prod", "lab"):
            assert metrics.value("cloudstack_up", cloud=cloud) == 1
            assert metrics.job_ids(cloud)  # jobs of the workload already running at start
        # The job left stuck on purpose: a StopVMCmd pending for 45 minutes.
        stuck = [
            value
            for lab, value in metrics.find("cloudstack_async_job_age_seconds", cloud="prod")
            if lab["cmd"] == "StopVMCmd" and value >= 2700
        ]
        assert len(stuck) == 1
        # prod behaves like a 4.21 server: the management server's name is shown.
        names = {
            lab["management_server_name"]
            for lab, _ in metrics.find("cloudstack_async_job_info", cloud="prod")
        }
        assert names - {""}
        if with_events:
            # The simulators publish to the demo's own RabbitMQ node; the exporter consumes it.
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    async with session.get(url + "/metrics") as resp:
                        metrics = Metrics(await resp.text())
                    connected = [
                        metrics.value("cloudstack_exporter_events_connected", cloud=c)
                        for c in ("prod", "lab")
                    ]
                    received = metrics.total("cloudstack_exporter_events_received_total")
                    if connected == [1, 1] and received > 0:
                        break
                    await asyncio.sleep(0.1)
            assert connected == [1, 1] and received > 0
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert b"Traceback" not in out
