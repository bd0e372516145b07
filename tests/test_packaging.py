"""The release as a user gets it: the sdist and wheel that `python -m build` makes, checked with
twine, installed into a clean virtual environment and run from there; the systemd unit verified
against the binary that install creates.

Built once per run, in a temporary directory. Marked `packaging`: `pytest -m "not packaging"`
leaves it out locally; `make test` runs it. pip installs from the configured indexes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import pytest
import yaml
from binaries import require

import exporter

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy/systemd/cloudstack-job-exporter.service"
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
PACKAGES = {"exporter", "cloudstack_simulator"}


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 600)
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return env | extra


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    venv: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def build(source: Path, outdir: Path, *flags: str) -> None:
    ok(run(sys.executable, "-m", "build", *flags, "--outdir", outdir, source, env=clean_env()))


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    outdir = tmp_path_factory.mktemp("dist")
    # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist,
    # so the wheel also proves the sdist holds everything a build needs.
    build(ROOT, outdir)
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="session")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    ok(run(sys.executable, "-m", "venv", venv, env=clean_env()))
    pip = venv / "bin/pip"
    ok(run(pip, "install", "--quiet", dist.wheel, env=clean_env()))
    return Installed(venv)


def wheel_metadata(dist: Dist) -> tuple[list[str], dict[str, list[str]]]:
    with zipfile.ZipFile(dist.wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(z.read(meta).decode())
    fields: dict[str, list[str]] = {}
    for key, value in headers.items():
        fields.setdefault(key, []).append(value)
    return names, fields


def test_artifacts_pass_twine_check(dist: Dist) -> None:
    twine = require("twine")
    out = ok(run(twine, "check", "--strict", dist.sdist, dist.wheel))
    assert out.count("PASSED") == 2, out
    # --strict fails on warnings, such as a long description without its content type.
    _, fields = wheel_metadata(dist)
    assert fields["Description-Content-Type"] == ["text/markdown"]


def test_wheel_holds_the_two_packages_typed_and_nothing_else(dist: Dist) -> None:
    names, fields = wheel_metadata(dist)
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == PACKAGES, tops  # no tests/, demo/, benchmarks/, deploy/
    for package in PACKAGES:
        assert f"{package}/py.typed" in names
        shipped = {n for n in names if n.startswith(f"{package}/") and n.endswith(".py")}
        source = {f"{package}/{p.name}" for p in (ROOT / package).glob("*.py")}
        assert shipped == source, package
    # The simulator's manual travels with its command.
    assert "cloudstack_simulator/README.md" in names
    assert "Typing :: Typed" in fields["Classifier"]
    assert fields["License-Expression"] == ["Apache-2.0"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(dist.wheel) as z:
        scripts = z.read(entry_points).decode()
    assert "cloudstack-job-exporter = exporter.cli:main" in scripts
    assert "cloudstack-simulator = cloudstack_simulator.__main__:main" in scripts


def test_sdist_holds_the_sources_but_no_tests(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "LICENSE", "config.example.yaml"} <= names
    assert {"exporter/py.typed", "cloudstack_simulator/py.typed", "exporter/cli.py"} <= names
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"tests", "demo", "benchmarks", "deploy", ".ci", "docs"}, tops


def test_version_is_one_value_everywhere(dist: Dist, installed: Installed) -> None:
    version = exporter.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([a-z]+\d+)?", version), version
    assert dist.wheel.name.startswith(f"cloudstack_job_exporter-{version}-")
    assert dist.sdist.name == f"cloudstack_job_exporter-{version}.tar.gz"
    out = ok(run(installed.bin("cloudstack-job-exporter"), "--version", env=clean_env()))
    assert out.startswith(f"cloudstack-job-exporter {version} "), out
    metadata = ok(
        run(
            installed.bin("python"),
            "-c",
            "import importlib.metadata as m, exporter; "
            "print(m.version('cloudstack-job-exporter'), exporter.__version__, exporter.__file__)",
            cwd="/",
            env=clean_env(),
        )
    ).split()
    assert metadata[:2] == [version, version]
    # The package answering is the installed wheel, not this checkout.
    assert metadata[2].startswith(str(installed.venv)), metadata[2]


def test_clean_install_has_no_test_extras(installed: Installed) -> None:
    ok(run(installed.bin("pip"), "check", env=clean_env()))
    frozen = ok(run(installed.bin("pip"), "freeze", "--all", env=clean_env()))
    names = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in frozen.split()}
    assert not names & {"pytest", "hypothesis", "selenium", "ruff", "mypy", "twine", "cs"}, names
    runtime = {"aiohttp", "prometheus-client", "pyyaml", "aio-pika", "cloudstack-job-exporter"}
    assert runtime <= names


def test_installed_exporter_checks_the_example_configuration(
    installed: Installed, tmp_path: Path
) -> None:
    text = (ROOT / "config.example.yaml").read_text()
    # The example's absolute paths exist where it is deployed; here they live in tmp_path.
    for prefix in (
        "/etc/cloudstack-job-exporter/",
        "/var/lib/cloudstack-job-exporter/",
        "/run/secrets/",
    ):
        text = text.replace(prefix, f"{tmp_path}/")
    config = yaml.safe_load(text)
    for cloud in config["clouds"]:
        for key, value in cloud.items():
            if key.endswith("_file"):
                Path(value).write_text("not-a-real-secret\n" if key != "jobs_file" else "")
    (tmp_path / "config.yaml").write_text(text)
    variables = set(re.findall(r"\$\{(\w+)\}", re.sub(r"(?m)#.*$", "", text)))
    assert variables >= {"CLOUDSTACK_API_KEY", "CLOUDSTACK_SECRET_KEY"}
    exe = installed.bin("cloudstack-job-exporter")
    args = (exe, "--config.check", "--config.file", tmp_path / "config.yaml")
    env = clean_env(**{v: f"value-of-{v.lower()}" for v in variables})
    result = run(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 clouds (prod, lab)" in result.stdout + result.stderr
    # And the same check does refuse the example without its variables.
    missing = next(iter(sorted(variables)))
    result = run(*args, cwd=tmp_path, env={k: v for k, v in env.items() if k != missing})
    assert result.returncode == 2 and missing in result.stdout + result.stderr


def test_installed_simulator_runs(installed: Installed) -> None:
    out = ok(run(installed.bin("cloudstack-simulator"), "--help", cwd="/", env=clean_env()))
    assert out.startswith("usage: cloudstack-simulator") and "--listen" in out


def unit_binary() -> str:
    (binary,) = set(re.findall(r"(?m)^ExecStart(?:Pre)?=(\S+)", UNIT.read_text()))
    return binary


def test_systemd_unit_runs_what_the_documented_install_creates() -> None:
    binary = unit_binary()
    prefix, sep, _ = binary.rpartition("/bin/")
    assert sep and binary.endswith("/bin/cloudstack-job-exporter"), binary
    readme = (ROOT / "README.md").read_text()
    # The install the README documents is the one the fixture above makes: venv, pip install.
    assert f"python3 -m venv {prefix}\n" in readme
    assert f"{prefix}/bin/pip install cloudstack-job-exporter" in readme


def test_systemd_unit_verifies_against_the_installed_binary(
    installed: Installed, tmp_path: Path
) -> None:
    analyze = require("systemd-analyze")
    unit = tmp_path / UNIT.name
    binary = unit_binary()
    unit.write_text(UNIT.read_text().replace(binary, str(installed.bin(binary.rsplit("/", 1)[1]))))
    result = run(analyze, "verify", unit, env=clean_env())
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # The unit as shipped, on a machine without that install: verification says so.
    missing = tmp_path / "missing" / UNIT.name
    missing.parent.mkdir()
    shutil.copy(UNIT, missing)
    if not Path(binary).exists():
        result = run(analyze, "verify", missing, env=clean_env())
        assert result.returncode != 0 and f"{binary} is not executable" in result.stderr


def test_image_build_stage_builds_both_packages(dist: Dist, tmp_path: Path) -> None:
    """The Dockerfile's build stage, rehearsed without Docker: the files its COPY lines take
    (and its .dockerignore lets through) build a wheel holding every package of the release."""
    build_stage = DOCKERFILE.read_text().split("\nFROM ")[1]
    copied: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied += line.split()[1:-1]
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    context = tmp_path / "context"
    context.mkdir()
    for source in copied:
        assert source in allowed, f"{source} is copied but left out of the build context"
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, context / source)
    build(context, tmp_path / "out", "--wheel")
    (wheel,) = (tmp_path / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as image, zipfile.ZipFile(dist.wheel) as release:
        assert sorted(image.namelist()) == sorted(release.namelist())
