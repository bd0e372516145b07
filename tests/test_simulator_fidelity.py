"""The simulator's release-dependent and ApiServlet-level behaviour, observed over HTTP: the
management-server id by release, which jobs are listed by release, maintenance mode, control
characters, repeated parameters and the X-Description header."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from exporter.signing import sign, signature

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import Credentials, SimHandle, _running  # noqa: E402

pytest_plugins = ["simulator_fixtures"]

MAINTENANCE = (
    "Maintenance or Shutdown has been initiated on this management server. Can not accept new jobs"
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def running(version: str) -> AbstractAsyncContextManager[SimHandle]:
    """A simulator of that CloudStack version, for one `async with`."""
    return asynccontextmanager(_running)("+0000", 3, version)


async def get(
    sim: SimHandle, creds: Credentials, command: str, **params: str
) -> tuple[int, str, Any, aiohttp.typedefs.LooseHeaders]:
    """One signed GET; (status, body text, parsed JSON, headers)."""
    query = sign(
        {"command": command, "response": "json", **params}, creds.api_key, creds.secret_key
    )
    async with aiohttp.ClientSession() as session, session.get(sim.url, params=query) as resp:
        text = await resp.text()
        return resp.status, text, json.loads(text), resp.headers


async def get_raw(sim: SimHandle, query: str) -> tuple[int, Any, Any]:
    """A GET with the query string exactly as given."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(f"{sim.url}?{query}", encoded=True)) as resp,
    ):
        return resp.status, json.loads(await resp.text()), resp.headers


def listed(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["listasyncjobsresponse"].get("asyncjobs", []))


def enc(params: list[tuple[str, str]]) -> str:
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


# --- management-server id by release (spec §5) ------------------------------------------------


@pytest.mark.parametrize("version", ["4.19.0.0", "4.20.1.0"])
async def test_419_and_420_show_the_numeric_msid(version: str) -> None:
    async with running(version) as sim:
        [job] = await sim.create_jobs()
        status, text, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        assert status == 200
        # A JSON number, not a string holding digits.
        assert re.search(r'"managementserverid":\d{10,15}[,}]', text), text
        [listed_job] = listed(body)
        assert isinstance(listed_job["managementserverid"], int)
        assert "managementservername" not in listed_job
        _, _, query, _ = await get(sim, sim.admin, "queryAsyncJobResult", jobid=job)
        msid = query["queryasyncjobresultresponse"]["managementserverid"]
        assert msid == listed_job["managementserverid"]
        # The filter parameter still takes the UUID (listManagementServers' id).
        truth = await sim.job(job)
        assert truth is not None and UUID_RE.match(truth["managementserverid"])
        assert truth["msid"] == msid
        _, _, by_server, _ = await get(
            sim, sim.admin, "listAsyncJobs", managementserverid=truth["managementserverid"]
        )
        assert [j["jobid"] for j in listed(by_server)] == [job]
        # A response value cannot be passed back in: the numeric msid is no server's UUID.
        status, _, refused, _ = await get(
            sim, sim.admin, "listAsyncJobs", managementserverid=str(msid)
        )
        assert status == 431
        assert refused["listasyncjobsresponse"]["errortext"].startswith(
            "Unable to execute API command listasyncjobs due to invalid value. Invalid parameter "
            f"managementserverid value={msid} due to incorrect long value format"
        )


async def test_before_419_the_msid_parameter_is_unknown_and_ignored() -> None:
    async with running("4.18.1.0") as sim:
        jobs = await sim.create_jobs(2)
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs", managementserverid="nonsense")
        assert sorted(j["jobid"] for j in listed(body)) == sorted(jobs)


async def test_421_shows_the_server_uuid_and_name() -> None:
    async with running("4.21.0.0") as sim:
        await sim.create_jobs()
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        [job] = listed(body)
        assert UUID_RE.match(job["managementserverid"])
        assert job["managementservername"] == "ms-1"


async def test_releases_before_419_show_no_msid() -> None:
    async with running("4.18.1.0") as sim:
        await sim.create_jobs()
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        assert "managementserverid" not in listed(body)[0]


# --- VM work and pseudo jobs (spec §5, apache/cloudstack PR #6564) -------------------------------


@pytest.mark.parametrize(
    ("version", "internal_listed"),
    [("4.11.3.0", True), ("4.17.0.1", True), ("4.17.1.0", False), ("4.19.0.0", False)],
)
async def test_vm_work_and_pseudo_jobs_are_listed_only_before_4171(
    version: str, internal_listed: bool
) -> None:
    async with running(version) as sim:
        [api_job] = await sim.create_jobs(cmd="MigrateVolumeCmd")
        [work_job] = await sim.create_jobs(cmd="VmWorkMigrateVolume")
        [pseudo_job] = await sim.create_jobs(pseudo=True)
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        ids = [j["jobid"] for j in listed(body)]
        expected = [api_job, work_job, pseudo_job] if internal_listed else [api_job]
        assert ids == expected
        assert body["listasyncjobsresponse"]["count"] == len(expected)
        # Hidden from the list, still answered by id.
        for job in (work_job, pseudo_job):
            status, _, answer, _ = await get(sim, sim.admin, "queryAsyncJobResult", jobid=job)
            assert status == 200
            assert answer["queryasyncjobresultresponse"]["jobstatus"] == 0


# --- finished jobs listed until purge up to 4.11 (spec §5) ---------------------------------------


async def test_411_lists_finished_jobs_with_their_final_status_until_purge() -> None:
    async with running("4.11.3.0") as sim:
        done, failed, pending = await sim.create_jobs(3)
        await sim.finish(done)
        await sim.finish(failed, "failure", result_code=533)
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        by_id = {j["jobid"]: j for j in listed(body)}
        assert list(by_id) == [done, failed, pending]
        assert by_id[done]["jobstatus"] == 1 and "completed" in by_id[done]
        assert by_id[failed]["jobstatus"] == 2
        assert by_id[failed]["jobresult"]["errorcode"] == 533
        assert by_id[pending]["jobstatus"] == 0
        await sim.advance(1440 * 60 + 1)
        await sim.purge()
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        assert listed(body) == []  # all purged, the pending one too (older than expire)


async def test_412_and_later_list_pending_jobs_only() -> None:
    async with running("4.12.0.0") as sim:
        done, pending = await sim.create_jobs(2)
        await sim.finish(done)
        _, _, body, _ = await get(sim, sim.admin, "listAsyncJobs")
        assert [j["jobid"] for j in listed(body)] == [pending]


# --- maintenance (ApiServer.queueCommand, apache/cloudstack PR #10417) ---------------------------


async def test_maintenance_refuses_new_jobs_with_503_and_keeps_queries(
    simulator: SimHandle,
) -> None:
    [old] = await simulator.create_jobs()
    assert await simulator.control("POST", "/maintenance", {"enabled": True}) == {"enabled": True}
    status, _, body, headers = await get(simulator, simulator.ops, "stopVirtualMachine", id="vm-1")
    assert status == 503
    assert body == {
        "stopvirtualmachineresponse": {
            "uuidList": [],
            "errorcode": 503,
            "cserrorcode": 9999,
            "errortext": MAINTENANCE,
        }
    }
    assert headers["X-Description"] == MAINTENANCE
    # Reads still work: the list, the job, capabilities.
    status, _, body, _ = await get(simulator, simulator.admin, "listAsyncJobs")
    assert status == 200 and [j["jobid"] for j in listed(body)] == [old]
    status, _, _, _ = await get(simulator, simulator.admin, "queryAsyncJobResult", jobid=old)
    assert status == 200
    assert (await get(simulator, simulator.ops, "listCapabilities"))[0] == 200

    await simulator.control("POST", "/maintenance", {"enabled": False})
    status, _, body, _ = await get(simulator, simulator.ops, "stopVirtualMachine", id="vm-1")
    assert status == 200
    new = body["stopvirtualmachineresponse"]["jobid"]
    truth = await simulator.job(new)
    assert truth is not None
    assert truth["cmd"] == "org.apache.cloudstack.api.command.user.vm.StopVMCmd"
    assert truth["instance_id"] == "vm-1" and truth["status"] == 0


# --- control characters (ApiServer.checkCharacterInkParams) --------------------------------------


@pytest.mark.parametrize("char", ["\t", "\x00", "\x7f", "\x1b"])
async def test_control_characters_in_a_value_get_431(simulator: SimHandle, char: str) -> None:
    status, _, body, headers = await get(
        simulator, simulator.admin, "listAsyncJobs", keyword=f"Stop{char}VM"
    )
    text = "Received value containing illegal ASCII non-printable characters for parameter keyword"
    assert status == 431
    assert body == {
        "listasyncjobsresponse": {
            "uuidList": [],
            "errorcode": 431,
            "cserrorcode": 9999,
            "errortext": text,
        }
    }
    assert headers["X-Description"] == text


async def test_line_breaks_are_not_control_characters_and_signature_comes_first(
    simulator: SimHandle,
) -> None:
    for char in ("\n", "\r"):
        status, _, _, _ = await get(simulator, simulator.admin, "listAsyncJobs", keyword=char)
        assert status == 200
    # An unsigned request is refused as such before its values are looked at.
    status, body, _ = await get_raw(simulator, "command=listAsyncJobs&response=json&keyword=%09")
    assert status == 401
    assert body["listasyncjobsresponse"]["errorcode"] == 401


# --- repeated parameters (ApiServlet.processRequestInContext, utf8Fixup) -------------------------


async def test_a_repeated_query_parameter_is_read_by_its_last_value(simulator: SimHandle) -> None:
    [stop] = await simulator.create_jobs(cmd="StopVMCmd")
    [start] = await simulator.create_jobs(cmd="StartVMCmd")
    creds = simulator.admin
    base = {"command": "listAsyncJobs", "response": "json", "apiKey": creds.api_key}

    def query(sign_with: str) -> str:
        sig = signature({**base, "keyword": sign_with}, creds.secret_key)
        pairs = [*base.items(), ("keyword", "StopVM"), ("keyword", "StartVM")]
        return enc([*pairs, ("signature", sig)])

    status, body, _ = await get_raw(simulator, query("StartVM"))
    assert status == 200
    assert [j["jobid"] for j in listed(body)] == [start]  # used: the last value
    status, _, _ = await get_raw(simulator, query("StopVM"))
    assert status == 401  # signed: the last value too, so signing the first fails
    assert stop != start


async def test_the_query_wins_over_the_form_and_a_form_keeps_its_first_value(
    simulator: SimHandle,
) -> None:
    [stop] = await simulator.create_jobs(cmd="StopVMCmd")
    [start] = await simulator.create_jobs(cmd="StartVMCmd")
    creds = simulator.admin
    base = {"command": "listAsyncJobs", "response": "json", "apiKey": creds.api_key}
    form_sig = signature({**base, "keyword": "StopVM"}, creds.secret_key)
    form = [*base.items(), ("keyword", "StopVM"), ("keyword", "StartVM"), ("signature", form_sig)]
    async with aiohttp.ClientSession() as session:
        async with session.post(simulator.url, data=form) as resp:
            assert resp.status == 200
            assert [j["jobid"] for j in listed(await resp.json())] == [stop]
        query_sig = signature({**base, "keyword": "StartVM"}, creds.secret_key)
        url = URL(f"{simulator.url}?{enc([('keyword', 'StartVM')])}", encoded=True)
        body = [*base.items(), ("keyword", "StopVM"), ("signature", query_sig)]
        async with session.post(url, data=body) as resp:
            assert resp.status == 200
            assert [j["jobid"] for j in listed(await resp.json())] == [start]


# --- X-Description (ApiServlet: set for a ServerApiException only) -------------------------------


async def test_error_answers_carry_x_description_except_failed_verification(
    simulator: SimHandle,
) -> None:
    status, _, body, headers = await get(
        simulator, simulator.admin, "queryAsyncJobResult", jobid="no-such-job"
    )
    assert status == 431
    errortext = body["queryasyncjobresultresponse"]["errortext"]
    assert headers["X-Description"] == errortext
    status, _, _, headers = await get(simulator, simulator.ops, "stopVirtualMachine")
    assert status == 431 and headers["X-Description"].endswith("missing parameter id")
    # verifyRequest returning false is written without the header.
    status, body, headers = await get_raw(simulator, "command=listAsyncJobs&response=json")
    assert status == 401 and "X-Description" not in headers
    # Successful answers have none either.
    status, _, _, headers = await get(simulator, simulator.admin, "listAsyncJobs")
    assert status == 200 and "X-Description" not in headers
    # A refused login goes through the authenticator path, which writes no header either.
    ops = simulator.ops
    form = {"command": "login", "response": "json", "username": ops.username}
    form |= {"password": "not-" + ops.password, "domain": ops.domain}
    async with aiohttp.ClientSession() as session, session.post(simulator.url, data=form) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 531 and "X-Description" not in resp.headers
        assert body["loginresponse"]["errortext"].startswith("Failed to authenticate user ops")


async def test_x_description_of_a_value_with_line_breaks_or_non_ascii_stays_one_header(
    simulator: SimHandle,
) -> None:
    for jobid, shown in (("a\r\nX-Evil: 1", "a  X-Evil: 1"), ("é-1", "?-1")):
        status, _, body, headers = await get(
            simulator, simulator.admin, "queryAsyncJobResult", jobid=jobid
        )
        assert status == 431
        assert f"value={jobid} " in body["queryasyncjobresultresponse"]["errortext"]
        assert f"value={shown} " in headers["X-Description"]
        assert "X-Evil" not in headers


def test_cli_maintenance_flag_starts_in_maintenance() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudstack_simulator", "--listen", "127.0.0.1:0", "--maintenance"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"(http://\S+)/client/api", line)
        assert url, line
        with urllib.request.urlopen(url.group(1) + "/sim/maintenance") as resp:
            assert json.loads(resp.read()) == {"enabled": True}
        query = sign(
            {"command": "rebootVirtualMachine", "response": "json", "id": "vm-1"},
            "sim-ops-api-key",
            "sim-ops-secret-key",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url.group(1) + "/client/api?" + urllib.parse.urlencode(query))
        assert refused.value.code == 503
        assert refused.value.headers["X-Description"] == MAINTENANCE
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
