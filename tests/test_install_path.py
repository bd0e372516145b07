"""The install paths as a new user follows them: the README's install section, the compose
stack kept on loopback, and the Kubernetes image that the kustomization sets."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from binaries import missing

import exporter

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/kubernetes"
# The kustomizations an operator applies, each of which renders the exporter's Deployment.
APPLIED = [K8S, K8S / "per-cloud/prod"]
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_readme_install_section_avoids_the_system_python() -> None:
    install = readme_section("Install")
    assert "pipx install cloudstack-job-exporter" in install
    assert re.search(r"(?m)^pipx install \.\s", install), "pipx install from a checkout"
    assert "python3 -m venv" in install and "externally-managed-environment" in install
    assert "~/.local/bin" in install
    # Nothing tells the reader to pip install into the interpreter it happens to have.
    running = readme_section("Running it")
    assert "pip install" not in running
    assert "[Install](#install)" in (ROOT / "README.md").read_text()


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host address or None, the rest) of each port the service publishes, in both syntaxes."""
    ports: list[tuple[str | None, str]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((entry.get("host_ip"), f"{entry.get('published')}:{entry['target']}"))
            continue
        text = str(entry)
        if text.startswith("["):  # "[::1]:9090:9090"
            host, _, rest = text[1:].partition("]:")
            ports.append((host, rest))
        elif text.count(":") >= 2:  # "127.0.0.1:9090:9090"
            host, _, rest = text.partition(":")
            ports.append((host, rest))
        else:  # "9090:9090" or "9090": every interface
            ports.append((None, text))
    return ports


def test_compose_publishes_every_port_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    seen = {}
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for host, rest in published_ports(service):
            assert host in LOOPBACK, f"{name} publishes {rest} on every interface"
            seen[name] = rest
    # The ones that must not be reachable from the network: known keys, no auth, anonymous.
    assert {"simulator", "prometheus", "grafana"} <= set(seen), seen


def test_published_ports_parser_sees_an_open_port() -> None:
    open_service = {"ports": ["9090:9090", {"target": 3000, "published": 3000}, "8080"]}
    assert all(host is None for host, _ in published_ports(open_service))
    assert published_ports({"ports": ["[::1]:9090:9090"]}) == [("::1", "9090:9090")]


def deployment_image() -> str:
    deployment = yaml.safe_load((K8S / "app/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


@pytest.mark.parametrize("kustomization", APPLIED, ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_kustomization_sets_the_image(kustomization: Path) -> None:
    doc = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
    (entry,) = doc["images"]
    # The entry applies only when its name is the Deployment's image without its tag.
    assert entry["name"] == deployment_image().rsplit(":", 1)[0]
    assert {"newName", "newTag"} <= set(entry)
    # A release tags the image with the package's version.
    assert entry["newTag"] == exporter.__version__


@pytest.mark.parametrize("kustomization", APPLIED, ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_kustomize_renders_the_image_set_in_images(kustomization: Path, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl is not installed (it renders kustomizations offline)")
        return
    # What an operator does after pushing an image: point `images:` at it.
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    target = copy / kustomization.relative_to(K8S) / "kustomization.yaml"
    doc = yaml.safe_load(target.read_text())
    doc["images"][0].update(newName="registry.example.com/team/cloudstack-job-exporter")
    doc["images"][0].update(newTag="9.9.9")
    target.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [kubectl, "kustomize", str(target.parent)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    images = [
        c["image"]
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images == ["registry.example.com/team/cloudstack-job-exporter:9.9.9"]


def test_deploy_readme_says_how_to_build_and_push_the_image() -> None:
    text = (ROOT / "deploy/README.md").read_text()
    assert "docker build -f deploy/docker/Dockerfile" in text
    assert "docker push" in text and "images:" in text and "kustomize edit set image" in text
