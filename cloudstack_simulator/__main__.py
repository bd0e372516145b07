"""`python -m cloudstack_simulator` / `cloudstack-simulator`: run the simulator until a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from cloudstack_simulator.accounts import AccountsError, Directory, load_accounts
from cloudstack_simulator.app import Simulator, SimulatorConfig
from cloudstack_simulator.clock import parse_timezone
from cloudstack_simulator.events import EventSettings
from cloudstack_simulator.workload import WorkloadError

log = logging.getLogger("cloudstack_simulator")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudstack-simulator",
        description="A CloudStack management server for the async-job APIs (listAsyncJobs, "
        "queryAsyncJobResult), with a workload generator, fault injection and a /sim/ "
        "control API.",
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8096),
        help="HOST:PORT of the API (default 127.0.0.1:8096; port 0: any)",
    )
    parser.add_argument(
        "--control-listen",
        type=_listen,
        default=None,
        help="HOST:PORT of a control-only listener; with it an outage refuses "
        "API connections instead of resetting them (default: none)",
    )
    parser.add_argument(
        "--accounts",
        metavar="FILE",
        help="accounts file (YAML or JSON); default: the built-in accounts",
    )
    parser.add_argument(
        "--timezone",
        default="+0000",
        help="the server's time-zone offset for dates, e.g. -0700 (default +0000)",
    )
    parser.add_argument(
        "--job-expire",
        type=_positive,
        default=1440.0,
        metavar="MINUTES",
        help="job.expire.minutes: purge jobs this long after completion (default 1440)",
    )
    parser.add_argument(
        "--version",
        dest="cs_version",
        default="4.19.0.0",
        help="the CloudStack version to behave like (default 4.19.0.0)",
    )
    parser.add_argument(
        "--workload",
        type=_positive,
        default=0.0,
        metavar="RATE",
        help="start the workload generator at RATE jobs per second (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="pre-create N pending jobs that never finish by themselves",
    )
    parser.add_argument(
        "--text-javascript",
        action="store_true",
        help="send JSON as text/javascript, like old servers",
    )
    parser.add_argument(
        "--maintenance",
        action="store_true",
        help="start in maintenance mode: commands that submit jobs get 503",
    )
    parser.add_argument(
        "--events.url",
        dest="events_url",
        default="",
        metavar="URL",
        help="publish AsyncJobEvent messages to this RabbitMQ broker, amqp://user:pass@host:port/"
        "vhost (default: no event bus)",
    )
    parser.add_argument(
        "--events.exchange",
        dest="events_exchange",
        default="cloudstack-events",
        help="the exchange events go to (default cloudstack-events)",
    )
    parser.add_argument(
        "--events.accountinfo",
        dest="events_accountinfo",
        action="store_true",
        help="event.accountinfo: add username, accountname and domainname to events",
    )
    parser.add_argument(
        "--events.reconnect-interval",
        dest="events_reconnect",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="seconds between attempts to reach the broker (default 10, as CloudStack)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


async def _serve(args: argparse.Namespace, directory: Directory) -> None:
    config = SimulatorConfig(
        directory=directory,
        timezone=parse_timezone(args.timezone),
        job_expire=args.job_expire * 60,
        version=args.cs_version,
        seed=args.seed,
        events=EventSettings(
            url=args.events_url,
            exchange=args.events_exchange,
            accountinfo=args.events_accountinfo,
            reconnect_interval=args.events_reconnect or 10.0,
        ),
    )
    if args.text_javascript:
        from cloudstack_simulator.responses import OLD_JSON_CONTENT_TYPE

        config.json_content_type = OLD_JSON_CONTENT_TYPE
    sim = Simulator(config)
    sim.api.maintenance = args.maintenance
    if args.jobs:
        sim.workload.prefill(args.jobs, spread=min(3600.0, config.job_expire / 2))
    host, port = args.listen
    control_port = args.control_listen[1] if args.control_listen else None
    await sim.start(host, port, control_port=control_port)
    if args.workload:
        sim.workload.configure(rate=args.workload)
        sim.workload.start()
    admin = next((u for u in directory.users if u.account.is_root_admin and u.api_key), None)
    log.info("CloudStack simulator listening on %s (control API %s)", sim.url, sim.control_url)
    if admin is not None and args.accounts is None:
        # Only the documented built-in test keys are ever printed; keys from a file never are.
        log.info("default admin keys: apiKey=%s secretKey=%s", admin.api_key, admin.secret_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        parse_timezone(args.timezone)
        directory = load_accounts(args.accounts) if args.accounts else Directory()
    except (AccountsError, ValueError) as exc:
        print(f"cloudstack-simulator: {exc}", file=sys.stderr)
        return 2
    if args.events_url and not args.events_url.startswith(("amqp://", "amqps://")):
        print(
            "cloudstack-simulator: --events.url must be amqp://... or amqps://...", file=sys.stderr
        )
        return 2
    if args.jobs < 0:
        print("cloudstack-simulator: --jobs must not be negative", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, directory))
    except OSError as exc:
        print(f"cloudstack-simulator: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except WorkloadError as exc:
        print(f"cloudstack-simulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
