"""The exporter as an operator runs it: `python -m exporter` in a child process.

Its log goes to a file, not a pipe, so a long or chatty run never blocks on a full pipe, and
the test can read everything it wrote, even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import aiohttp
from ports import free_port

ROOT = Path(__file__).resolve().parent.parent


class ExporterProcess:
    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config = config
        self.log = log
        self.extra = extra
        self.port = 0
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    async def start(self, ready_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_file = open(self.log, "ab")  # noqa: SIM115 (closed in wait/kill)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter",
            f"--config.file={self.config}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self.extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        await self.until(lambda status, _: status == 200, "/-/ready", ready_timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def get(self, path: str = "/metrics", timeout: float = 10.0) -> tuple[int, str]:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(self.url + path) as resp,
        ):
            return resp.status, await resp.text()

    async def until(
        self,
        check: Callable[[int, str], bool],
        path: str = "/metrics",
        timeout: float = 20.0,
    ) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while loop.time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(
                    f"exporter exited with {self.proc.returncode}: {self.log_text()[-2000:]}"
                )
            try:
                status, last = await self.get(path)
                if check(status, last):
                    return last
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting on {path}; last answer: {last[:500]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no handler runs, no state is flushed."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> int:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self, timeout: float = 30.0) -> int:
        code = 0
        if self.proc is not None:
            try:
                code = await asyncio.wait_for(self.proc.wait(), timeout=timeout)
            except TimeoutError:
                self.proc.kill()
                code = await self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code
