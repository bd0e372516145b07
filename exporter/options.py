"""The command-line settings the running service needs, and the listen-address rule.

Plain data and the standard library only: `cli` parses flags into `Options` and the `service`
and `web` read them, so this sits below all three (`--version` must not load the web stack).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Unused by the exporters on the Prometheus project's port list that we know of.
DEFAULT_PORT = 9877
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"


@dataclass(frozen=True)
class Options:
    """The command-line settings the running service needs."""

    config_file: str = "config.yaml"
    listen_address: str = DEFAULT_LISTEN_ADDRESS  # "HOST:PORT", ":PORT" or "[IPv6]:PORT"
    more_listen_addresses: tuple[str, ...] = ()  # --web.listen-address given again
    systemd_socket: bool = False  # serve the sockets systemd passes instead
    telemetry_path: str = "/metrics"
    web_config_file: str | None = None
    log_level: str = "info"
    log_format: str = "logfmt"

    @property
    def listen_addresses(self) -> tuple[str, ...]:
        return (self.listen_address, *self.more_listen_addresses)

    @property
    def listen_host(self) -> str:
        """The host to bind; "" means every interface. IPv6 addresses without brackets."""
        return parse_listen_address(self.listen_address)[0] or ""

    @property
    def listen_port(self) -> int:
        return parse_listen_address(self.listen_address)[1]


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """ "HOST:PORT", ":PORT" (every interface) or "[IPv6]:PORT" -> (host or None, port)."""
    address = address.strip()
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise ValueError(f"listen address {address!r}: expected [IPv6]:PORT")
        host: str | None = address[1:end]
        port_text = address[end + 2 :]
        try:
            ipaddress.IPv6Address(host or "")
        except ValueError:
            raise ValueError(f"listen address {address!r}: {host!r} is not IPv6") from None
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"listen address {address!r} is not HOST:PORT or :PORT")
        if ":" in host:
            raise ValueError(f"listen address {address!r}: put an IPv6 address in brackets")
        if host and not _HOSTNAME.fullmatch(host):
            raise ValueError(f"listen address {address!r}: {host!r} is not a host name")
    if not host:
        host = None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {address!r}: port must be a number from 0 to 65535")
    return host, int(port_text)
