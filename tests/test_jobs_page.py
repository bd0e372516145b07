"""/jobs served by the running exporter, compared with the simulator's truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from exporter_harness import Exporter, cloud_yaml, write_config
from simulator_fixtures import SimHandle

pytest_plugins = ["simulator_fixtures"]


async def test_the_jobs_page_shows_every_tracked_job_as_cloudstack_reports_it(
    simulator: SimHandle, tmp_path: Path
) -> None:
    ids = await simulator.create_jobs(4, cmd="StartVMCmd", created_ago=30)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await simulator.finish(ids[0], "failure", result_code=533, errortext="<b>no capacity</b>")
        await simulator.finish(ids[1], "restart")
        await exporter.cycle()
        status, headers, body = await exporter.get("/jobs?format=json&sort=job_id")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        page = json.loads(body)
        assert page["total"] == 4
        assert [c["cloud"] for c in page["clouds"]] == ["a"] and page["clouds"][0]["up"]
        rows = {r["job_id"]: r for r in page["jobs"]}
        assert set(rows) == set(ids)
        # The page reads the snapshot /metrics was rendered from: the same jobs.
        assert set(rows) == (await exporter.metrics()).job_ids("a")
        for job_id in ids:
            truth = await simulator.job(job_id)
            assert truth is not None
            row = rows[job_id]
            assert row["status"] == ["pending", "succeeded", "failed", "cancelled"][truth["status"]]
            assert row["result_code"] == truth["result_code"]
            assert row["cmd_class"] == truth["cmd"]
        assert rows[ids[0]]["error"] == "<b>no capacity</b>"
        # A job a management-server restart killed has no error text: the page says why.
        assert rows[ids[1]]["error"] == "" and "restart" in rows[ids[1]]["reason"]

        status, headers, html = await exporter.get("/jobs?status=failed")
        assert status == 200
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert b"&lt;b&gt;no capacity&lt;/b&gt;" in html and b"<b>no capacity" not in html

        status, _, body = await exporter.get("/jobs?status=stuck")
        assert status == 400 and b"status: &#x27;stuck&#x27; is not one of" in body
        status, _, landing = await exporter.get("/")
        assert b'href="/jobs"' in landing


async def test_the_landing_page_says_which_cloud_is_down_and_why(
    simulator: SimHandle, tmp_path: Path
) -> None:
    wrong = dataclasses.replace(simulator.admin, secret_key="not-the-secret")
    config = write_config(
        tmp_path / "c.yaml", [cloud_yaml("good", simulator), cloud_yaml("bad", simulator, wrong)]
    )
    async with Exporter(config) as exporter:
        await exporter.cycle()
        status, headers, body = await exporter.get("/")
        assert status == 200
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        page = body.decode()
        good, bad = page.index("<strong>good</strong>"), page.index("<strong>bad</strong>")
        assert page[good:].startswith('<strong>good</strong> <span class="up">up</span>')
        assert page[bad:].startswith('<strong>bad</strong> <span class="down">down</span>')
        # CloudStack's own answer to a bad signature, as the log gives it.
        error = page[bad:].split("last poll error:", 1)[1].split("</div>", 1)[0]
        assert "401" in error and "unable to verify user credentials" in error
        assert "not-the-secret" not in page
        status, _, jobs = await exporter.get("/jobs?format=json")
        health = {c["cloud"]: c for c in json.loads(jobs)["clouds"]}
        assert health["good"]["last_error"] == "" and health["bad"]["up"] is False
        assert "401" in health["bad"]["last_error"]


async def test_a_finished_job_keeps_the_management_server_last_seen_running_it(
    simulator: SimHandle, tmp_path: Path
) -> None:
    (job_id,) = await simulator.create_jobs(1, cmd="MigrateVMCmd", created_ago=5)
    config = write_config(tmp_path / "c.yaml", [cloud_yaml("a", simulator)])
    async with Exporter(config) as exporter:
        await exporter.cycle()
        m = await exporter.metrics()
        ((running, _),) = m.find("cloudstack_async_job_info", job_id=job_id)
        assert running["management_server_id"] and running["management_server_name"]
        await simulator.finish(job_id, "failure", result_code=530, errortext="host unreachable")
        await exporter.cycle()
        # CloudStack no longer names a server for the finished job; the exporter keeps it.
        answer = await exporter.poller("a").client.query_async_job_result(job_id)
        assert "managementserverid" not in answer and answer["jobstatus"] == 2
        ((done, _),) = (await exporter.metrics()).find("cloudstack_async_job_info", job_id=job_id)
        assert done["error"] == "host unreachable"
        assert done["management_server_id"] == running["management_server_id"]
        assert done["management_server_name"] == running["management_server_name"]
        _, _, body = await exporter.get(f"/jobs?format=json&q={job_id}")
        (row,) = json.loads(body)["jobs"]
        assert row["status"] == "failed"
        assert row["management_server_id"] == running["management_server_id"]
