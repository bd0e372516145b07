"""The load benchmark keeps working: its smoke mode runs end to end and passes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_load_benchmark_smoke_run_passes_and_reports_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    scrapes = re.search(r"^scrapes\s+(\d+)", out, re.MULTILINE)
    assert scrapes is not None and int(scrapes.group(1)) > 0
    assert re.search(r"^scrape latency\s+p50 [\d.]+ ms, p95 [\d.]+ ms, max [\d.]+ ms", out, re.M)
    assert re.search(r"^scrape errors\s+0$", out, re.MULTILINE)
    cycles = re.search(r"^poll cycles\s+expected (\d+), done (\d+), missed 0", out, re.MULTILINE)
    assert cycles is not None and int(cycles.group(2)) >= 1
    assert out.rstrip().endswith("result           ok")


def test_load_benchmark_refuses_bad_flags() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--scrapers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "--scrapers" in done.stderr and "Traceback" not in done.stderr


def test_a_missed_poll_cycle_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("load", ROOT / "benchmarks" / "load.py")
    assert spec is not None and spec.loader is not None
    load = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "load", load)  # dataclasses look their module up there
    spec.loader.exec_module(load)
    args = load.parse_args(["--duration", "30", "--poll-interval", "5"])
    log = tmp_path / "exporter.log"
    log.write_text("")

    def verdict(polls: list[float]) -> int:
        figures = load.Figures(latencies=[0.01], polls=set(polls))
        return int(load.report(args, figures, 30.0, 1000.0, 1030.0, {}, 1, True, 1.0, 1.0, log))

    on_time = [998.0, 1003.0, 1008.1, 1013.0, 1018.2, 1023.0, 1028.0]
    assert verdict(on_time) == 0
    assert verdict([t for t in on_time if t != 1013.0]) == 1  # one slot without a poll
    assert verdict(on_time[:-2]) == 1  # polling stopped before the end
