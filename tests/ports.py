"""A loopback port that nothing listens on, for a child process to bind or a client to find
closed."""

from __future__ import annotations

import socket


def free_port() -> int:
    # The kernel picks a port no one holds; it stays free until someone binds it, which is
    # the small race every test that starts a server on a chosen port accepts.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
