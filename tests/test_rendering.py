"""The /metrics bytes: values, escaping, both exposition formats, gzip, promtool."""

from __future__ import annotations

import gzip
import subprocess
from typing import Any

import pytest
from binaries import require
from factories import api_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.jobs import parse_job
from exporter.rendering import PER_JOB_FAMILIES, Renderer
from exporter.selfmetrics import ExporterMetrics
from exporter.tracker import JobTracker

T0 = 1_776_000_000.0
NOW = T0 + 100.5  # time of the last poll
PER_JOB = {name for name, _ in PER_JOB_FAMILIES}
HOSTILE = (
    'quote " backslash \\ newline \n tab \t unicode é ✓ 日本 \\n literal } { = , percent %s %% %.3f'
)


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def raw_job(job_id: str, status: int = 0, **fields: Any) -> dict[str, Any]:
    return api_job(job_id, status, **{"created": iso(T0), **fields})


class Setup:
    def __init__(self, per_job_series: bool = True) -> None:
        self.metrics = ExporterMetrics()
        self.trackers: dict[str, JobTracker] = {}
        self.renderer = Renderer(self.metrics, lambda: self.trackers, per_job_series)

    def tracker(self, cloud: str) -> JobTracker:
        if cloud not in self.trackers:
            self.trackers[cloud] = JobTracker(
                cloud, self.metrics.cloud(cloud), retention=3600, max_jobs=1000, watermark=T0
            )
        return self.trackers[cloud]

    def add(self, cloud: str, raw: dict[str, Any], now: float = NOW) -> None:
        self.tracker(cloud).apply(parse_job(raw), now)

    def text(self) -> str:
        return self.renderer.body(openmetrics=False, gzip=False).decode("utf-8")

    def openmetrics(self) -> str:
        return self.renderer.body(openmetrics=True, gzip=False).decode("utf-8")


def samples(text: str, openmetrics: bool = False) -> dict[str, list[Any]]:
    """Every sample, by sample name (histogram parts under their own names)."""
    parse = parse_openmetrics if openmetrics else parse_text
    out: dict[str, list[Any]] = {}
    for family in parse(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def one(found: dict[str, list[Any]], name: str, **labels: str) -> float:
    hits = [s for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return float(hits[0].value)


@pytest.fixture
def setup() -> Setup:
    s = Setup()
    s.add("prod", raw_job("pending-1", jobprocstatus=4, managementserverid="ms-1"))
    s.add(
        "prod",
        raw_job(
            "failed-1",
            2,
            jobresultcode=530,
            jobresulttype="object",
            jobresult={"errorcode": 530, "errortext": "x" * 300},
            completed=iso(T0 + 42),
        ),
    )
    s.add(
        "lab",
        raw_job(
            "ok-1",
            1,
            cmd="org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd",
            jobinstancetype="Volume",
            jobresulttype="object",
            jobresult={"volume": {}},
            completed=iso(T0 + 7),
        ),
    )
    s.renderer.render()
    return s


def test_per_job_values_equal_the_jobs_given(setup: Setup) -> None:
    found = samples(setup.text())
    pending = {"cloud": "prod", "job_id": "pending-1", "cmd": "StartVMCmd"}
    failed = {"cloud": "prod", "job_id": "failed-1", "instance_type": "VirtualMachine"}
    ok = {"cloud": "lab", "job_id": "ok-1", "cmd": "CreateVolumeCmd", "instance_type": "Volume"}

    assert one(found, "cloudstack_async_job_status", **pending) == 0
    assert one(found, "cloudstack_async_job_status", **failed) == 2
    assert one(found, "cloudstack_async_job_status", **ok) == 1
    assert one(found, "cloudstack_async_job_result_code", **failed) == 530
    assert one(found, "cloudstack_async_job_result_code", **ok) == 0
    assert one(found, "cloudstack_async_job_proc_status", **pending) == 4
    assert one(found, "cloudstack_async_job_age_seconds", **pending) == pytest.approx(100.5)
    assert one(found, "cloudstack_async_job_created_timestamp_seconds", **ok) == T0
    assert one(found, "cloudstack_async_job_completed_timestamp_seconds", **ok) == T0 + 7
    assert one(found, "cloudstack_async_job_completed_timestamp_seconds", **failed) == T0 + 42
    completed_ids = {
        s.labels["job_id"] for s in found["cloudstack_async_job_completed_timestamp_seconds"]
    }
    assert completed_ids == {"failed-1", "ok-1"}  # never for a pending job

    info = [s for s in found["cloudstack_async_job_info"] if s.labels["job_id"] == "failed-1"]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels == {
        "cloud": "prod",
        "job_id": "failed-1",
        "cmd": "StartVMCmd",
        "cmd_class": "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin",
        "instance_type": "VirtualMachine",
        "instance_id": "vm-failed-1",
        "account_id": "acct-1",
        "user_id": "user-1",
        "result_type": "object",
        "error": "x" * 256,
        "result_object": "",
        "account": "",
        "domain_id": "",
        "domain_path": "",
        "management_server_id": "",
        "management_server_name": "",
    }
    (ok_info,) = [s for s in found["cloudstack_async_job_info"] if s.labels["job_id"] == "ok-1"]
    assert ok_info.labels["result_object"] == "volume"


def test_aggregates(setup: Setup) -> None:
    found = samples(setup.text())
    jobs = {
        (s.labels["cloud"], s.labels["cmd"], s.labels["status"]): s.value
        for s in found["cloudstack_async_jobs"]
    }
    assert jobs == {
        ("prod", "StartVMCmd", "pending"): 1,
        ("prod", "StartVMCmd", "succeeded"): 0,
        ("prod", "StartVMCmd", "failed"): 1,
        ("prod", "StartVMCmd", "cancelled"): 0,
        ("lab", "CreateVolumeCmd", "pending"): 0,
        ("lab", "CreateVolumeCmd", "succeeded"): 1,
        ("lab", "CreateVolumeCmd", "failed"): 0,
        ("lab", "CreateVolumeCmd", "cancelled"): 0,
    }
    oldest = found["cloudstack_async_jobs_oldest_pending_age_seconds"]
    assert [(s.labels, s.value) for s in oldest] == [
        ({"cloud": "prod", "cmd": "StartVMCmd"}, 100.5)  # none for lab: nothing pending
    ]
    assert (
        one(
            found,
            "cloudstack_async_jobs_pending_by_management_server",
            cloud="prod",
            management_server_id="ms-1",
        )
        == 1
    )
    assert (
        one(
            found,
            "cloudstack_async_jobs_oldest_pending_age_by_management_server_seconds",
            cloud="prod",
            management_server_id="ms-1",
        )
        == 100.5
    )
    assert one(found, "cloudstack_exporter_tracked_jobs", cloud="prod") == 2
    assert one(found, "cloudstack_exporter_tracked_jobs", cloud="lab") == 1
    # Both finishes completed after the watermark: counted, durations observed.
    assert (
        one(
            found,
            "cloudstack_async_job_duration_seconds_sum",
            cloud="lab",
            cmd="CreateVolumeCmd",
            status="succeeded",
        )
        == 7
    )


def test_each_family_appears_once_and_contiguous_with_several_clouds(setup: Setup) -> None:
    text = setup.text()
    names: list[str] = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# TYPE") else None
        if name:
            names.append(name)
    assert len(names) == len(set(names))
    assert set(names) >= PER_JOB
    # Contiguity: every sample line belongs to the family whose TYPE line came last (and
    # TYPE lines are unique), so no family's samples are split.
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            assert name == current or (
                name.startswith(current + "_") and name[len(current) :] in HISTOGRAM_SUFFIXES
            ), (name, current)


HISTOGRAM_SUFFIXES = {"_bucket", "_sum", "_count"}


def test_text_format_has_no_created_series_and_openmetrics_does(setup: Setup) -> None:
    setup.metrics.cloud("prod").api_request("listAsyncJobs", "200", 0.05)
    setup.renderer.render()
    assert "_created" not in setup.text().replace("created_timestamp_seconds", "")
    assert "cloudstack_api_requests_created" in setup.openmetrics()


def test_openmetrics_parses_and_ends_with_a_single_eof(setup: Setup) -> None:
    setup.metrics.cloud("prod").api_request("listAsyncJobs", "200", 0.05)
    setup.renderer.render()
    text = setup.openmetrics()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert "# TYPE cloudstack_api_requests counter" in text  # no _total in the TYPE line
    found = samples(text, openmetrics=True)
    assert one(found, "cloudstack_api_requests_total", cloud="prod", code="200") == 1
    assert one(found, "cloudstack_async_job_status", job_id="failed-1") == 2
    assert len(found["cloudstack_async_job_info"]) == 3


def test_hostile_label_values_survive_both_formats() -> None:
    s = Setup()
    s.add(
        'we"ird\\cloud\n',
        raw_job(
            'id "with" \\ and \n',
            2,
            cmd='org.example."Quoted\\Cmd"\nByAdmin',
            jobinstancetype=HOSTILE,
            jobresult={"errorcode": 530, "errortext": HOSTILE},
            jobresultcode=530,
            completed=iso(T0 + 1),
            accountid="\ud800 lone surrogate",
        ),
    )
    s.renderer.render()
    for text, om in ((s.text(), False), (s.openmetrics(), True)):
        found = samples(text, openmetrics=om)
        (info,) = found["cloudstack_async_job_info"]
        assert info.labels["cloud"] == 'we"ird\\cloud\n'
        assert info.labels["job_id"] == 'id "with" \\ and \n'
        assert info.labels["cmd_class"] == 'org.example."Quoted\\Cmd"\nByAdmin'
        assert info.labels["instance_type"] == HOSTILE
        assert info.labels["error"] == HOSTILE
        assert info.labels["account_id"] == "? lone surrogate"  # not valid UTF-8: replaced


def test_hand_rendered_families_match_prometheus_client(setup: Setup) -> None:
    """The same samples written by prometheus_client parse to the same values."""
    hostile = Setup()
    hostile.add("c", raw_job(HOSTILE, jobinstancetype=HOSTILE))
    hostile.renderer.render()
    for s in (setup, hostile):
        ours = {k: v for k, v in samples(s.text()).items() if k in PER_JOB}

        theirs = samples(generate_latest(Equivalent(ours)).decode())  # type: ignore[arg-type]
        assert normalized(theirs) == normalized(ours)


class Equivalent:
    """prometheus_client's own rendering of the given samples."""

    def __init__(self, found: dict[str, list[Any]]) -> None:
        self.found = found

    def collect(self) -> list[GaugeMetricFamily]:
        families = []
        for name, samples_ in self.found.items():
            labels = sorted({k for x in samples_ for k in x.labels})
            family = GaugeMetricFamily(name, "same", labels=labels)
            for x in samples_:
                family.add_metric([x.labels[k] for k in labels], x.value)
            families.append(family)
        return families


def normalized(found: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {
        name: sorted((sorted(x.labels.items()), float(x.value)) for x in samples_)
        for name, samples_ in found.items()
    }


def test_gzip_variants_decode_to_the_plain_ones(setup: Setup) -> None:
    for om in (False, True):
        plain = setup.renderer.body(openmetrics=om, gzip=False)
        packed = setup.renderer.body(openmetrics=om, gzip=True)
        assert packed[:2] == b"\x1f\x8b"
        assert gzip.decompress(packed) == plain


def test_per_job_series_off_keeps_only_the_aggregates(setup: Setup) -> None:
    setup.renderer.per_job_series = False
    setup.renderer.render()
    for text, om in ((setup.text(), False), (setup.openmetrics(), True)):
        names = set(samples(text, openmetrics=om))
        assert not names & PER_JOB
        assert "cloudstack_async_jobs" in names


def test_bodies_are_cached_until_the_next_render(setup: Setup) -> None:
    first = setup.renderer.body(openmetrics=True, gzip=True)
    setup.add("prod", raw_job("late"))
    assert setup.renderer.body(openmetrics=True, gzip=True) is first  # no walk of the table
    assert setup.renderer.changed()
    setup.renderer.render()
    assert not setup.renderer.changed()
    assert 'job_id="late"' in setup.text()


async def test_render_async_builds_off_the_loop(setup: Setup) -> None:
    setup.add("prod", raw_job("async-1"))
    await setup.renderer.render_async()
    assert 'job_id="async-1"' in setup.openmetrics()


def test_remove_cloud_removes_its_series(setup: Setup) -> None:
    cm = setup.metrics.cloud("lab")
    cm.api_request("queryAsyncJobResult", "431", 0.2)
    cm.poll_finished(True, 1.5, NOW)
    cm.malformed(2)
    del setup.trackers["lab"]
    setup.metrics.remove_cloud("lab")
    setup.renderer.render()
    for text, om in ((setup.text(), False), (setup.openmetrics(), True)):
        for family in samples(text, openmetrics=om).values():
            assert all(x.labels.get("cloud") != "lab" for x in family)


def test_health_metrics(setup: Setup) -> None:
    cm = setup.metrics.cloud("prod")
    cm.poll_finished(False, 2.5, NOW)
    setup.renderer.render()
    found = samples(setup.text())
    assert one(found, "cloudstack_up", cloud="prod") == 0
    assert one(found, "cloudstack_exporter_poll_duration_seconds", cloud="prod") == 2.5
    assert "cloudstack_exporter_last_successful_poll_timestamp_seconds" not in found or not [
        x
        for x in found["cloudstack_exporter_last_successful_poll_timestamp_seconds"]
        if x.labels["cloud"] == "prod"
    ]
    cm.poll_finished(True, 1.0, NOW + 15)
    setup.renderer.render()
    found = samples(setup.text())
    assert one(found, "cloudstack_up", cloud="prod") == 1
    assert (
        one(found, "cloudstack_exporter_last_successful_poll_timestamp_seconds", cloud="prod")
        == NOW + 15
    )
    (build,) = found["cloudstack_exporter_build_info"]
    assert set(build.labels) == {"version", "python_version"} and build.value == 1


def test_bad_histogram_buckets_are_refused() -> None:
    for bad in ((), (5, 1), (0, 1), (1, float("inf"))):
        with pytest.raises(ValueError, match="buckets"):
            ExporterMetrics(bad)


def test_promtool_check_metrics_is_silent(setup: Setup) -> None:
    promtool = require("promtool")
    for cloud in ("prod", "lab"):
        cm = setup.metrics.cloud(cloud)
        cm.api_request("listAsyncJobs", "200", 0.05)
        cm.api_request("queryAsyncJobResult", "431", 0.1)
        cm.poll_finished(True, 0.3, NOW)
        cm.malformed(1)
        cm.skipped("internal", 2)
    setup.add("lab", raw_job("hostile", jobinstancetype=HOSTILE))
    setup.renderer.render()
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=setup.renderer.body(openmetrics=False, gzip=False),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == b"" and result.stderr == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_label_text_round_trips(text: str) -> None:
    s = Setup()
    s.add(
        "prod",
        raw_job(
            "j",
            2,
            jobresultcode=530,
            jobinstancetype=text,
            jobresult={"errorcode": 530, "errortext": text},
            completed=iso(T0 + 1),
        ),
    )
    s.renderer.render()
    for body, om in ((s.text(), False), (s.openmetrics(), True)):
        (info,) = samples(body, openmetrics=om)["cloudstack_async_job_info"]
        assert info.labels["instance_type"] == text
        assert info.labels["error"] == text[:256]
