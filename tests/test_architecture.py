"""The package keeps the layers docs/architecture.md lists: no module imports one above it.

Every import counts: at module level, inside a function, and under TYPE_CHECKING, because
each of them is knowledge of the module above that the layering is meant to keep out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "exporter"
SIMULATOR = ROOT / "cloudstack_simulator"
# What the simulator may take from the exporter: the signing it must verify exactly.
SIMULATOR_MAY_IMPORT = {"exporter.signing"}


def documented_layers() -> dict[str, int]:
    """{"exporter.tracker": 3, ...} from the doc's "- layer N: `a`, `b`" lines."""
    text = DOC.read_text()
    block = text.split("<!-- layers:", 1)[1].split("<!-- end of layers -->", 1)[0]
    layers: dict[str, int] = {}
    for match in re.finditer(r"^- layer (\d+): (.+)$", block, re.M):
        for name in re.findall(r"`([a-z_]+)`", match.group(2)):
            module = "exporter" if name == "exporter" else f"exporter.{name}"
            layers[module] = int(match.group(1))
    return layers


def imported_modules(source: str, package: str = "exporter", importer: str = "") -> set[str]:
    """The modules of `package` that a source imports, anywhere in it.

    `importer` is the importing module's name, to resolve relative imports (`from . import x`);
    every module of `exporter/` sits directly in the package.
    """
    found: set[str] = set()
    top = importer.split(".")[0]  # the package every module here sits directly in
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and top:
                module = f"{top}.{module}" if module else top
            elif node.level:
                continue  # above the top-level package: Python refuses it anyway
            if not module:
                continue
            found.add(module)
            # `from exporter import state` imports the module exporter.state
            found |= {f"{module}.{a.name}" for a in node.names}
    return {m for m in found if m == package or m.startswith(package + ".")}


def broken_edges(module: str, source: str, layers: dict[str, int]) -> list[str]:
    """One message for each import of `module` that reaches a higher layer."""
    own = layers[module]
    path = module.replace(".", "/") + ".py"
    problems = []
    for target in sorted(imported_modules(source, importer=module)):
        if target not in layers:
            continue  # a name imported from a module (`from exporter.x import f`), not a module
        if layers[target] > own:
            short, other = module.split(".")[-1], target.split(".")[-1]
            problems.append(
                f"{path} imports {target}: {short} (layer {own}) is below "
                f"{other} (layer {layers[target]})"
            )
    return problems


def modules_of_the_package() -> dict[str, str]:
    return {
        ("exporter" if p.stem == "__init__" else f"exporter.{p.stem}"): p.read_text()
        for p in sorted(PACKAGE.glob("*.py"))
    }


def test_every_module_is_in_a_documented_layer() -> None:
    layers = documented_layers()
    missing = sorted(set(modules_of_the_package()) - set(layers))
    assert not missing, f"docs/architecture.md lists no layer for {', '.join(missing)}"
    gone = sorted(set(layers) - set(modules_of_the_package()))
    assert not gone, f"docs/architecture.md lists modules that do not exist: {', '.join(gone)}"


def test_no_module_imports_one_above_it() -> None:
    layers = documented_layers()
    problems = [
        problem
        for module, source in modules_of_the_package().items()
        for problem in broken_edges(module, source, layers)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        # The two back-edges this layering removed: they must be caught however written.
        (
            "exporter.tracker",
            "from exporter.rendering import escape_label_value\n",
            "exporter/tracker.py imports exporter.rendering: tracker (layer 3) is below "
            "rendering (layer 4)",
        ),
        (
            "exporter.service",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from exporter.cli import Options\n",
            "exporter/service.py imports exporter.cli: service (layer 6) is below cli (layer 7)",
        ),
        (
            "exporter.service",
            "def reload():\n    from exporter import cli\n",
            "exporter/service.py imports exporter.cli: service (layer 6) is below cli (layer 7)",
        ),
        (
            "exporter.service",
            "from . import cli\n",
            "exporter/service.py imports exporter.cli: service (layer 6) is below cli (layer 7)",
        ),
        (
            "exporter.tracker",
            "def render():\n    from .rendering import escape_label_value\n",
            "exporter/tracker.py imports exporter.rendering: tracker (layer 3) is below "
            "rendering (layer 4)",
        ),
    ],
)
def test_a_back_edge_is_named(module: str, source: str, message: str) -> None:
    assert broken_edges(module, source, documented_layers()) == [message]


def test_an_import_of_a_lower_layer_passes() -> None:
    source = "from exporter.labels import escape_label_value\nimport exporter.jobs\n"
    assert broken_edges("exporter.tracker", source, documented_layers()) == []


def test_the_exporter_never_imports_the_simulator_or_the_demo() -> None:
    for module, source in modules_of_the_package().items():
        for other in ("cloudstack_simulator", "demo"):
            assert not imported_modules(source, other, module), f"{module} imports {other}"


def test_the_simulator_takes_only_signing_from_the_exporter() -> None:
    """Exactly the documented allow-list: nothing more, and the list names no stale entry."""
    taken: dict[str, set[str]] = {}
    for path in sorted(SIMULATOR.glob("*.py")):
        for target in imported_modules(path.read_text(), importer="cloudstack_simulator"):
            # `from exporter.signing import signature` also yields "exporter.signing.signature"
            if not any(target.startswith(a + ".") for a in SIMULATOR_MAY_IMPORT):
                taken.setdefault(target, set()).add(f"cloudstack_simulator/{path.name}")
    extra = {m: sorted(files) for m, files in taken.items() if m not in SIMULATOR_MAY_IMPORT}
    assert not extra, f"the simulator imports more of the exporter than documented: {extra}"
    assert set(taken) == SIMULATOR_MAY_IMPORT, f"allow-list entries no longer used: {taken}"
    doc = DOC.read_text()
    for module in SIMULATOR_MAY_IMPORT:
        assert f"`{module}`" in doc, f"docs/architecture.md does not list {module}"


def test_version_and_config_check_do_not_load_the_web_stack(tmp_path: Path) -> None:
    """`--version` and `--config.check` stay quick: no aiohttp, no bcrypt (about 0.4 s)."""
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text(
        "clouds:\n  - name: a\n    url: http://127.0.0.1:1/client/api\n"
        "    api_key: k\n    secret_key: s\n"
    )
    probe = (
        "import sys\n"
        "from exporter.cli import main\n"
        "for argv in (['--version'], ['--config.check', '--config.file', sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('aiohttp', 'bcrypt', 'prometheus_client') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "config OK" in run.stdout, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
