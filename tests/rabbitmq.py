"""A private RabbitMQ node for tests and benchmarks.

Use it from a test module with

    pytest.register_assert_rewrite("rabbitmq")
    from rabbitmq import RabbitNode  # noqa: E402

    pytest_plugins = ["rabbitmq"]

Fixtures
- `rabbitmq` (session): one node shared by every test of the run; tests keep apart by using
  `unique_name()` for their exchanges and queues. Its `.url` is `amqp://guest:guest@localhost:N/`.
- `rabbitmq_restartable` (per test): a node of its own that the test may `stop()` and `start()`
  again on the same ports and data directory ("the broker restarted mid-run").

The node is cloudstack_simulator.broker.RabbitNode (the demo and the benchmarks start one too).
Without the binary the fixtures skip, except under CI=true where they fail.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_simulator.broker import SERVER, RabbitNode, available

__all__ = ["SERVER", "RabbitNode", "available", "require", "unique_name"]

_names = itertools.count(1)


def unique_name(prefix: str = "test") -> str:
    """A name no other test of this run uses (exchanges, queues)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}-{secrets.token_hex(3)}"


def require() -> None:
    """Skip the test without RabbitMQ; under CI=true, fail instead."""
    reason = available()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but RabbitMQ cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    require()
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq"))
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def rabbitmq_restartable(tmp_path: Path) -> Iterator[RabbitNode]:
    require()
    node = RabbitNode(tmp_path / "rabbitmq")
    try:
        node.start()
        yield node
    finally:
        node.close()
