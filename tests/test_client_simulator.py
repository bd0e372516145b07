"""The API client against the simulator: every answer shape and error, paging, throttling,
unreadable bodies and session login, end to end over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from exporter.client import ClientSettings, CloudStackClient
from exporter.errors import (
    BadResponse,
    JobNotFound,
    ParameterError,
    PermissionDenied,
    ServerError,
    TransportError,
    Unauthorized,
)
from exporter.jobs import JobStatus, MalformedJob, parse_job

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import Credentials, SimHandle  # noqa: E402

pytest_plugins = ["simulator_fixtures"]


def client_for(sim: SimHandle, creds: Credentials) -> CloudStackClient:
    return CloudStackClient(
        ClientSettings(sim.url, api_key=creds.api_key, secret_key=creds.secret_key, timeout=5.0)
    )


@pytest.fixture
async def admin(simulator: SimHandle) -> AsyncIterator[CloudStackClient]:
    async with client_for(simulator, simulator.admin) as client:
        yield client


async def test_every_job_shape_parses(simulator: SimHandle, admin: CloudStackClient) -> None:
    shapes: dict[str, dict[str, object] | None] = {
        "pending": None,
        "success": {"outcome": "success"},
        "failure": {"outcome": "failure", "result_code": 535, "errortext": "limit reached"},
        "restart": {"outcome": "restart"},
        "queue_cancel": {"outcome": "queue_cancel"},
        "cancelled": {"outcome": "cancelled"},
        "text": {"outcome": "text", "result_code": 530, "errortext": "old server"},
    }
    ids = dict(
        zip(
            shapes,
            await simulator.create_jobs(len(shapes), cmd="MigrateVolumeCmd", account="ops"),
            strict=True,
        )
    )
    for name, spec in shapes.items():
        if spec is not None:
            await simulator.finish(ids[name], **spec)

    jobs = {name: parse_job(await admin.query_async_job_result(i)) for name, i in ids.items()}
    expected = {
        "pending": (JobStatus.PENDING, 0, "", ""),
        "success": (JobStatus.SUCCEEDED, 0, "object", ""),
        "failure": (JobStatus.FAILED, 535, "object", "limit reached"),
        "restart": (JobStatus.FAILED, 530, "", ""),
        "queue_cancel": (JobStatus.FAILED, 0, "", ""),
        "cancelled": (JobStatus.CANCELLED, 0, "", ""),
        "text": (JobStatus.FAILED, 530, "text", "old server"),
    }
    for name, job in jobs.items():
        assert (job.status, job.result_code, job.result_type, job.error) == expected[name], name
        truth = await simulator.job(ids[name])
        assert truth is not None
        # Dates are written in the server's zone (-0700); the offset must be honoured.
        assert job.created == pytest.approx(int(truth["created"]), abs=1)
        if job.status.final:
            assert job.completed == pytest.approx(int(truth["completed"]), abs=1)
        assert job.cmd == "MigrateVolumeCmd" and job.instance_type == "Volume"
    assert jobs["success"].result_object == "volume"
    assert jobs["pending"].management_server_id


async def test_errors_map_to_typed_exceptions(
    simulator: SimHandle, admin: CloudStackClient
) -> None:
    with pytest.raises(JobNotFound) as not_found:
        await admin.query_async_job_result("6f3b0c7e-0000-4000-8000-000000000001")
    assert not_found.value.code == "431" and not_found.value.cserrorcode == 9999

    [ops_job] = await simulator.create_jobs(account="ops")
    async with client_for(simulator, simulator.dev) as dev:
        with pytest.raises(PermissionDenied) as denied:
            await dev.query_async_job_result(ops_job)
    assert denied.value.code == "531"

    with pytest.raises(ParameterError) as bad_page:
        await admin.call("listAsyncJobs", {"page": 1, "pagesize": 501})
    assert bad_page.value.code == "431"

    wrong = Credentials(simulator.ops.api_key, "wrong-secret", "", "", "", "")
    async with client_for(simulator, wrong) as client:
        with pytest.raises(Unauthorized) as refused:
            await client.list_async_jobs()
    assert refused.value.code == "401"
    assert "wrong-secret" not in str(refused.value)


async def test_paging_over_more_than_a_thousand_jobs(
    simulator: SimHandle, admin: CloudStackClient
) -> None:
    created = await simulator.create_jobs(1234, account="dev", cmd="CreateSnapshotCmd")
    await simulator.reset_counters()
    listed = await admin.list_async_jobs(listall=True)
    assert [j["jobid"] for j in listed] == created  # all of them, oldest first, no duplicates
    counters = await simulator.counters()
    assert counters["by_command"] == {"listAsyncJobs": 3}
    assert counters["by_code"] == {"200": 3}


async def test_listing_scoped_to_an_account(simulator: SimHandle, admin: CloudStackClient) -> None:
    [ops_job] = await simulator.create_jobs(account="ops")
    await simulator.create_jobs(2, account="dev")
    accounts = {a["account"]: a for a in (await simulator.control("GET", "/accounts"))["accounts"]}
    listed = await admin.list_async_jobs(account="ops", domain_id=accounts["ops"]["domainid"])
    assert [j["jobid"] for j in listed] == [ops_job]
    assert await admin.list_async_jobs(listall=False) == []  # admin's own account: none


async def test_throttling_is_honoured(simulator: SimHandle) -> None:
    await simulator.create_jobs(account="ops")
    await simulator.throttle(2, interval=0.3)
    await simulator.reset_counters()
    async with client_for(simulator, simulator.ops) as ops:
        for _ in range(5):
            assert len(await ops.list_async_jobs()) == 1
    codes = (await simulator.counters())["by_code"]
    assert codes["200"] == 5
    assert codes.get("429", 0) >= 1  # the client was throttled and waited, then retried


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("proxy_502", ServerError),
        ("empty", BadResponse),
        ("truncated", BadResponse),
        ("xml", BadResponse),
        ("not_json", BadResponse),
        ("asyncjobs_not_list", BadResponse),
        ("reset", TransportError),
    ],
)
async def test_unreadable_answers(
    simulator: SimHandle, admin: CloudStackClient, kind: str, error: type[Exception]
) -> None:
    await simulator.create_jobs(2)
    await simulator.add_fault(kind, commands=["listAsyncJobs"])
    with pytest.raises(error):
        await admin.list_async_jobs()
    await simulator.clear_faults()
    assert len(await admin.list_async_jobs()) == 2


async def test_outage_is_a_transport_error(simulator: SimHandle, admin: CloudStackClient) -> None:
    await simulator.add_fault("outage")
    with pytest.raises(TransportError) as caught:
        await admin.list_async_jobs()
    assert caught.value.code == "error"
    await simulator.clear_faults()
    assert await admin.list_async_jobs() == []


async def test_ill_typed_job_fields_are_caught_by_the_parser(
    simulator: SimHandle, admin: CloudStackClient
) -> None:
    [job] = await simulator.create_jobs()
    for kind in ("jobstatus_abc", "created_yesterday"):
        await simulator.add_fault(kind, count=1)
        with pytest.raises(MalformedJob):
            parse_job(await admin.query_async_job_result(job))
    await simulator.add_fault("entries_not_objects", count=1)
    entries = await admin.list_async_jobs()
    with pytest.raises(MalformedJob):
        parse_job(entries[0])


async def test_old_content_type_is_accepted(simulator: SimHandle, admin: CloudStackClient) -> None:
    [job] = await simulator.create_jobs()
    await simulator.settings(json_content_type="text/javascript")
    assert (await admin.query_async_job_result(job))["jobid"] == job


async def test_session_login_and_one_relogin(simulator: SimHandle) -> None:
    [ops_job] = await simulator.create_jobs(account="ops")
    await simulator.create_jobs(account="dev")
    ops = simulator.ops
    await simulator.reset_counters()
    async with CloudStackClient(
        ClientSettings(
            simulator.url, username=ops.username, password=ops.password, domain=ops.domain
        )
    ) as client:
        assert [j["jobid"] for j in await client.list_async_jobs()] == [ops_job]
        await simulator.expire_sessions()
        # The refused session is replaced by one new login, transparently.
        assert (await client.query_async_job_result(ops_job))["jobid"] == ops_job
    counters = await simulator.counters()
    assert counters["by_command"]["login"] == 2
    assert counters["by_code"]["401"] == 1


async def test_session_login_by_domain_id(simulator: SimHandle) -> None:
    [ops_job] = await simulator.create_jobs(account="ops")
    accounts = {a["account"]: a for a in (await simulator.control("GET", "/accounts"))["accounts"]}
    ops = simulator.ops
    async with CloudStackClient(
        ClientSettings(
            simulator.url,
            username=ops.username,
            password=ops.password,
            domain_id=accounts["ops"]["domainid"],
        )
    ) as client:
        assert [j["jobid"] for j in await client.list_async_jobs()] == [ops_job]
    # The same user in another domain is another user: refused.
    async with CloudStackClient(
        ClientSettings(
            simulator.url,
            username=ops.username,
            password=ops.password,
            domain_id=accounts["dev"]["domainid"],
        )
    ) as client:
        with pytest.raises(PermissionDenied):
            await client.list_async_jobs()


async def test_bad_login_is_permission_denied(simulator: SimHandle) -> None:
    async with CloudStackClient(
        ClientSettings(simulator.url, username="ops", password="not-it", domain="/Ops")
    ) as client:
        with pytest.raises(PermissionDenied) as caught:
            await client.list_async_jobs()
    assert "not-it" not in str(caught.value)
