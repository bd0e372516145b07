"""apache-libcloud's CloudStack driver against the simulator: a second independent client with
its own signing, paging through listAsyncJobs and job polling (`_async_request`)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest
from libcloud.common.types import ProviderError
from libcloud.compute.drivers.cloudstack import CloudStackNodeDriver

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import Credentials, SimHandle  # noqa: E402

pytest_plugins = ["simulator_fixtures"]


def driver_for(sim: SimHandle, creds: Credentials) -> CloudStackNodeDriver:
    url = urlsplit(sim.url)
    driver = CloudStackNodeDriver(
        creds.api_key,
        creds.secret_key,
        secure=False,
        host=url.hostname,
        port=url.port,
        path=url.path,
    )
    driver.connection.poll_interval = 0.2  # libcloud's default is 1 s
    return driver


async def sync_request(driver: CloudStackNodeDriver, command: str, **params: Any) -> Any:
    # libcloud is blocking; the simulator runs on this test's event loop.
    return await asyncio.to_thread(driver._sync_request, command, params=params)


async def test_libcloud_signs_and_pages_through_list_async_jobs(simulator: SimHandle) -> None:
    created = await simulator.create_jobs(7, account="ops")
    driver = driver_for(simulator, simulator.ops)
    seen: list[str] = []
    page_sizes = []
    for page in (1, 2, 3, 4):
        answer = await sync_request(driver, "listAsyncJobs", page=page, pagesize=3)
        jobs = answer.get("asyncjobs", [])
        seen += [job["jobid"] for job in jobs]
        page_sizes.append(len(jobs))
        assert answer["count"] == 7  # the total, on every page
    assert seen == created  # oldest first, each once
    assert page_sizes == [3, 3, 1, 0]
    answers = (await simulator.counters())["by_code"]
    assert answers.get("401", 0) == 0


async def test_libcloud_polls_a_job_to_success(simulator: SimHandle) -> None:
    await simulator.settings(api_job_duration=0.5)
    driver = driver_for(simulator, simulator.dev)
    result = await asyncio.to_thread(
        driver._async_request, "stopVirtualMachine", params={"id": "vm-42"}
    )
    assert result["virtualmachine"]["id"] == "vm-42"
    polls = (await simulator.counters())["by_command"]["queryAsyncJobResult"]
    assert polls >= 1


async def test_libcloud_sees_a_failed_job_and_a_maintenance_refusal(
    simulator: SimHandle,
) -> None:
    await simulator.settings(api_job_duration=3600)
    driver = driver_for(simulator, simulator.dev)
    call = asyncio.create_task(
        asyncio.to_thread(driver._async_request, "stopVirtualMachine", params={"id": "vm-7"})
    )
    while not (pending := await simulator.jobs("pending")):
        await asyncio.sleep(0.05)
    [job] = pending
    await simulator.finish(job["jobid"], "failure", result_code=533, errortext="no capacity")
    with pytest.raises(Exception, match="no capacity"):
        await call

    await simulator.control("POST", "/maintenance", {"enabled": True})
    with pytest.raises(ProviderError) as refused:
        await sync_request(driver, "stopVirtualMachine", id="vm-7")
    assert refused.value.http_code == 503
    assert "Can not accept new jobs" in refused.value.value
