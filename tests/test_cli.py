"""The command line as users run it: exit codes, one-line reasons, never a traceback."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import exporter
from exporter import __version__, logs
from exporter.cli import main
from exporter.options import Options, parse_listen_address

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-VALUE-cli"

VALID = f"""\
clouds:
  - name: prod
    url: https://cloud.example.com/client/api
    api_key: ${{CJE_API_KEY}}
    secret_key: {SECRET}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CJE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logs._handler = None
    logs.forget_secrets()
    logging.captureWarnings(False)


# --------------------------------------------------------------------------- --config.check


def test_config_check_valid(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config OK: 1 cloud (prod)\n"
    assert result.stderr == ""


def test_config_check_checks_that_the_state_file_can_be_written(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "state.json"
    path = write(tmp_path, f"state_file: {missing}\n" + VALID)
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert result.returncode == 2
    assert result.stderr == f"state_file: directory {missing.parent} does not exist\n"
    missing.parent.mkdir()
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert (result.returncode, result.stderr) == (0, "")


def test_config_check_warns_of_a_jobs_file_the_daemon_would_only_warn_of(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs.txt"
    path = write(tmp_path, VALID + f"    jobs_file: {jobs}\n")
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert (result.returncode, result.stdout) == (0, "config OK: 1 cloud (prod)\n")
    assert result.stderr == (
        f"warning: clouds[0].jobs_file: cannot read {jobs}: No such file or directory "
        "(the exporter starts without its IDs and reads it when it appears)\n"
    )
    jobs.write_text("# pending deploys\n5c7a3b1e-0000-4000-8000-000000000001\nnot an id\n")
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert result.returncode == 0
    assert result.stderr == (
        f"warning: clouds[0].jobs_file: {jobs}: 1 line is not a job ID (skipped; an ID is "
        "letters, digits, '.', '_' and '-', one a line)\n"
    )
    jobs.write_text("# pending deploys\n5c7a3b1e-0000-4000-8000-000000000001\n")
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert (result.returncode, result.stderr) == (0, "")
    # A warning never hides a real problem.
    path = write(tmp_path, VALID.replace("name: prod", "name: ''") + f"    jobs_file: {jobs}x\n")
    result = run("--config.check", f"--config.file={path}", env={"CJE_API_KEY": "key-1"})
    assert result.returncode == 2


def test_config_check_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
poll_interval: 0.5s
clouds:
  - name: prod
    url: https://cloud.example.com/
    api_key: ${{CJE_API_KEY}}
    secret_key: {SECRET}
    discovery:
      listal: false
""",
    )
    result = run("--config.check", "--config.file", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "poll_interval: not a duration: '0.5s' "
        "(use e.g. 500ms, 15s, 5m, 1h30m, or a number of seconds)",
        "clouds[0].url: must end in /client/api (e.g. https://cloud.example.com/client/api), "
        "got 'https://cloud.example.com/'",
        "clouds[0].api_key: environment variable CJE_API_KEY is not set",
        "clouds[0].discovery.listal: unknown key (did you mean listall?)",
    ]
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("clouds: [\n", ":2:1: "),  # YAML syntax error, with line and column
        ("", ": the file is empty"),
        (None, ": cannot read: No such file or directory"),
    ],
)
def test_config_check_file_problems(tmp_path: Path, content: str | None, expected: str) -> None:
    path = write(tmp_path, content) if content is not None else str(tmp_path / "absent.yaml")
    result = run("--config.check", f"--config.file={path}")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(path + expected)
    assert "Traceback" not in result.stderr


def test_config_check_also_checks_the_web_config(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    web = str(tmp_path / "web.yml")
    result = run(
        "--config.check",
        f"--config.file={path}",
        f"--web.config.file={web}",
        env={"CJE_API_KEY": "key-1"},
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{web}: ")
    assert "Traceback" not in result.stderr


def test_config_check_of_the_example_file(tmp_path: Path) -> None:
    env = {
        "CLOUDSTACK_API_KEY": "k",
        "CLOUDSTACK_SECRET_KEY": "s",
        "CLOUDSTACK_LAB_PASSWORD": "p",
    }
    # The example's state directory is created by the install (systemd's StateDirectory=);
    # on a machine without it, the check says so and nothing else.
    example = Path("config.example.yaml").read_text()
    state_line = "state_file: /var/lib/cloudstack-job-exporter/state.json\n"
    assert state_line in example
    installed = tmp_path / "config.yaml"
    installed.write_text(example.replace(state_line, f"state_file: {tmp_path}/state.json\n"))
    result = run("--config.check", f"--config.file={installed}", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config OK: 2 clouds (prod, lab)\n"
    # The example's jobs_file is the operator's to write: until then, a warning.
    warning = "warning: clouds[0].jobs_file: cannot read /etc/cloudstack-job-exporter/prod-jobs.txt"
    assert result.stderr.startswith(warning) and result.stderr.count("\n") == 1

    missing = tmp_path / "missing"
    installed.write_text(example.replace(state_line, f"state_file: {missing}/state.json\n"))
    result = run("--config.check", f"--config.file={installed}", env=env)
    assert result.returncode == 2
    problem = f"state_file: directory {missing} does not exist"
    assert result.stderr.splitlines()[0] == problem
    assert result.stderr.splitlines()[1].startswith(warning)


# --------------------------------------------------------------------------- flags


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == (
        f"cloudstack-job-exporter {__version__} (python {platform.python_version()})\n"
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--log.level=trace"], "argument --log.level: invalid choice: 'trace'"),
        (["--log.format=xml"], "argument --log.format: invalid choice: 'xml'"),
        (["--web.listen-address=9877"], "'9877' is not HOST:PORT or :PORT"),
        (["--web.listen-address=::1:9877"], "put an IPv6 address in brackets"),
        (["--web.telemetry-path=metrics"], "must be a path starting with /"),
        (["--config.fil=x"], "unrecognized arguments: --config.fil=x"),
        (["--config.file"], "argument --config.file: expected one argument"),
    ],
)
def test_bad_command_line_exits_2_with_one_line(
    args: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("cloudstack-job-exporter: ")
    assert reason in line
    assert line.endswith("(see --help)")


def test_bad_flag_in_a_real_process() -> None:
    result = run("--no-such-flag")
    assert result.returncode == 2
    assert result.stderr == (
        "cloudstack-job-exporter: unrecognized arguments: --no-such-flag (see --help)\n"
    )


def test_help_lists_the_flags_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--config.file",
        "--config.check",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--log.level",
        "--log.format",
        "--version",
    ):
        assert flag in out
    assert "(default: :9877)" in out


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        (":9877", ("", 9877)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:8080", ("localhost", 8080)),
        ("[::1]:9877", ("::1", 9877)),
        ("[::]:9877", ("::", 9877)),
    ],
)
def test_listen_address(address: str, parsed: tuple[str, int]) -> None:
    assert parse_listen_address(address) == (parsed[0] or None, parsed[1])
    options = Options(listen_address=address)
    assert (options.listen_host, options.listen_port) == parsed


@pytest.mark.parametrize(
    "address", ["9877", "::1:9877", "[::1:9877", "[nothost]:80", "host:", "host:65536", "a b:80"]
)
def test_bad_listen_address(address: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(address)


# --------------------------------------------------------------------------- starting


def test_invalid_config_at_start_exits_2_with_log_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "retention: forever\nclouds: []\n")
    result = run(f"--config.file={path}")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert all("level=error" in line and 'msg="invalid configuration"' in line for line in lines)
    assert 'problem="clouds: must list at least one CloudStack endpoint"' in lines[1]
    assert "Traceback" not in result.stderr


def test_invalid_config_at_start_in_json(tmp_path: Path) -> None:
    path = write(tmp_path, "clouds: []\n")
    result = run(f"--config.file={path}", "--log.format=json")
    assert result.returncode == 2
    assert '"problem": "clouds: must list at least one CloudStack endpoint"' in result.stderr


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stands in for exporter.service, so these tests check the wiring only."""
    calls = types.SimpleNamespace(config=None, options=None, outcome=0)
    module = types.ModuleType("exporter.service")

    async def run(config: object, options: object) -> int:
        calls.config, calls.options = config, options
        if isinstance(calls.outcome, BaseException):
            raise calls.outcome
        return int(calls.outcome)

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exporter.service", module)
    monkeypatch.setattr(exporter, "service", module, raising=False)
    return calls


def test_start_passes_config_and_options_to_the_service(
    tmp_path: Path,
    fake_service: types.SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CJE_API_KEY", "key-from-env")
    path = write(tmp_path, VALID)
    fake_service.outcome = 0
    code = main(
        [
            f"--config.file={path}",
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path=/custom",
            "--web.config.file=/etc/web.yml",
            "--log.level=debug",
            "--log.format=json",
        ]
    )
    assert code == 0
    assert fake_service.options == Options(
        config_file=path,
        listen_address="127.0.0.1:0",
        telemetry_path="/custom",
        web_config_file="/etc/web.yml",
        log_level="debug",
        log_format="json",
    )
    assert fake_service.config.clouds[0].api_key.reveal() == "key-from-env"
    # The credentials are now masked in every log line.
    logging.getLogger("exporter.test").info(f"leak {SECRET} key-from-env")
    err = capsys.readouterr().err
    assert SECRET not in err and "key-from-env" not in err
    assert '"msg": "starting"' in err


def test_defaults_passed_to_the_service(
    tmp_path: Path, fake_service: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJE_API_KEY", "k")
    write(tmp_path, VALID)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert fake_service.options == Options(
        config_file="config.yaml",
        listen_address=":9877",
        telemetry_path="/metrics",
        web_config_file=None,
        log_level="info",
        log_format="logfmt",
    )


def test_service_exit_code_is_returned(
    tmp_path: Path, fake_service: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJE_API_KEY", "k")
    fake_service.outcome = 1
    assert main([f"--config.file={write(tmp_path, VALID)}"]) == 1


def test_interrupt_exits_quietly(
    tmp_path: Path,
    fake_service: types.SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CJE_API_KEY", "k")
    fake_service.outcome = KeyboardInterrupt()
    assert main([f"--config.file={write(tmp_path, VALID)}"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert 'msg="interrupted; exiting"' in err


def test_crash_is_one_log_line_and_exit_1(
    tmp_path: Path,
    fake_service: types.SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CJE_API_KEY", "k")
    fake_service.outcome = RuntimeError(f"boom with {SECRET}")
    assert main([f"--config.file={write(tmp_path, VALID)}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and SECRET not in err
    (line,) = [line for line in err.splitlines() if "exporter failed" in line]
    assert 'exc="RuntimeError: boom with ***"' in line
