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
from cloudstack_simulator.clock import parse_timezone
from exporter.cli import Options, parse_listen_address
from exporter.config import load_config
from exporter.logs import setup_logging
from exporter.service import run

log = logging.getLogger("demo")

# (cloud name, server time zone, jobs per second, long-running jobs present at start)
# (name, server time zone, new jobs a second, jobs already pending, CloudStack release):
# prod sends every optional field (4.21+), lab is older and sends fewer.
CLOUDS = (
    ("prod", "+0000", 2.0, 40, "4.21.0.0"),
    ("lab", "-0700", 0.5, 10, "4.19.0.0"),
)


def _admin_keys() -> tuple[str, str]:
    admin = next(a for a in DEFAULT_ACCOUNTS if a["account"] == "admin")
    return admin["api_key"], admin["secret_key"]


def demo_config(urls: Sequence[tuple[str, str]], state_dir: Path) -> str:
    api_key, secret_key = _admin_keys()
    clouds = "".join(
        f"""
          - name: {name}
            url: {url}
            api_key: {api_key}
            secret_key: {secret_key}
        """
        for name, url in urls
    )
    return textwrap.dedent(
        f"""\
        poll_interval: 5s
        state_file: {state_dir / "state.json"}
        retention: 30m
        clouds:"""
    ) + textwrap.dedent(clouds)


async def _demo(listen: str) -> int:
    sims: list[Simulator] = []
    try:
        urls = []
        for seed, (name, tz, rate, prefill, version) in enumerate(CLOUDS, start=1):
            sim = Simulator(
                SimulatorConfig(
                    directory=Directory(),
                    timezone=parse_timezone(tz),
                    seed=seed,
                    version=version,
                )
            )
            sim.workload.prefill(prefill, spread=1800.0)
            await sim.start("127.0.0.1", 0)
            sim.workload.configure(rate=rate)
            sim.workload.start()
            sims.append(sim)
            urls.append((name, sim.url))
        with tempfile.TemporaryDirectory(prefix="cloudstack-job-exporter-demo-") as tmp:
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(demo_config(urls, Path(tmp)))
            host, port = parse_listen_address(listen)
            shown = host or "127.0.0.1"
            print(
                "\ncloudstack-job-exporter demo\n"
                f"  metrics:     http://{shown}:{port}/metrics\n"
                f"  landing:     http://{shown}:{port}/\n"
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
    finally:
        for sim in sims:
            await sim.workload.stop()
            await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--web.listen-address", dest="listen", default="127.0.0.1:9877", help="HOST:PORT"
    )
    parser.add_argument("--log.level", dest="level", default="info")
    args = parser.parse_args(argv)
    try:
        parse_listen_address(args.listen)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: --web.listen-address: {exc}\n")
    setup_logging(args.level, "logfmt")
    try:
        return asyncio.run(_demo(args.listen))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
