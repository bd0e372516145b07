"""The command line: flags, --config.check, and starting the service with a valid configuration.

Exit codes: 0 after a clean stop (SIGTERM, SIGINT) or a valid --config.check; 1 when the
exporter fails while running; 2 for bad command-line or configuration input, reported in one
line per problem and never with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
from collections.abc import Sequence
from typing import NoReturn

from exporter import __version__
from exporter.config import Config, ConfigError, load_config
from exporter.logs import register_secret, setup_logging
from exporter.options import DEFAULT_LISTEN_ADDRESS, Options, parse_listen_address
from exporter.sources import parse_id_lines

PROG = "cloudstack-job-exporter"
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("exporter.cli")


def _listen_address(value: str) -> str:
    try:
        parse_listen_address(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _telemetry_path(value: str) -> str:
    if not value.startswith("/") or value == "/" or value.startswith("/-/"):
        raise argparse.ArgumentTypeError(
            f"{value!r} must be a path starting with / other than / and /-/..."
        )
    if any(c.isspace() or c in "?#" for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} must be a plain path")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line of reason; the full usage is one --help away.
        self.exit(EXIT_USAGE, f"{self.prog}: {' '.join(message.split())} (see --help)\n")


def version_string() -> str:
    return f"{PROG} {__version__} (python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for Apache CloudStack asynchronous jobs.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration (and the files it names) and exit: 0 valid, 2 invalid",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        action="append",
        type=_listen_address,
        metavar="HOST:PORT",
        help="address to listen on; :PORT means every interface, [::1]:PORT an IPv6 address; "
        f"repeat it to listen on several (default: {DEFAULT_LISTEN_ADDRESS})",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="serve on the sockets systemd passes (socket activation) instead of "
        "--web.listen-address",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        type=_telemetry_path,
        metavar="PATH",
        help="path of the metrics (default: %(default)s)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="PATH",
        help="web configuration (exporter-toolkit format: TLS, basic auth) (default: none)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=LOG_LEVELS,
        help="only log messages of this level or above (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=LOG_FORMATS,
        help="log line format (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=version_string())
    return parser


def _check_state_dir(state_file: str | None) -> list[str]:
    """The state file is written after polls; a directory it cannot be written to would show
    only then, as a log line and cloudstack_exporter_state_write_failures_total."""
    if not state_file:
        return []
    directory = os.path.dirname(os.path.abspath(state_file))
    if not os.path.isdir(directory):
        return [f"state_file: directory {directory} does not exist"]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [f"state_file: directory {directory} is not writable by this user"]
    return []


def _check_jobs_files(config: Config) -> list[str]:
    """Warnings, not problems: the daemon starts without a jobs_file it cannot read (and
    reads it once it appears) and skips a line that is no job ID; the check says so now
    rather than in a log line after the start."""
    warnings = []
    for index, cloud in enumerate(config.clouds):
        if cloud.jobs_file is None:
            continue
        key = f"warning: clouds[{index}].jobs_file"
        try:
            with open(cloud.jobs_file, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            warnings.append(
                f"{key}: cannot read {cloud.jobs_file}: {reason} "
                "(the exporter starts without its IDs and reads it when it appears)"
            )
            continue
        _, bad = parse_id_lines(lines)
        if bad:
            lines_text = "1 line is not a job ID" if bad == 1 else f"{bad} lines are not job IDs"
            warnings.append(
                f"{key}: {cloud.jobs_file}: {lines_text} (skipped; an ID is letters, digits, "
                "'.', '_' and '-', one a line)"
            )
    return warnings


def check_config(options: Options) -> int:
    """--config.check: one line per problem on stderr and 2, or a summary on stdout and 0
    (with a line on stderr for each warning)."""
    problems: list[str] = []
    warnings: list[str] = []
    summary: list[str] = []
    try:
        config = load_config(options.config_file)
    except ConfigError as error:
        problems.extend(error.problems)
    else:
        problems.extend(_check_state_dir(config.state_file))
        warnings = _check_jobs_files(config)
        names = ", ".join(cloud.name for cloud in config.clouds)
        count = len(config.clouds)
        summary.append(f"config OK: {count} cloud{'s' if count != 1 else ''} ({names})")
    if options.web_config_file:
        problems.extend(_check_web_config(options.web_config_file, summary))
    for line in problems + warnings:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_USAGE
    for line in summary:
        print(line)
    return EXIT_OK


def _check_web_config(path: str, summary: list[str]) -> list[str]:
    from exporter.webconfig import WebConfigError, load_web_config

    try:
        load_web_config(path)
    except WebConfigError as error:
        return [f"{path}: {problem}" for problem in error.problems]
    summary.append(f"web config OK: {path}")
    return []


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # --help and --version (0) or a usage error (2), already printed.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    addresses = args.listen_address or [DEFAULT_LISTEN_ADDRESS]
    options = Options(
        config_file=args.config_file,
        listen_address=addresses[0],
        more_listen_addresses=tuple(addresses[1:]),
        systemd_socket=args.systemd_socket,
        telemetry_path=args.telemetry_path,
        web_config_file=args.web_config_file,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    if args.config_check:
        return check_config(options)

    setup_logging(options.log_level, options.log_format)
    try:
        config = load_config(options.config_file)
    except ConfigError as error:
        for problem in error.problems:
            log.error(
                "invalid configuration", extra={"file": options.config_file, "problem": problem}
            )
        return EXIT_USAGE
    for secret in config.secrets():
        register_secret(secret)
    log.info(
        "starting",
        extra={"version": __version__, "config": options.config_file, "clouds": len(config.clouds)},
    )
    try:
        # Imported here: the service pulls in aiohttp and every other module, which
        # --config.check, --version and usage errors do not need.
        from exporter import service

        return int(asyncio.run(service.run(config, options)))
    except KeyboardInterrupt:
        # Ctrl-C before the service took over SIGINT: nothing started needs flushing.
        log.info("interrupted; exiting")
        return EXIT_OK
    except Exception:
        log.error("exporter failed", exc_info=True)
        return EXIT_FAILED
