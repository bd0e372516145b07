"""Run the real exporter service in-process against simulators, and read its /metrics over HTTP.

Tests drive poll cycles themselves (`await exporter.cycle()`), so what a cycle asks of
CloudStack and what /metrics shows afterwards can be checked exactly, without sleeping.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from simulator_fixtures import Credentials, SimHandle

from exporter.config import load_config
from exporter.options import Options
from exporter.service import Service
from exporter.web import bound_ports

Labels = dict[str, str]


def cloud_yaml(name: str, sim: SimHandle, creds: Credentials | None = None, extra: str = "") -> str:
    creds = creds or sim.admin
    text = f"""\
    - name: {name}
      url: {sim.url}
      api_key: {creds.api_key}
      secret_key: {creds.secret_key}
    """
    return textwrap.dedent(text) + textwrap.indent(textwrap.dedent(extra), "  ")


def write_config(path: Path, clouds: Iterable[str], top: str = "") -> Path:
    # A long poll interval: the loop polls once at start, the tests drive every later cycle.
    body = "poll_interval: 1h\n" + textwrap.dedent(top) + "clouds:\n" + "".join(clouds)
    path.write_text(body)
    return path


class Metrics:
    """A parsed /metrics answer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, Labels, float]] = []
        self.families: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.samples.append((sample.name, dict(sample.labels), sample.value))

    def find(self, name: str, **labels: str) -> list[tuple[Labels, float]]:
        return [
            (lab, value)
            for n, lab, value in self.samples
            if n == name and all(lab.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if not found:
            return None
        assert len(found) == 1, f"{name} {labels}: {len(found)} series"
        return found[0][1]

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.find(name, **labels))

    def job_ids(self, cloud: str | None = None) -> set[str]:
        labels = {"cloud": cloud} if cloud else {}
        return {lab["job_id"] for lab, _ in self.find("cloudstack_async_job_status", **labels)}


class Exporter:
    """The service built from a config file, started, and stopped at the end."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.options = Options(config_file=str(config_file), listen_address="127.0.0.1:0")
        self.service = Service(load_config(str(config_file)), self.options)
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Exporter:
        await self.service.start()
        port = bound_ports(self.service._runner)[0]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        # The loop's first cycle runs on its own; wait for it so tests start from a known point.
        for _ in range(500):
            if self.service.ready():
                break
            await asyncio.sleep(0.01)
        await self.service.settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        await self.service.stop()

    async def cycle(self, times: int = 1) -> None:
        for _ in range(times):
            await asyncio.gather(*(c.poller.poll_once() for c in self.service.clouds.values()))
            await self.service.settle()

    async def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.get(self.url + path, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def metrics(self) -> Metrics:
        status, _, body = await self.get("/metrics")
        assert status == 200
        return Metrics(body.decode())

    def poller(self, cloud: str) -> Any:
        return self.service.clouds[cloud].poller
