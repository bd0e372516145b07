"""The state file: round trip, atomic replacement, unusable files set aside."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from factories import api_job

from exporter import state
from exporter.jobs import parse_job
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

T0 = 1_776_000_000.0


def tracker_with_jobs() -> JobTracker:
    metrics = ExporterMetrics()
    tracker = JobTracker("prod", metrics.cloud("prod"), retention=3600, max_jobs=100, watermark=T0)
    for job_id, status in (("p", 0), ("f", 2)):
        raw = api_job(
            job_id,
            status,
            cmd="org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
            jobresultcode=530 if status else 0,
            accountid='é ✓ "quoted"',
            jobprocstatus=None,
            jobinstancetype=None,
            jobinstanceid=None,
            userid=None,
        )
        if status:
            raw["completed"] = "2026-04-13T09:52:21+0000"
            raw["jobresult"] = {"errorcode": 530, "errortext": "boom\nline two"}
        tracker.apply(parse_job(raw), T0 + 10)
    return tracker


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "state.json")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    tracker = tracker_with_jobs()
    state.save(str(path), state.build({"prod": tracker.to_state()}, watermark=T0))

    loaded = state.load(str(path))
    assert loaded is not None
    assert loaded["version"] == 1 and loaded["watermark"] == T0

    again = JobTracker(
        "prod", ExporterMetrics().cloud("prod"), retention=3600, max_jobs=100, watermark=T0 + 99
    )
    again.restore(loaded["clouds"]["prod"])
    assert [t.job for t in again.jobs()] == [t.job for t in tracker.jobs()]
    assert [t.labels + t.info_labels for t in again.jobs()] == [
        t.labels + t.info_labels for t in tracker.jobs()
    ]
    assert again.watermark == tracker.watermark
    assert leftovers(tmp_path) == []


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(str(path), {"clouds": {}, "watermark": 1.0})
    state.save(str(path), {"clouds": {"a": {}}, "watermark": 2.0})
    assert json.loads(path.read_text())["watermark"] == 2.0
    assert leftovers(tmp_path) == []

    # A failure while writing leaves the previous file whole and no temp file behind.
    with pytest.raises(TypeError):
        state.save(str(path), {"clouds": {"a": {"bad": object()}}, "watermark": 3.0})
    assert json.loads(path.read_text())["watermark"] == 2.0
    assert leftovers(tmp_path) == []


def test_missing_file_is_a_first_start(tmp_path: Path) -> None:
    assert state.load(str(tmp_path / "nope.json")) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe binary",
        b"[1, 2, 3]",
        b'{"version": 99, "clouds": {}}',
        b'{"version": 1, "clouds": []}',
        b'{"version": 1, "clouds": {}, "watermark": "yesterday"}',
    ],
)
def test_unusable_file_is_set_aside_with_a_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="exporter.state"):
        assert state.load(str(path)) is None
    assert not path.exists()
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith("state.json.corrupt-")
    assert aside.read_bytes() == content
    assert any(
        r.levelno == logging.WARNING and str(aside) in r.getMessage() for r in caplog.records
    )


def test_unreadable_path_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # unreadable as a file even for root
    assert state.load(str(path)) is None
    assert path.is_dir()


def test_two_corrupt_files_in_the_same_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for content in ("first", "second"):
        path.write_text(content)
        assert state.load(str(path)) is None
    kept = sorted(p.read_text() for p in tmp_path.iterdir())
    assert kept == ["first", "second"]
