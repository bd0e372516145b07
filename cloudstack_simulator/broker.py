"""A private RabbitMQ node for the simulator's event bus: the demo, the tests and the
benchmarks start one in a directory of their own, on free ports, and stop it.

`RabbitNode(base)`: `start()` returns once the node accepts AMQP connections (about 7 s on a
small machine), `stop()` ends it (its data stays, for `start()` again), `close()` ends its epmd
too; `.url` is `amqp://guest:guest@127.0.0.1:PORT/`.

It runs Debian's /usr/lib/rabbitmq/bin/rabbitmq-server (the one in /usr/sbin drops to the
rabbitmq user, which cannot write a root-owned temporary directory), with HOME, the Erlang
cookie, the node name, every port (AMQP, distribution, epmd), the data, log, config and plugin
files all private, so nothing on the machine is touched and several nodes can run side by side.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 90.0  # seconds; the node boots in about 7 s, slower on a loaded machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> str | None:
    """None when a node can be started, else why not."""
    if not SERVER.exists():
        return f"{SERVER} not found (install Debian's rabbitmq-server)"
    if shutil.which("erl") is None:
        return "erl not found (rabbitmq-server's Erlang runtime)"
    return None


def _amqp_ready(port: int) -> bool:
    """Whether the broker answers the AMQP 0-9-1 protocol header with Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            first = sock.recv(1)
    except OSError:
        return False
    return first == b"\x01"  # a method frame


class RabbitNode:
    """One private RabbitMQ node in `base` (a directory of its own)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.name = f"rabbit-test-{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        home = base / "home"
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        (base / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\n"
            "disk_free_limit.absolute = 1MB\n"
            "vm_memory_high_watermark.relative = 0.9\n"
        )
        (base / "advanced.config").write_text("[].\n")
        (base / "enabled_plugins").write_text("[].\n")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node (again: same ports and data) and wait until it accepts AMQP."""
        if self.running:
            return
        log = (self.base / "log" / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [str(SERVER)],
            env=self.env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() ends every child
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _amqp_ready(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited early: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rabbitmq-server not ready in {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node (its data stays, for start() again)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            except ProcessLookupError:
                pass
        # The port is free once the node is gone; wait so a start() right after can bind it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _port_open(self.port):
            time.sleep(0.1)

    def kill_epmd(self) -> None:
        """End the epmd this node started on its private port."""
        epmd = shutil.which("epmd")
        if epmd is not None:
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"],
                env=self.env,
                capture_output=True,
                timeout=10,
                check=False,
            )

    def close(self) -> None:
        self.stop()
        self.kill_epmd()

    def log_tail(self, chars: int = 2000) -> str:
        path = self.base / "log" / "stdout.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
