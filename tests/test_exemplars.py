"""Exemplars: in OpenMetrics only, each duration bucket names the latest job observed in it."""

from __future__ import annotations

import re
from pathlib import Path

from exporter_harness import Exporter, cloud_yaml, write_config
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from simulator_fixtures import SimHandle

from exporter.jobs import parse_date

pytest_plugins = ["simulator_fixtures"]

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def test_each_bucket_carries_the_latest_job_in_openmetrics_and_text_is_unchanged(
    simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(3, cmd="StartVMCmd", created_ago=30)
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top="duration_buckets: [1, 60, 3600]\n"
    )
    async with Exporter(config) as exporter:
        for job_id in ids:
            await simulator.finish(job_id, "success")
        await exporter.cycle()
        durations = {}
        for job_id in ids:
            truth = await simulator.job(job_id)
            assert truth is not None
            durations[job_id] = parse_date(truth["completed_text"]) - parse_date(
                truth["created_text"]
            )
        status, _, om = await exporter.get("/metrics", Accept=OPENMETRICS)
        assert status == 200
        buckets = [
            s
            for family in parse_om(om.decode())
            if family.name == "cloudstack_async_job_duration_seconds"
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels["cmd"] == "StartVMCmd"
        ]
        with_exemplar = [s for s in buckets if s.exemplar is not None]
        assert with_exemplar, "no bucket has an exemplar"
        for sample in with_exemplar:
            job_id = sample.exemplar.labels["job_id"]
            # The exemplar's value is that job's duration, and it lies within its bucket.
            assert sample.exemplar.value == durations[job_id]
            assert sample.exemplar.value <= float(sample.labels["le"])
            assert sample.exemplar.timestamp is not None

        status, _, text = await exporter.get("/metrics")
        assert status == 200
        lines = [ln for ln in text.decode().splitlines() if "duration_seconds_bucket" in ln]
        assert lines and not any(re.search(r"\} \S+ #", ln) for ln in lines)
