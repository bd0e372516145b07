"""`make demo`: two simulated CloudStack clouds with a realistic workload, and the exporter
watching both. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from cloudstack_simulator import Directory, Simulator, SimulatorConfig
from cloudstack_simulator.accounts import DEFAULT_ACCOUNTS
from cloudstack_simulator.broker import RabbitNode, available
from cloudstack_simulator.clock import parse_timezone
from cloudstack_simulator.events import EventSettings
from cloudstack_simulator.store import Outcome
from exporter.config import load_config
from exporter.logs import setup_logging
from exporter.options import Options, parse_listen_address
from exporter.service import run

log = logging.getLogger("demo")

# (name, server time zone, new jobs a second, jobs already running, CloudStack release):
# prod sends every optional field (4.21+), lab is older and sends fewer.
CLOUDS = (
    ("prod", "+0000", 2.0, 40, "4.21.0.0"),
    ("lab", "-0700", 0.5, 10, "4.19.0.0"),
)
# Jobs already running at start began this long ago at most, and end like any other job.
RUNNING_SPREAD = 60.0
# What the operator is shown on purpose in prod: one job stuck for 45 minutes (beyond the
# 30-minute alert threshold) and migrations failing with an error text.
STUCK_AGO = 2700.0
FAILING = "Unable to migrate VM i-2-17-VM: host kvm-04 is unreachable"


def _seed_jobs(sim: Simulator, running: int, deliberate: bool) -> None:
    for i in range(running):
        sim.workload.spawn(created_ago=RUNNING_SPREAD * i / max(running, 1))
    if not deliberate:
        return
    admin = next(u for u in sim.directory.users if u.account.is_root_admin)
    vm = "org.apache.cloudstack.api.command.admin.vm"
    sim.store.create(
        admin, cmd=f"{vm}.StopVMCmdByAdmin", instance_type="VirtualMachine", created_ago=STUCK_AGO
    )
    for delay in (20.0, 40.0, 70.0):
        sim.store.create(
            admin,
            cmd=f"{vm}.MigrateVMCmdByAdmin",
            instance_type="VirtualMachine",
            duration=delay,
            outcome=Outcome("failure", 530, FAILING),
        )


def _admin_keys() -> tuple[str, str]:
    admin = next(a for a in DEFAULT_ACCOUNTS if a["account"] == "admin")
    return admin["api_key"], admin["secret_key"]


EXCHANGE = "cloudstack-events"


def demo_config(
    urls: Sequence[tuple[str, str]], state_dir: Path, broker_url: str | None = None
) -> str:
    api_key, secret_key = _admin_keys()
    clouds = "".join(
        f"""
          - name: {name}
            url: {url}
            api_key: {api_key}
            secret_key: {secret_key}
        """
        + (
            f"""    events:
              url: {broker_url}
              exchange: {EXCHANGE}-{name}
        """
            if broker_url
            else ""
        )
        for name, url in urls
    )
    return textwrap.dedent(
        f"""\
        poll_interval: 5s
        state_file: {state_dir / "state.json"}
        retention: 30m
        clouds:"""
    ) + textwrap.dedent(clouds)


async def _demo(listen: str, events: bool) -> int:
    sims: list[Simulator] = []
    node: RabbitNode | None = None
    with tempfile.TemporaryDirectory(prefix="cloudstack-job-exporter-demo-") as tmp:
        try:
            why_not = available() if events else "--no-events given"
            if why_not is None:
                # A private node, as the tests use: the simulators publish their job events
                # to it, the exporter consumes them.
                node = RabbitNode(Path(tmp) / "rabbitmq")
                log.info("starting a private RabbitMQ node for the event stream")
                await asyncio.to_thread(node.start)
            return await _run(listen, Path(tmp), sims, node, why_not)
        finally:
            for sim in sims:
                await sim.workload.stop()
                await sim.stop()
            if node is not None:
                await asyncio.to_thread(node.close)


async def _run(
    listen: str, tmp: Path, sims: list[Simulator], node: RabbitNode | None, why_not: str | None
) -> int:
    urls = []
    for seed, (name, tz, rate, prefill, version) in enumerate(CLOUDS, start=1):
        bus = (
            EventSettings(url=node.url, exchange=f"{EXCHANGE}-{name}", reconnect_interval=2.0)
            if node is not None
            else EventSettings()
        )
        sim = Simulator(
            SimulatorConfig(
                directory=Directory(),
                timezone=parse_timezone(tz),
                seed=seed,
                version=version,
                events=bus,
            )
        )
        await sim.start("127.0.0.1", 0)
        _seed_jobs(sim, prefill, deliberate=name == "prod")
        sim.workload.configure(rate=rate)
        sim.workload.start()
        sims.append(sim)
        urls.append((name, sim.url))
    config_file = tmp / "config.yaml"
    config_file.write_text(demo_config(urls, tmp, node.url if node else None))
    stream = (
        f"  event stream: on, the simulators publish to a private RabbitMQ node "
        f"({node.url.replace('guest:guest@', '')}): every job is counted, short ones too\n"
        if node is not None
        else f"  event stream: off ({why_not}): the exporter polls only, so jobs "
        "shorter than a poll are not counted\n"
    )
    host, port = parse_listen_address(listen)
    shown = host or "127.0.0.1"
    base = f"http://{shown}:{port}"
    print(
        "\ncloudstack-job-exporter demo\n"
        f"  jobs page:   {base}/jobs   <- start here\n"
        f"  landing:     {base}/\n"
        f"  metrics:     {base}/metrics\n"
        "What to look at:\n"
        f"  - a StopVMCmd stuck in prod for {STUCK_AGO / 60:.0f} minutes: "
        f"{base}/jobs?status=pending&sort=-age\n"
        f"  - MigrateVMCmd failing in prod within the next minutes, with its error text: "
        f"{base}/jobs?status=failed\n"
        "  - every other job starts and ends like CloudStack's own (seconds to minutes)\n"
        + stream
        + "".join(
            f"  {name + ' sim:':<12} {sim.url} (control {sim.control_url})\n"
            for (name, _), sim in zip(urls, sims, strict=True)
        )
        + f"  config:      {config_file}\n"
        "Ctrl-C stops the exporter and the simulators.\n",
        flush=True,
    )
    options = Options(config_file=str(config_file), listen_address=listen)
    return await run(load_config(str(config_file)), options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--web.listen-address", dest="listen", default="127.0.0.1:9877", help="HOST:PORT"
    )
    parser.add_argument("--log.level", dest="level", default="info")
    parser.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="poll only, even when rabbitmq-server is installed",
    )
    args = parser.parse_args(argv)
    try:
        parse_listen_address(args.listen)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: --web.listen-address: {exc}\n")
    setup_logging(args.level, "logfmt")
    try:
        return asyncio.run(_demo(args.listen, args.events))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
