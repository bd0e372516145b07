"""The exporter end to end: the real service, polling real simulators over HTTP, scraped over HTTP.

Every expectation is checked against the simulator's own truth (its control API) or its
request counters, never against the exporter's internals.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
from binaries import require
from exporter_harness import Exporter, Metrics, cloud_yaml, write_config
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from simulator_fixtures import SimHandle, _running

pytest_plugins = ["simulator_fixtures"]

STATUS_CODES = {"pending": 0, "succeeded": 1, "failed": 2, "cancelled": 3}


def assert_job_matches_truth(metrics: Metrics, cloud: str, truth: dict) -> None:
    """Every per-job series of one job equals what the simulator says about it."""
    job_id = truth["jobid"]
    status = metrics.find("cloudstack_async_job_status", cloud=cloud, job_id=job_id)
    assert len(status) == 1, f"job {job_id}: {len(status)} status series"
    labels, value = status[0]
    assert value == truth["status"]
    assert labels["cmd"] == truth["cmd"].rpartition(".")[2].removesuffix("ByAdmin")
    assert labels["instance_type"] == (truth["instance_type"] or "")
    code = metrics.value("cloudstack_async_job_result_code", cloud=cloud, job_id=job_id)
    assert code == truth["result_code"]
    proc = metrics.value("cloudstack_async_job_proc_status", cloud=cloud, job_id=job_id)
    assert proc == truth["proc_status"]
    created = metrics.value(
        "cloudstack_async_job_created_timestamp_seconds", cloud=cloud, job_id=job_id
    )
    assert created == truth["created_unix"]
    completed = metrics.value(
        "cloudstack_async_job_completed_timestamp_seconds", cloud=cloud, job_id=job_id
    )
    if truth["status"] == 0:
        assert completed is None
    else:
        assert completed == truth["completed_unix"]
    info = metrics.find("cloudstack_async_job_info", cloud=cloud, job_id=job_id)
    assert len(info) == 1
    info_labels = info[0][0]
    assert info_labels["cmd_class"] == truth["cmd"]
    assert info_labels["account_id"] == truth["accountid"]
    assert info_labels["user_id"] == truth["userid"]
    assert info_labels["instance_id"] == (truth["instance_id"] or "")
    result = truth["result"]
    expected_error = ""
    if truth["status"] == 2 and isinstance(result, dict):  # failures only, not cancels
        expected_error = str(result.get("errortext", ""))[:256]
    assert info_labels["error"] == expected_error
    assert info_labels["result_type"] == (truth["result_type"] or "")
    # Every other field of the job's API view is reachable too.
    api = truth["api"]
    assert info_labels["account"] == api.get("account", "")
    assert info_labels["domain_id"] == api.get("domainid", "")
    assert info_labels["domain_path"] == api.get("domainpath", "")
    # 4.19 and 4.20 send a JSON number: the label is its decimal digits.
    shown = api.get("managementserverid")
    if shown is None and truth["status"] != 0:
        # CloudStack names no server once the job ended; the exporter keeps the one it last
        # saw running the job (none if it never saw the job pending on a 4.19+ server).
        last_seen = {"", str(truth["managementserverid"]), str(truth["msid"])}
        assert info_labels["management_server_id"] in last_seen
        if info_labels["management_server_id"] == "":
            assert info_labels["management_server_name"] == ""
    else:
        assert info_labels["management_server_id"] == str(shown if shown is not None else "")
        assert info_labels["management_server_name"] == api.get("managementservername", "")
    expected_object = ""
    if truth["status"] == 1 and isinstance(result, dict) and len(result) == 1:
        expected_object = next(iter(result))
    assert info_labels["result_object"] == expected_object


async def truth_with_unix(sim: SimHandle, job_id: str) -> dict:
    """The simulator's truth for a job, with its dates as the API shows them, in Unix seconds."""
    from exporter.jobs import parse_date

    truth = await sim.job(job_id)
    assert truth is not None
    truth["created_unix"] = parse_date(truth["created_text"])
    if truth["completed_text"]:
        truth["completed_unix"] = parse_date(truth["completed_text"])
    return truth


async def test_discovers_pending_jobs_and_exports_them_as_the_server_reports(
    simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(3, cmd="DeployVMCmd", instance_type="VirtualMachine")
    ids += await simulator.create_jobs(2, cmd="CreateSnapshotCmd", account="ops")
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.set_procstatus(ids[0], 3)
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.job_ids("a") == set(ids)
        for job_id in ids:
            assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, job_id))
        assert (
            metrics.value("cloudstack_async_jobs", cloud="a", cmd="DeployVMCmd", status="pending")
            == 3
        )
        assert (
            metrics.value(
                "cloudstack_async_jobs", cloud="a", cmd="CreateSnapshotCmd", status="pending"
            )
            == 2
        )
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert metrics.value("cloudstack_exporter_tracked_jobs", cloud="a") == 5
        oldest = metrics.value(
            "cloudstack_async_jobs_oldest_pending_age_seconds", cloud="a", cmd="DeployVMCmd"
        )
        assert oldest is not None and 0 <= oldest < 60
        status, _, _ = await exporter.get("/-/ready")
        assert status == 200


async def test_ready_only_once_metrics_show_the_first_polls(
    simulator: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A readiness probe that passes promises a /metrics with every cloud polled, even
    while the render after the first poll is still running."""
    import asyncio
    import time

    from exporter.config import load_config
    from exporter.options import Options
    from exporter.rendering import Renderer
    from exporter.service import Service

    build = Renderer.build

    def slow_build(self: Renderer, snapshot: object) -> object:
        time.sleep(0.3)
        return build(self, snapshot)  # type: ignore[arg-type]

    monkeypatch.setattr(Renderer, "build", slow_build)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    service = Service(load_config(str(config)), Options(listen_address="127.0.0.1:0"))
    await service.start()
    try:
        poller = service.clouds["a"].poller
        while poller.cycles == 0:
            await asyncio.sleep(0.01)
        assert not service.ready()  # polled, but /metrics does not show it yet
        assert b'cloudstack_up{cloud="a"}' not in service.renderer.body()
        for _ in range(300):
            if service.ready():
                break
            await asyncio.sleep(0.01)
        assert service.ready()
        assert b'cloudstack_up{cloud="a"} 1.0' in service.renderer.body()
    finally:
        await service.stop()


async def test_a_cloud_added_back_by_a_reload_is_not_ready_before_its_poll(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    both = [cloud_yaml("a", simulator), cloud_yaml("b", second_simulator)]
    config = write_config(tmp_path / "c.yaml", both)
    async with Exporter(config) as exporter:
        assert exporter.service.ready()
        write_config(config, both[:1])
        assert await exporter.service.reload()
        write_config(config, both)
        # "b" answers slowly, so that its first poll cannot end while the reload renders.
        await second_simulator.add_fault("latency", seconds=1.0)
        assert await exporter.service.reload()
        # "b" starts afresh: its first poll has not ended, let alone been rendered.
        assert not exporter.service.ready()
        await second_simulator.clear_faults()
        await exporter.cycle()
        assert exporter.service.ready()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="b") == 1


async def test_a_reload_renders_off_the_event_loop_and_shows_its_outcome(
    simulator: SimHandle, tmp_path: Path
) -> None:
    import threading

    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        renderer = exporter.service.renderer
        threads: list[threading.Thread] = []
        build = renderer.build

        def spying_build(snapshot: Any) -> Any:
            threads.append(threading.current_thread())
            return build(snapshot)

        renderer.build = spying_build  # type: ignore[method-assign]
        config.write_text("clouds: [")  # broken YAML: refused, the old config stays
        assert not await exporter.service.reload()
        assert (await exporter.metrics()).value(
            "cloudstack_exporter_config_last_reload_successful"
        ) == 0
        write_config(config, [cloud_yaml("a", simulator)])
        assert await exporter.service.reload()
        assert (await exporter.metrics()).value(
            "cloudstack_exporter_config_last_reload_successful"
        ) == 1
        # Both reloads rendered, each in a worker thread: never on the loop's thread.
        assert len(threads) >= 2
        assert threading.main_thread() not in threads


async def test_every_final_shape_is_exported_and_observed_exactly_once(
    simulator: SimHandle, tmp_path: Path
) -> None:
    shapes = {
        "success": {},
        "failure": {"result_code": 533, "errortext": 'Insufficient capacity "zone-1"'},
        "restart": {},
        "queue_cancel": {},
        "cancelled": {},
    }
    ids = await simulator.create_jobs(len(shapes), cmd="StartVMCmd", created_ago=30)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        for job_id, (shape, spec) in zip(ids, shapes.items(), strict=True):
            await simulator.finish(job_id, shape, **spec)
        await simulator.reset_counters()
        await exporter.cycle()
        metrics = await exporter.metrics()
        for job_id in ids:
            assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, job_id))
        # One query per job that left the list, nothing else but the list.
        counters = await simulator.counters()
        assert counters["by_command"] == {"listAsyncJobs": 1, "queryAsyncJobResult": 5}

        failed = metrics.find("cloudstack_async_job_info", job_id=ids[1])[0][0]
        assert failed["error"] == 'Insufficient capacity "zone-1"'
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="StartVMCmd",
                status="failed",
                result_code="533",
            )
            == 1
        )
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="StartVMCmd",
                status="failed",
                result_code="530",
            )
            == 1
        )
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="StartVMCmd",
                status="failed",
                result_code="0",
            )
            == 1
        )
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="StartVMCmd",
                status="cancelled",
                result_code="0",
            )
            is not None
        )
        assert metrics.total("cloudstack_async_job_duration_seconds_count", cloud="a") == 5
        durations = metrics.total("cloudstack_async_job_duration_seconds_sum", cloud="a")
        expected = 0.0
        for job_id in ids:
            truth = await truth_with_unix(simulator, job_id)
            expected += truth["completed_unix"] - truth["created_unix"]
        assert math.isclose(durations, expected)

        # Final jobs are never queried again, and never observed again.
        await simulator.reset_counters()
        await exporter.cycle(3)
        counters = await simulator.counters()
        assert counters["by_command"] == {"listAsyncJobs": 3}
        again = await exporter.metrics()
        assert again.total("cloudstack_async_job_duration_seconds_count", cloud="a") == 5
        assert again.total("cloudstack_async_jobs_finished_total", cloud="a") == 5


async def test_history_before_start_is_not_observed_but_configured_jobs_are_shown(
    simulator: SimHandle, tmp_path: Path
) -> None:
    old = await simulator.create_jobs(1, cmd="StopVMCmd", created_ago=600)
    await simulator.finish(old[0], "failure", result_code=530, errortext="boom")
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text(f"# watched by hand\n{old[0]}\n")
    extra = f"jobs_file: {jobs_file}\n"
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator, extra=extra)])
    async with Exporter(config) as exporter:
        metrics = await exporter.metrics()
        assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, old[0]))
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 0
        assert metrics.total("cloudstack_async_jobs_finished_total") == 0

        # A job added to the file later is picked up without a restart.
        later = await simulator.create_jobs(1, cmd="StartVMCmd")
        jobs_file.write_text(f"{old[0]}\n{later[0]}\n")
        await simulator.reset_counters()
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert later[0] in metrics.job_ids("a")
        counters = await simulator.counters()
        # Listed, so not queried; the old final job is not queried again either.
        assert counters["by_command"] == {"listAsyncJobs": 1}


async def test_configured_job_without_discovery_is_queried_until_final(
    simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(1, cmd="MigrateVirtualMachineCmd")
    extra = f"jobs: [{ids[0]}]\ndiscovery:\n  enabled: false\n"
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator, extra=extra)])
    async with Exporter(config) as exporter:
        await simulator.reset_counters()
        await exporter.cycle(2)
        assert (await simulator.counters())["by_command"] == {"queryAsyncJobResult": 2}
        await simulator.finish(ids[0], "success")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, ids[0]))
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 1
        await simulator.reset_counters()
        await exporter.cycle(2)
        assert (await simulator.counters())["by_command"] == {}


async def test_purged_job_is_dropped_and_counted(simulator: SimHandle, tmp_path: Path) -> None:
    ids = await simulator.create_jobs(2, cmd="StopVMCmd", duration=None)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        # Unfinished jobs older than job.expire are deleted outright: 431 on query.
        await simulator.advance(2 * 86400)
        await simulator.purge()
        assert await simulator.job(ids[0]) is None
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.job_ids("a") == set()
        assert (
            metrics.value("cloudstack_exporter_jobs_dropped_total", cloud="a", reason="not_found")
            == 2
        )
        assert metrics.value("cloudstack_up", cloud="a") == 1


async def test_retention_and_cap(simulator: SimHandle, tmp_path: Path) -> None:
    ids = await simulator.create_jobs(4, cmd="StopVMCmd")
    top = "retention: 1h\nmax_tracked_jobs: 3\n"
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=top)
    async with Exporter(config) as exporter:
        metrics = await exporter.metrics()
        # Only pending jobs and no room: the newest is refused and counted.
        assert len(metrics.job_ids("a")) == 3
        assert (
            metrics.value("cloudstack_exporter_jobs_dropped_total", cloud="a", reason="capacity")
            == 1
        )
        # Finished jobs are evicted first, oldest finished first, to make room.
        # (The cycle that learns of the finish has listed the pending jobs already, so the
        # refused job gets in on the next one.)
        await simulator.finish(ids[0], "success")
        await exporter.cycle(2)
        metrics = await exporter.metrics()
        assert ids[3] in metrics.job_ids("a")
        assert ids[0] not in metrics.job_ids("a")
        assert metrics.value("cloudstack_exporter_tracked_jobs", cloud="a") == 3
        assert (
            metrics.value("cloudstack_exporter_jobs_dropped_total", cloud="a", reason="capacity")
            == 2
        )
        # The evicted job was still observed once before it went.
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 1

    # Retention: a finished job's series leave `retention` after it finished.
    top = "retention: 1s\n"
    config = write_config(tmp_path / "d.yaml", [cloud_yaml("b", simulator)], top=top)
    async with Exporter(config) as exporter:
        await simulator.finish(ids[1], "success")
        await exporter.cycle()
        assert ids[1] in (await exporter.metrics()).job_ids("b")
        import asyncio

        await asyncio.sleep(1.2)
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert ids[1] not in metrics.job_ids("b")
        assert (
            metrics.value("cloudstack_exporter_jobs_dropped_total", cloud="b", reason="retention")
            == 1
        )


async def test_restart_keeps_finished_jobs_and_observes_nothing_twice(
    simulator: SimHandle, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=f"state_file: {state}\n"
    )
    ids = await simulator.create_jobs(3, cmd="DeployVMCmd")
    async with Exporter(config) as exporter:
        await simulator.finish(ids[0], "success")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 1
    assert state.exists()

    # While the exporter is down one more job finishes: that completion is new to it.
    await simulator.finish(ids[1], "failure", result_code=534, errortext="no host")
    async with Exporter(config) as exporter:
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.job_ids("a") == set(ids)  # the finished one kept within retention
        for job_id in ids:
            assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, job_id))
        # Only the job that finished during the downtime is observed by the new process.
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 1
        assert (
            metrics.value(
                "cloudstack_async_jobs_finished_total",
                cloud="a",
                cmd="DeployVMCmd",
                status="failed",
                result_code="534",
            )
            == 1
        )
        await exporter.cycle(2)
        metrics = await exporter.metrics()
        assert metrics.total("cloudstack_async_job_duration_seconds_count") == 1


async def test_corrupt_state_file_is_set_aside(simulator: SimHandle, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "clouds": {"a": ')
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=f"state_file: {state}\n"
    )
    await simulator.create_jobs(1)
    async with Exporter(config) as exporter:
        assert len((await exporter.metrics()).job_ids("a")) == 1
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt")]
    assert len(aside) == 1


async def test_outage_keeps_data_and_recovers(simulator: SimHandle, tmp_path: Path) -> None:
    ids = await simulator.create_jobs(2, cmd="StopVMCmd")
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.add_fault("outage")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.job_ids("a") == set(ids)  # last good data still served
        last_ok = metrics.value(
            "cloudstack_exporter_last_successful_poll_timestamp_seconds", cloud="a"
        )
        assert (
            metrics.value(
                "cloudstack_api_requests_total", cloud="a", command="listAsyncJobs", code="error"
            )
            == 1
        )
        await simulator.clear_faults()
        await simulator.finish(ids[0], "success")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 1
        assert_job_matches_truth(metrics, "a", await truth_with_unix(simulator, ids[0]))
        assert metrics.value(
            "cloudstack_exporter_last_successful_poll_timestamp_seconds", cloud="a"
        ) > (last_ok or 0)


async def test_one_cloud_down_does_not_affect_another(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    a = await simulator.create_jobs(1)
    b = await second_simulator.create_jobs(1)
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", simulator), cloud_yaml("b", second_simulator)]
    )
    async with Exporter(config) as exporter:
        await simulator.add_fault("http_error", status=502)
        await second_simulator.finish(b[0], "success")
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_up", cloud="a") == 0
        assert metrics.value("cloudstack_up", cloud="b") == 1
        assert metrics.job_ids("a") == set(a)
        assert_job_matches_truth(metrics, "b", await truth_with_unix(second_simulator, b[0]))


async def test_quiet_steady_state_costs_only_list_pages(
    simulator: SimHandle, second_simulator: SimHandle, tmp_path: Path
) -> None:
    await simulator.create_jobs(1200, cmd="DeployVMCmd")
    await second_simulator.create_jobs(1200, cmd="StopVMCmd")
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("a", simulator), cloud_yaml("b", second_simulator)]
    )
    async with Exporter(config) as exporter:
        for sim in (simulator, second_simulator):
            await sim.reset_counters()
        await exporter.cycle(3)
        for sim in (simulator, second_simulator):
            counters = await sim.counters()
            # ceil(1200 / 500) = 3 pages a cycle, and not one queryAsyncJobResult.
            assert counters["by_command"] == {"listAsyncJobs": 9}
        metrics = await exporter.metrics()
        assert len(metrics.job_ids("a")) == 1200
        assert len(metrics.job_ids("b")) == 1200
        assert (
            metrics.value("cloudstack_async_jobs", cloud="a", cmd="DeployVMCmd", status="pending")
            == 1200
        )


async def test_internal_and_pseudo_jobs_are_skipped_by_default(tmp_path: Path) -> None:
    # Servers before 4.17.1 list VM work and pseudo jobs (apache/cloudstack PR #6564).
    async for simulator in _running("+0000", seed=5, version="4.16.1.0"):
        api = await simulator.create_jobs(1, cmd="MigrateVolumeCmd")
        await simulator.create_jobs(1, cmd="com.cloud.vm.VmWorkMigrateVolume")
        await simulator.create_jobs(1, pseudo=True)
        config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
        async with Exporter(config) as exporter:
            metrics = await exporter.metrics()
            assert metrics.job_ids("a") == set(api)
            for reason in ("internal", "pseudo"):
                skipped = metrics.value(
                    "cloudstack_exporter_jobs_skipped_total", cloud="a", reason=reason
                )
                assert skipped == 1


async def test_per_job_series_can_be_switched_off(simulator: SimHandle, tmp_path: Path) -> None:
    await simulator.create_jobs(2, cmd="DeployVMCmd")
    top = "per_job_series: false\n"
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=top)
    async with Exporter(config) as exporter:
        metrics = await exporter.metrics()
        assert metrics.job_ids() == set()
        assert "cloudstack_async_job_info" not in metrics.families
        assert (
            metrics.value("cloudstack_async_jobs", cloud="a", cmd="DeployVMCmd", status="pending")
            == 2
        )


async def test_malformed_entries_are_skipped_and_counted(
    simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(3)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.add_fault("jobstatus_abc", commands=["listAsyncJobs"], count=1)
        await simulator.reset_counters()
        await exporter.cycle()
        metrics = await exporter.metrics()
        assert metrics.value("cloudstack_exporter_malformed_jobs_total", cloud="a") >= 1
        assert metrics.job_ids("a") == set(ids)  # the others are not poisoned
        assert "queryAsyncJobResult" not in (await simulator.counters())["by_command"]


async def test_debug_logs_never_contain_secrets(
    simulator: SimHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = await simulator.create_jobs(2)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.finish(ids[0], "failure", result_code=530, errortext="x")
        await simulator.add_fault("http_error", status=401, count=1)
        await exporter.cycle(2)
        await simulator.revoke_key(api_key=simulator.admin.api_key)
        await exporter.cycle()
        assert (await exporter.metrics()).value("cloudstack_up", cloud="a") == 0
    text = "\n".join(
        r.getMessage() + " " + " ".join(str(v) for v in r.__dict__.values()) for r in caplog.records
    )
    assert simulator.admin.api_key not in text
    assert simulator.admin.secret_key not in text
    assert "signature=" not in text.lower()


async def test_promtool_check_metrics_is_silent_on_real_output(
    simulator: SimHandle, tmp_path: Path
) -> None:
    promtool = require("promtool")
    ids = await simulator.create_jobs(3, cmd="DeployVMCmd", instance_type="VirtualMachine")
    await simulator.create_jobs(1, cmd="CreateSnapshotCmd", account="ops")
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.finish(ids[0], "failure", result_code=533, errortext='a "quoted"\nline')
        await simulator.finish(ids[1], "success")
        await exporter.cycle()
        status, _, body = await exporter.get("/metrics", Accept="text/plain")
        assert status == 200
        result = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode() + result.stderr.decode() == ""

        # promtool reads only the text format; the OpenMetrics variant must parse as such,
        # with the same families.
        status, headers, om = await exporter.get(
            "/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        om_types = {f.name: f.type for f in parse_om(om.decode())}
        assert om_types == Metrics(body.decode()).families


async def test_numeric_management_server_id_of_419_is_a_label_of_its_digits(
    tmp_path: Path,
) -> None:
    async for sim in _running("+0000", seed=5, version="4.19.0.0"):
        [job] = await sim.create_jobs(cmd="StopVMCmd")
        config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim)])
        async with Exporter(config) as exporter:
            await exporter.cycle()
            metrics = await exporter.metrics()
            truth = await truth_with_unix(sim, job)
            assert isinstance(truth["api"]["managementserverid"], int)
            assert_job_matches_truth(metrics, "a", truth)
            digits = str(truth["msid"])
            [(labels, _)] = metrics.find("cloudstack_async_job_info", job_id=job)
            assert labels["management_server_id"] == digits
            by_server = metrics.value(
                "cloudstack_async_jobs_pending_by_management_server",
                cloud="a",
                management_server_id=digits,
            )
            assert by_server == 1


async def test_411_listed_final_jobs_are_taken_as_final_and_counted_once(
    tmp_path: Path,
) -> None:
    # Up to 4.11 listAsyncJobs keeps returning finished jobs, with their final status, until purge.
    async for sim in _running("+0000", seed=5, version="4.11.3.0"):
        ok, failed, pending = await sim.create_jobs(3, cmd="StartVMCmd", created_ago=30)
        config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim)])
        async with Exporter(config) as exporter:
            await sim.finish(ok)
            await sim.finish(failed, "failure", result_code=533)
            for _ in range(4):
                await exporter.cycle()
            metrics = await exporter.metrics()
            for job_id in (ok, failed, pending):
                assert_job_matches_truth(metrics, "a", await truth_with_unix(sim, job_id))
            assert metrics.total("cloudstack_async_job_duration_seconds_count", cloud="a") == 2
            assert metrics.total("cloudstack_async_jobs_finished_total", cloud="a") == 2
            assert (
                metrics.value(
                    "cloudstack_async_jobs_finished_total",
                    cloud="a",
                    cmd="StartVMCmd",
                    status="failed",
                    result_code="533",
                )
                == 1
            )
            await sim.reset_counters()
            await exporter.cycle(3)
            again = await exporter.metrics()
            assert again.total("cloudstack_async_job_duration_seconds_count", cloud="a") == 2
            assert again.total("cloudstack_async_jobs_finished_total", cloud="a") == 2
            # Final when listed: never queried.
            assert (await sim.counters())["by_command"] == {"listAsyncJobs": 3}


async def test_411_a_listed_job_past_retention_is_dropped_once_not_taken_again(
    tmp_path: Path,
) -> None:
    # 4.11 lists a finished job until purge (a day by default), long after the exporter's
    # retention: once dropped it must stay dropped, not come back every other cycle.
    async for sim in _running("+0000", seed=6, version="4.11.3.0"):
        done, pending = await sim.create_jobs(2, cmd="StartVMCmd", created_ago=30)
        config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", sim)], top="retention: 1s\n")
        async with Exporter(config) as exporter:
            await sim.finish(done)
            await exporter.cycle()
            assert (await exporter.metrics()).job_ids("a") == {done, pending}
            await asyncio.sleep(1.5)
            for _ in range(4):
                await exporter.cycle()
            metrics = await exporter.metrics()
            assert metrics.job_ids("a") == {pending}
            assert (
                metrics.value(
                    "cloudstack_exporter_jobs_dropped_total", cloud="a", reason="retention"
                )
                == 1
            )
            assert metrics.total("cloudstack_async_jobs_finished_total", cloud="a") == 1
            assert (await sim.job(done) or {}).get("status") == 1  # still listed, as 4.11 does


async def test_a_state_file_that_cannot_be_written_is_counted_and_logged_once(
    simulator: SimHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the state directory should be\n")
    top = f"state_file: {tmp_path / 'not-a-dir' / 'state.json'}\n"
    await simulator.create_jobs(1, cmd="StopVMCmd")
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=top)
    async with Exporter(config) as exporter:
        await exporter.cycle(3)
        m = await exporter.metrics()
        assert m.value("cloudstack_exporter_state_write_failures_total") >= 3
        assert m.value("cloudstack_up", cloud="a") == 1
    errors = [r.getMessage() for r in caplog.records if "cannot write state file" in r.getMessage()]
    assert len(errors) == 1 and "Not a directory" in errors[0]


async def test_a_restart_says_what_it_restored(
    simulator: SimHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await simulator.create_jobs(3, cmd="StopVMCmd")
    top = f"state_file: {tmp_path / 'state.json'}\n"
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)], top=top)
    async with Exporter(config) as exporter:
        await simulator.finish(ids[0])
        await exporter.cycle()
    caplog.clear()
    caplog.set_level(logging.INFO)
    async with Exporter(config):
        pass
    restored = [r for r in caplog.records if r.getMessage() == "restored from the state file"]
    assert len(restored) == 1
    assert (restored[0].cloud, restored[0].pending, restored[0].finished) == ("a", 2, 1)  # type: ignore[attr-defined]


async def test_a_reload_masks_the_new_credentials_in_logs(
    simulator: SimHandle, tmp_path: Path
) -> None:
    """The service registers what Config.secrets() lists again after a reload."""
    import dataclasses

    from exporter import logs

    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    new = dataclasses.replace(
        simulator.admin, api_key="reloaded-API-KEY-7f3a", secret_key="reloaded-SECRET-9c1d"
    )
    async with Exporter(config) as exporter:
        try:
            assert "reloaded-SECRET-9c1d" in logs.redact("reloaded-SECRET-9c1d")
            write_config(config, [cloud_yaml("a", simulator), cloud_yaml("b", simulator, new)])
            assert await exporter.service.reload()
            line = logs.redact("key reloaded-API-KEY-7f3a secret reloaded-SECRET-9c1d")
            assert "reloaded" not in line, line
        finally:
            logs.forget_secrets()
