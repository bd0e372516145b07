"""The state file survives kill -9 at any moment: it is always the newest complete version or
the one before it, never a torn one, and what an interrupted write left behind is cleaned up."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
from pathlib import Path

from exporter_harness import Metrics, cloud_yaml, write_config
from exporter_process import ROOT, ExporterProcess
from simulator_fixtures import SimHandle

from exporter import state

pytest_plugins = ["simulator_fixtures"]

# A child that saves generation after generation of a large document, saying when each
# save starts and when it has returned.
WRITER = textwrap.dedent(
    """
    import os
    import sys
    from exporter import state
    from exporter.selfmetrics import ExporterMetrics  # what the daemon has imported, too

    path, first = sys.argv[1], int(sys.argv[2])
    jobs = [{"id": f"job-{i:06d}", "pad": "x" * 200} for i in range(8000)]
    gen = first
    while True:
        # One write(2) a record: print() under PYTHONUNBUFFERED=1 writes the line in pieces,
        # and a kill between them leaves half a line.
        os.write(1, b"start %d\\n" % gen)
        state.save(path, state.build({"a": {"gen": gen, "jobs": jobs}}, float(gen)))
        os.write(1, b"done %d\\n" % gen)
        gen += 1
    """
)


def expected(gen: int) -> dict:
    jobs = [{"id": f"job-{i:06d}", "pad": "x" * 200} for i in range(8000)]
    return state.build({"a": {"gen": gen, "jobs": jobs}}, float(gen))


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


async def test_kill_during_save_leaves_the_newest_or_the_previous_complete_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    rng = random.Random(5)
    gen = 1
    interrupted = 0
    for _ in range(15):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), str(gen),
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert child.stdout is not None
        started = done = gen - 1
        # Let it finish one save, then kill it somewhere in the following ones.
        while done < gen:
            kind, number = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
            if kind == b"done":
                done = int(number)
        await asyncio.sleep(rng.uniform(0.0, 0.25))
        child.kill()
        for line in (await child.stdout.read()).splitlines():
            kind, number = line.split()
            if kind == b"start":
                started = int(number)
            else:
                done = int(number)
        await child.wait()

        saved = json.loads(path.read_text())
        state.validate(saved)
        # Only the save under way can have replaced the last complete one.
        assert saved["clouds"]["a"]["gen"] in (done, started)
        assert saved == expected(saved["clouds"]["a"]["gen"])
        interrupted += bool(temp_files(tmp_path))
        gen = started + 1

        # The next start reads it, and clears an interrupted save's leftovers.
        assert state.load(str(path)) == saved
        assert temp_files(tmp_path) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    # The kills did land in the middle of writes, not only between them.
    assert interrupted >= 1


async def test_daemon_killed_repeatedly_restarts_from_a_complete_state(
    simulator: SimHandle, tmp_path: Path
) -> None:
    """`kill -9` of the real command, again and again, while it polls a busy cloud and saves its
    state after every cycle; each restart finds a complete file and sets nothing aside."""
    path = tmp_path / "state.json"
    await simulator.workload(rate=20, seed=4, prefill=2000)
    config = write_config(
        tmp_path / "config.yaml",
        [cloud_yaml("a", simulator)],
        top=f"state_file: {path}\nretention: 1h\n",
    )
    config.write_text(config.read_text().replace("poll_interval: 1h", "poll_interval: 1s"))
    log = tmp_path / "exporter.log"
    rng = random.Random(9)
    watermarks: list[float] = []
    for _ in range(10):
        daemon = ExporterProcess(config, log)
        try:
            await daemon.start()
            if watermarks:
                # The restart found what the killed process saved: the jobs it knew are shown.
                text = await daemon.until(lambda _, t: bool(Metrics(t).job_ids("a")))
                assert len(Metrics(text).job_ids("a")) >= 2000
            await asyncio.sleep(rng.uniform(0.2, 1.5))
        finally:
            await daemon.kill()
        saved = json.loads(path.read_text())
        state.validate(saved)
        assert set(saved["clouds"]) == {"a"}
        watermarks.append(saved["watermark"])
    assert watermarks == sorted(watermarks)  # never an older file than one seen before
    text = log.read_text()
    assert "unusable" not in text and "Traceback" not in text
    assert not [p for p in tmp_path.iterdir() if ".corrupt" in p.name]
