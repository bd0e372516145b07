"""Pytest fixtures for tests that need a running CloudStack simulator.

Use them from a test module with

    pytest.register_assert_rewrite("simulator_fixtures")  # before the import: no pytest warning
    from simulator_fixtures import Credentials, SimHandle  # noqa: E402  (types and helpers)

    pytest_plugins = ["simulator_fixtures"]

Fixtures
- `simulator` (async, per test): a Simulator started in-process on 127.0.0.1 with ephemeral ports:
  the API port and a separate control port, so an outage really refuses API connections. It
  yields a `SimHandle`. The server's time zone is -0700, so date handling is exercised.
- `second_simulator` (async, per test): another one, in time zone +0530, for a second cloud.
- `sim_session`: an aiohttp ClientSession for raw HTTP (closed after the test).

SimHandle
- `.url` (the `/client/api` URL), `.control_url` (`.../sim`), `.sim` (the Simulator object; prefer
  the helpers below, which go through HTTP like any other client).
- `.admin` (root admin "admin" in ROOT), `.ops` (user "ops" in /Ops), `.dev` (user "dev" in /Dev):
  `Credentials` with api_key, secret_key, username, password, account, domain (path).
- Helper coroutines for the control API (each returns the decoded JSON answer):
  `create_jobs(count=1, cmd="StopVMCmd", account="admin", duration=None, outcome="success",
  result_code=None, errortext=None, created_ago=0, instance_type=..., pseudo=False) -> list[str]`,
  `job(jobid)` (the truth, or None when unknown/purged), `jobs(status="all")`,
  `finish(jobid, outcome="success", result_code=None, errortext=None)`,
  `set_procstatus(jobid, value)`, `advance(seconds)`, `purge()`, `restart()`,
  `revoke_key(api_key=None, account=None)`, `set_enabled(account, enabled)`,
  `expire_sessions()`, `throttle(max, interval=1.0)`,
  `add_fault(kind, commands=None, count=None, seconds=0, status=503) -> fault id`,
  `clear_faults()`, `counters()`, `reset_counters()`, `workload(**settings)`,
  `stop_workload()`, `settings(**values)`, and `control(method, path, body)` for anything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from cloudstack_simulator import Directory, Simulator, SimulatorConfig
from cloudstack_simulator.accounts import DEFAULT_ACCOUNTS
from cloudstack_simulator.clock import parse_timezone


@dataclass(frozen=True)
class Credentials:
    api_key: str
    secret_key: str
    username: str
    password: str
    account: str
    domain: str

    def __repr__(self) -> str:
        return f"Credentials({self.account!r} in {self.domain!r})"


def _credentials(account: str) -> Credentials:
    entry = next(e for e in DEFAULT_ACCOUNTS if e["account"] == account)
    return Credentials(
        api_key=entry["api_key"],
        secret_key=entry["secret_key"],
        username=entry["username"],
        password=entry["password"],
        account=entry["account"],
        domain=entry["domain"],
    )


class SimHandle:
    """A running simulator and helpers that drive its control API over HTTP."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.url = sim.url
        self.control_url = sim.control_url
        self.admin = _credentials("admin")
        self.ops = _credentials("ops")
        self.dev = _credentials("dev")
        self._session = session

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(method, self.control_url + path, json=body) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise AssertionError(f"control {method} {path}: {resp.status} {data}")
            return data

    async def create_jobs(self, count: int = 1, **spec: Any) -> list[str]:
        spec.setdefault("account", "admin")
        answer = await self.control("POST", "/jobs", {"count": count, **spec})
        return list(answer["jobids"])

    async def job(self, jobid: str) -> dict[str, Any] | None:
        async with self._session.get(f"{self.control_url}/jobs/{jobid}") as resp:
            if resp.status == 404:
                return None
            data: dict[str, Any] = await resp.json()
            return data

    async def jobs(self, status: str = "all", limit: int = 100_000) -> list[dict[str, Any]]:
        answer = await self.control("GET", f"/jobs?status={status}&limit={limit}")
        return list(answer["jobs"])

    async def finish(self, jobid: str, outcome: str = "success", **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.control(
            "POST", f"/jobs/{jobid}/finish", {"outcome": outcome, **spec}
        )
        return result

    async def set_procstatus(self, jobid: str, value: int) -> Any:
        return await self.control("POST", f"/jobs/{jobid}/procstatus", {"value": value})

    async def advance(self, seconds: float) -> Any:
        return await self.control("POST", "/clock", {"advance": seconds})

    async def purge(self) -> Any:
        return await self.control("POST", "/purge")

    async def restart(self) -> Any:
        return await self.control("POST", "/restart")

    async def revoke_key(self, api_key: str | None = None, account: str | None = None) -> Any:
        return await self.control("POST", "/keys/revoke", {"api_key": api_key, "account": account})

    async def set_enabled(self, account: str, enabled: bool) -> Any:
        return await self.control("POST", f"/accounts/{account}/enabled", {"enabled": enabled})

    async def expire_sessions(self) -> Any:
        return await self.control("POST", "/sessions/expire")

    async def throttle(self, max: int | None, interval: float = 1.0) -> Any:
        return await self.control("POST", "/throttle", {"max": max, "interval": interval})

    async def add_fault(self, kind: str, **spec: Any) -> int:
        answer = await self.control("POST", "/faults", {"kind": kind, **spec})
        return int(answer["id"])

    async def clear_faults(self) -> Any:
        return await self.control("DELETE", "/faults")

    async def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", "/counters")
        return result

    async def reset_counters(self) -> Any:
        return await self.control("DELETE", "/counters")

    async def workload(self, **settings: Any) -> Any:
        return await self.control("POST", "/workload", settings)

    async def stop_workload(self) -> Any:
        return await self.control("DELETE", "/workload")

    async def settings(self, **values: Any) -> Any:
        return await self.control("POST", "/settings", values)


@pytest.fixture
async def sim_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _running(timezone: str, seed: int, version: str) -> AsyncIterator[SimHandle]:
    config = SimulatorConfig(
        directory=Directory(), timezone=parse_timezone(timezone), seed=seed, version=version
    )
    sim = Simulator(config)
    await sim.start("127.0.0.1", 0, control_port=0)
    try:
        async with aiohttp.ClientSession() as session:
            yield SimHandle(sim, session)
    finally:
        await sim.stop()


@pytest.fixture
async def simulator() -> AsyncIterator[SimHandle]:
    # 4.21 shows every optional field (managementservername included).
    async for handle in _running("-0700", seed=7, version="4.21.0.0"):
        yield handle


@pytest.fixture
async def second_simulator() -> AsyncIterator[SimHandle]:
    """Another, independent management server (another zone, seed and release): a second
    cloud."""
    async for handle in _running("+0530", seed=11, version="4.19.0.0"):
        yield handle
