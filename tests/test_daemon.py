"""The installed command as an operator runs it: signals, reload, state on exit, log formats."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from binaries import require
from exporter_harness import Metrics, cloud_yaml, write_config
from ports import free_port
from simulator_fixtures import SimHandle

pytest_plugins = ["simulator_fixtures"]


class Daemon:
    def __init__(self, config: Path, *extra: str) -> None:
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *extra,
        ]  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        await self.until(lambda status, _: status == 200, "/-/ready")

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def until(self, check: object, path: str = "/metrics", timeout: float = 20.0) -> str:
        assert callable(check)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while loop.time() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}")
            try:
                status, last = await self.get(path)
                if check(status, last):
                    return last
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}; last answer: {last[:500]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self) -> tuple[int, str]:
        assert self.proc is not None and self.proc.stderr is not None
        stderr = await asyncio.wait_for(self.proc.stderr.read(), timeout=20)
        code = await asyncio.wait_for(self.proc.wait(), timeout=20)
        return code, stderr.decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def test_sighup_reloads_refuses_bad_files_and_sigterm_flushes_state(
    simulator: SimHandle, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    ids = await simulator.create_jobs(2, cmd="DeployVMCmd")
    top = f"poll_interval: 1s\nstate_file: {state}\n"
    config = tmp_path / "config.yaml"
    write_config(config, [cloud_yaml("a", simulator)], top=top)
    good = config.read_text().replace("poll_interval: 1h\n", "")
    config.write_text(good)
    daemon = Daemon(config)
    try:
        await daemon.start()
        text = await daemon.until(lambda s, text: all(i in text for i in ids))
        loaded = Metrics(text)
        assert loaded.value("cloudstack_exporter_config_last_reload_successful") == 1
        started = loaded.value("cloudstack_exporter_config_last_reload_success_timestamp_seconds")
        assert started is not None and started > 0

        # A broken file is refused; the running configuration keeps polling.
        config.write_text(good + "  bogus_key: 1\n")
        daemon.signal(signal.SIGHUP)
        await simulator.finish(ids[0], "success")
        text = await daemon.until(
            lambda s, t: (
                f'cloudstack_async_job_status{{cloud="a",job_id="{ids[0]}"' in t
                and Metrics(t).value("cloudstack_async_job_status", job_id=ids[0]) == 1
                and Metrics(t).value("cloudstack_exporter_config_last_reload_successful") == 0
            )
        )
        assert Metrics(text).value("cloudstack_up", cloud="a") == 1
        refused = Metrics(text)
        assert (
            refused.value("cloudstack_exporter_config_last_reload_success_timestamp_seconds")
            == started
        )

        # A good file takes effect: a second cloud (another account) appears.
        config.write_text(good + cloud_yaml("b", simulator, simulator.ops))
        daemon.signal(signal.SIGHUP)
        text = await daemon.until(lambda s, t: Metrics(t).value("cloudstack_up", cloud="b") == 1)
        reloaded = Metrics(text)
        assert reloaded.value("cloudstack_exporter_config_last_reload_successful") == 1
        again = reloaded.value("cloudstack_exporter_config_last_reload_success_timestamp_seconds")
        assert again is not None and again > started

        daemon.signal(signal.SIGTERM)
        code, stderr = await daemon.wait()
    finally:
        daemon.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "reload refused" in stderr and "bogus_key" in stderr
    assert 'msg="first successful poll" cloud=a' in stderr
    saved = json.loads(state.read_text())
    assert set(saved["clouds"]) == {"a", "b"}
    assert ids[0] in state.read_text() and ids[1] in state.read_text()


async def test_sigint_stops_cleanly_and_json_logs_are_one_object_a_line(
    simulator: SimHandle, tmp_path: Path
) -> None:
    await simulator.create_jobs(1)
    config = write_config(tmp_path / "config.yaml", [cloud_yaml("a", simulator)])
    daemon = Daemon(config, "--log.format=json", "--log.level=debug")
    try:
        await daemon.start()
        daemon.signal(signal.SIGINT)
        code, stderr = await daemon.wait()
    finally:
        daemon.kill()
    assert code == 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all("level" in r and "msg" in r for r in records)
    assert simulator.admin.secret_key not in stderr
    assert simulator.admin.api_key not in stderr


async def test_port_in_use_is_a_one_line_error(simulator: SimHandle, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", [cloud_yaml("a", simulator)])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 1
    lines = stderr.decode().splitlines()
    errors = [line for line in lines if "level=error" in line or "level=warn" in line]
    # One line says what happened, and nothing else goes wrong while stopping.
    assert errors == [
        f"ts={errors[0].split(' ')[0][3:]} level=error logger=exporter.service "
        f'msg="cannot listen on 127.0.0.1:{port}: error while attempting to bind on address '
        f"('127.0.0.1', {port}): address already in use\""
    ], lines
    assert "Traceback" not in stderr.decode()


# --------------------------------------------------------------------------- listening


async def test_every_listen_address_given_is_served(simulator: SimHandle, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", [cloud_yaml("a", simulator)])
    second = free_port()
    daemon = Daemon(config, f"--web.listen-address=127.0.0.1:{second}")
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            for port in (daemon.port, second):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    assert resp.status == 200
                    assert "cloudstack_up" in await resp.text()
        daemon.signal(signal.SIGTERM)
        code, stderr = await daemon.wait()
    finally:
        daemon.kill()
    assert code == 0
    assert f"listening on http://127.0.0.1:{daemon.port}" in stderr
    assert f"listening on http://127.0.0.1:{second}" in stderr


async def test_systemd_socket_activation_serves_the_socket_systemd_passes(
    simulator: SimHandle, tmp_path: Path
) -> None:
    activate = require("systemd-socket-activate")
    config = write_config(tmp_path / "config.yaml", [cloud_yaml("a", simulator)])
    port = free_port()
    # systemd-socket-activate holds the port and starts the exporter as systemd would,
    # with LISTEN_FDS and LISTEN_PID set.
    proc = await asyncio.create_subprocess_exec(
        activate, "-l", f"127.0.0.1:{port}",
        sys.executable, "-m", "exporter", f"--config.file={config}", "--web.systemd-socket",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        text = ""
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/-/ready") as resp:
                        if resp.status == 200:
                            async with session.get(f"http://127.0.0.1:{port}/metrics") as m:
                                text = await m.text()
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        assert Metrics(text).value("cloudstack_up", cloud="a") == 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-1000:]
    assert "Traceback" not in stderr.decode()


async def test_systemd_socket_without_systemd_is_a_one_line_error(
    simulator: SimHandle, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", [cloud_yaml("a", simulator)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", f"--config.file={config}", "--web.systemd-socket",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 1
    errors = [line for line in stderr.decode().splitlines() if "level=error" in line]
    assert len(errors) == 1
    assert (
        "cannot listen on the systemd sockets: --web.systemd-socket: no socket was passed"
        in (errors[0])
    )
