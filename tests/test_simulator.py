"""The CloudStack simulator, observed over HTTP: authentication, every job shape, the rules of
listAsyncJobs and queryAsyncJobResult, purge, throttling, XML, faults, workload and the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import cs
import pytest

from cloudstack_simulator import Simulator, SimulatorConfig
from exporter.signing import format_expires, sign, signature

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import Credentials, SimHandle  # noqa: E402

pytest_plugins = ["simulator_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
BAD_CREDENTIALS = "unable to verify user credentials and/or request signature"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}-0700$")


async def call(
    sim: SimHandle,
    creds: Credentials | None,
    command: str,
    *,
    method: str = "GET",
    as_json: bool = True,
    parse: bool = True,
    lifetime: float | None = 300.0,
    raw: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, str, Any]:
    """One API request; (status, content type, JSON body or text).

    `raw` parameters are added after signing (to send a request exactly as given).
    """
    query = {"command": command, **{k: str(v) for k, v in params.items()}}
    if as_json:
        query["response"] = "json"
    if creds is not None:
        query = sign(query, creds.api_key, creds.secret_key, lifetime=lifetime)
    query.update(raw or {})
    async with aiohttp.ClientSession(cookies=cookies) as session:
        get = method == "GET"
        async with session.request(
            method, sim.url, params=query if get else None, data=None if get else query
        ) as resp:
            text = await resp.text()
            body = json.loads(text) if as_json and parse and text.startswith("{") else text
            return resp.status, resp.headers.get("Content-Type", ""), body


def listed(body: dict[str, Any]) -> list[str]:
    return [j["jobid"] for j in body["listasyncjobsresponse"].get("asyncjobs", [])]


# --- authentication ---------------------------------------------------------------------------


async def test_signed_request_accepted_and_tampered_one_refused(simulator: SimHandle) -> None:
    status, ctype, body = await call(simulator, simulator.admin, "listAsyncJobs")
    assert (status, ctype) == (200, "application/json; charset=UTF-8")
    assert body == {"listasyncjobsresponse": {}}

    signed = sign(
        {"command": "listAsyncJobs", "response": "json", "listall": "false"},
        simulator.admin.api_key,
        simulator.admin.secret_key,
    )
    signed["listall"] = "true"  # changed after signing
    status, _, body = await call(simulator, None, "listAsyncJobs", as_json=False, raw=signed)
    assert status == 401
    assert json.loads(body) == {
        "listasyncjobsresponse": {"uuidList": [], "errorcode": 401, "errortext": BAD_CREDENTIALS}
    }


async def test_post_form_is_treated_like_get(simulator: SimHandle) -> None:
    [job] = await simulator.create_jobs()
    status, _, body = await call(
        simulator, simulator.admin, "queryAsyncJobResult", method="POST", jobid=job
    )
    assert status == 200
    assert body["queryasyncjobresultresponse"]["jobid"] == job


async def test_unknown_key_wrong_secret_and_unsigned_requests_get_401(simulator: SimHandle) -> None:
    stranger = Credentials("no-such-key", "x", "x", "x", "x", "/")
    wrong_secret = Credentials(simulator.ops.api_key, "not-the-secret", "", "", "", "")
    for creds in (stranger, wrong_secret, None):
        status, _, body = await call(simulator, creds, "listAsyncJobs")
        assert status == 401, creds
        assert body["listasyncjobsresponse"]["errortext"] == BAD_CREDENTIALS
        assert "cserrorcode" not in body["listasyncjobsresponse"]


async def test_revoked_key_and_disabled_account_get_401(simulator: SimHandle) -> None:
    assert (await call(simulator, simulator.ops, "listAsyncJobs"))[0] == 200
    await simulator.revoke_key(api_key=simulator.ops.api_key)
    assert (await call(simulator, simulator.ops, "listAsyncJobs"))[0] == 401

    assert (await call(simulator, simulator.dev, "listAsyncJobs"))[0] == 200
    await simulator.set_enabled("dev", False)
    assert (await call(simulator, simulator.dev, "listAsyncJobs"))[0] == 401
    await simulator.set_enabled("dev", True)
    assert (await call(simulator, simulator.dev, "listAsyncJobs"))[0] == 200


async def test_signature_version_3_expiry(simulator: SimHandle) -> None:
    admin = simulator.admin

    def signed(**extra: str) -> dict[str, str]:
        params = {"command": "listAsyncJobs", "response": "json", "apiKey": admin.api_key, **extra}
        params["signature"] = signature(params, admin.secret_key)
        return params

    past = format_expires(time.time() - 60)
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    cases = {
        "expired": (signed(signatureVersion="3", expires=past), 401),
        "missing expires": (signed(signatureVersion="3"), 401),
        "unparseable": (signed(signatureVersion="3", expires="tomorrow"), 401),
        "Z form": (signed(signatureVersion="3", expires=future), 200),
        "+0000 form": (signed(signatureVersion="3", expires=format_expires(time.time() + 60)), 200),
        # Expiry is only checked when signatureVersion is exactly "3".
        "version 2 ignores expires": (signed(signatureVersion="2", expires=past), 200),
        "no version": (signed(expires=past), 200),
    }
    for name, (params, expected) in cases.items():
        status, _, _ = await call(simulator, None, "listAsyncJobs", as_json=False, raw=params)
        assert status == expected, name


async def test_unknown_command_is_401_errorresponse(simulator: SimHandle) -> None:
    status, _, body = await call(simulator, simulator.admin, "listZones")
    assert status == 401
    assert body == {
        "errorresponse": {"uuidList": [], "errorcode": 401, "errortext": BAD_CREDENTIALS}
    }


async def test_java_encoding_of_tilde_is_what_the_server_checks(simulator: SimHandle) -> None:
    # `~` is %7E for Java's URLEncoder; a client that leaves it bare computes another signature.
    admin = simulator.admin
    status, _, _ = await call(simulator, admin, "listAsyncJobs", keyword="a~b")
    assert status == 200
    params = {
        "command": "listAsyncJobs",
        "response": "json",
        "apiKey": admin.api_key,
        "keyword": "a~b",
    }
    naive = "&".join(f"{k}={v}" for k, v in sorted(params.items())).lower()
    params["signature"] = base64.b64encode(
        hmac.new(admin.secret_key.encode(), naive.encode(), hashlib.sha1).digest()
    ).decode()
    status, _, _ = await call(simulator, None, "listAsyncJobs", as_json=False, raw=params)
    assert status == 401


async def test_independent_cs_client(simulator: SimHandle) -> None:
    [pending] = await simulator.create_jobs(cmd="DeployVMCmd")
    [done] = await simulator.create_jobs(cmd="StopVMCmd")
    await simulator.finish(done, "success")
    client = cs.CloudStack(
        endpoint=simulator.url, key=simulator.admin.api_key, secret=simulator.admin.secret_key
    )

    listing = await asyncio.to_thread(client.listAsyncJobs, listall=True)
    assert listing["count"] == 1
    assert [j["jobid"] for j in listing["asyncjobs"]] == [pending]
    result = await asyncio.to_thread(client.queryAsyncJobResult, jobid=done)
    assert result["jobstatus"] == 1
    assert result["jobresult"] == {"virtualmachine": result["jobresult"]["virtualmachine"]}

    with pytest.raises(cs.CloudStackApiException) as caught:
        await asyncio.to_thread(client.queryAsyncJobResult, jobid="00000000-0000-4000-8000-0")
    assert caught.value.response.status_code == 431
    assert caught.value.error["errorcode"] == 431

    post_client = cs.CloudStack(
        endpoint=simulator.url,
        key=simulator.ops.api_key,
        secret=simulator.ops.secret_key,
        method="post",
    )
    assert await asyncio.to_thread(post_client.listAsyncJobs) == {}


# --- sessions ---------------------------------------------------------------------------------


async def login(
    sim: SimHandle, creds: Credentials, password: str | None = None
) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        data = {
            "command": "login",
            "response": "json",
            "username": creds.username,
            "password": password or creds.password,
            "domain": creds.domain,
        }
        resp = await session.post(sim.url, data=data)
        await resp.read()
        return resp


async def test_session_login_and_unsigned_calls(simulator: SimHandle) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from an IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        data = {
            "command": "login",
            "response": "json",
            "username": "ops",
            "password": "ops-password",
            "domain": "/Ops",
        }
        async with session.post(simulator.url, data=data) as resp:
            assert resp.status == 200
            answer = (await resp.json())["loginresponse"]
            assert {c.key for c in jar} >= {"JSESSIONID", "sessionkey"}
        key = answer["sessionkey"]
        assert answer["account"] == "ops" and answer["type"] == "0"

        query = {"command": "listAsyncJobs", "response": "json", "sessionkey": key}
        async with session.get(simulator.url, params=query) as resp:
            assert resp.status == 200
        # The cookie alone is not enough: the session key must come as a parameter.
        async with session.get(
            simulator.url, params={"command": "listAsyncJobs", "response": "json"}
        ) as resp:
            assert resp.status == 401

        async with session.post(simulator.url, data=data) as resp:
            key = (await resp.json())["loginresponse"]["sessionkey"]
        query["sessionkey"] = key
        await simulator.expire_sessions()
        async with session.get(simulator.url, params=query) as resp:
            assert resp.status == 401
            assert (await resp.json())["listasyncjobsresponse"]["errorcode"] == 401


async def test_bad_login_is_531_and_get_login_refused(simulator: SimHandle) -> None:
    resp = await login(simulator, simulator.ops, password="wrong")
    assert resp.status == 531
    status, _, body = await call(
        simulator, None, "login", username="ops", password="ops-password", domain="/Ops"
    )
    assert status == 405
    assert body["loginresponse"]["errorcode"] == 405


# --- job shapes -------------------------------------------------------------------------------


async def query(sim: SimHandle, jobid: str, creds: Credentials | None = None) -> tuple[int, Any]:
    status, _, body = await call(sim, creds or sim.admin, "queryAsyncJobResult", jobid=jobid)
    return status, body["queryasyncjobresultresponse"]


async def test_every_job_shape(simulator: SimHandle) -> None:
    ids = await simulator.create_jobs(7, cmd="DeployVMCmd", account="ops")
    pending, ok, failed, restart, queue, cancelled, text = ids
    await simulator.finish(ok, "success")
    await simulator.finish(failed, "failure", result_code=533, errortext="no capacity")
    await simulator.finish(restart, "restart")
    await simulator.finish(queue, "queue_cancel")
    await simulator.finish(cancelled, "cancelled")
    await simulator.finish(text, "text", result_code=530, errortext="boom")
    await simulator.set_procstatus(pending, 2)

    _, job = await query(simulator, pending)
    assert job["jobstatus"] == 0 and job["jobresultcode"] == 0 and job["jobprocstatus"] == 2
    assert not {"jobresult", "jobresulttype", "completed"} & set(job)
    assert job["cmd"] == "org.apache.cloudstack.api.command.user.vm.DeployVMCmd"
    assert job["jobinstancetype"] == "VirtualMachine" and job["jobinstanceid"]
    assert DATE_RE.match(job["created"])
    assert job["managementserverid"]

    _, job = await query(simulator, ok)
    assert (job["jobstatus"], job["jobresultcode"], job["jobresulttype"]) == (1, 0, "object")
    assert list(job["jobresult"]) == ["virtualmachine"]
    assert DATE_RE.match(job["completed"]) and "managementserverid" not in job

    _, job = await query(simulator, failed)
    assert (job["jobstatus"], job["jobresultcode"], job["jobresulttype"]) == (2, 533, "object")
    assert job["jobresult"] == {"errorcode": 533, "errortext": "no capacity"}

    _, job = await query(simulator, restart)
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 530)
    assert "jobresult" not in job and "jobresulttype" not in job and "completed" in job

    _, job = await query(simulator, queue)
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 0) and "jobresult" not in job

    _, job = await query(simulator, cancelled)
    assert job["jobstatus"] == 3

    _, job = await query(simulator, text)
    assert (job["jobresulttype"], job["jobresult"], job["jobresultcode"]) == ("text", "boom", 530)


async def test_command_classes_pseudo_and_work_jobs(simulator: SimHandle) -> None:
    [admin_job] = await simulator.create_jobs(cmd="StopVMCmd", account="admin")
    [pseudo] = await simulator.create_jobs(pseudo=True, account="admin")
    [work] = await simulator.create_jobs(cmd="VmWorkMigrateVolume", account="admin")
    _, job = await query(simulator, admin_job)
    assert job["cmd"] == "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin"
    _, job = await query(simulator, pseudo)
    assert not {"cmd", "jobinstancetype", "jobinstanceid"} & set(job)
    _, job = await query(simulator, work)
    assert job["cmd"] == "com.cloud.vm.VmWorkMigrateVolume"


async def test_unknown_job_is_431_and_other_accounts_job_531(simulator: SimHandle) -> None:
    status, job = await query(simulator, "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert status == 431
    assert job["cserrorcode"] == 9999
    assert job["errortext"] == (
        "Unable to execute API command queryasyncjobresult due to invalid value. Invalid "
        "parameter jobid value=1b4e28ba-2fa1-11d2-883f-0016d3cca427 due to incorrect long value "
        "format, or entity does not exist or due to incorrect parameter annotation for the "
        "field in api cmd class."
    )
    [ops_job] = await simulator.create_jobs(account="ops")
    status, body = await query(simulator, ops_job, simulator.dev)
    assert status == 531
    assert re.fullmatch(r"Account .* is not authorized to see job id=\d+", body["errortext"])
    assert (await query(simulator, ops_job, simulator.ops))[0] == 200
    assert (await query(simulator, ops_job, simulator.admin))[0] == 200


async def test_jobs_finish_by_themselves_when_their_time_comes(simulator: SimHandle) -> None:
    [job] = await simulator.create_jobs(duration=30, outcome="failure", result_code=534)
    assert (await query(simulator, job))[1]["jobstatus"] == 0
    await simulator.advance(31)
    _, answer = await query(simulator, job)
    assert (answer["jobstatus"], answer["jobresultcode"]) == (2, 534)
    truth = await simulator.job(job)
    assert truth is not None
    assert truth["completed"] - truth["created"] == pytest.approx(30)


async def test_restart_fails_pending_jobs_without_result(simulator: SimHandle) -> None:
    jobs = await simulator.create_jobs(3, account="ops")
    await simulator.finish(jobs[0], "success")
    assert (await simulator.restart())["failed"] == 2
    for job in jobs[1:]:
        _, answer = await query(simulator, job)
        assert (answer["jobstatus"], answer["jobresultcode"]) == (2, 530)
        assert "jobresult" not in answer
    assert (await query(simulator, jobs[0]))[1]["jobstatus"] == 1


# --- listAsyncJobs ----------------------------------------------------------------------------


async def test_list_shows_pending_only_oldest_first(simulator: SimHandle) -> None:
    jobs = await simulator.create_jobs(4)
    await simulator.finish(jobs[1], "success")
    _, _, body = await call(simulator, simulator.admin, "listAsyncJobs")
    assert listed(body) == [jobs[0], jobs[2], jobs[3]]
    assert body["listasyncjobsresponse"]["count"] == 3


async def test_listall_and_account_scoping(simulator: SimHandle) -> None:
    [admin_job] = await simulator.create_jobs(account="admin")
    [ops_job] = await simulator.create_jobs(account="ops")
    [dev_job] = await simulator.create_jobs(account="dev")
    admin, ops = simulator.admin, simulator.ops

    assert listed((await call(simulator, admin, "listAsyncJobs"))[2]) == [admin_job]
    everything = listed((await call(simulator, admin, "listAsyncJobs", listall="true"))[2])
    assert everything == [admin_job, ops_job, dev_job]
    # A normal user sees their own jobs, listall or not.
    assert listed((await call(simulator, ops, "listAsyncJobs", listall="true"))[2]) == [ops_job]

    accounts = {a["account"]: a for a in (await simulator.control("GET", "/accounts"))["accounts"]}
    ops_domain = accounts["ops"]["domainid"]
    status, _, body = await call(
        simulator, admin, "listAsyncJobs", account="ops", domainid=ops_domain
    )
    assert (status, listed(body)) == (200, [ops_job])
    # Without domainid the account is looked up in the caller's domain (ROOT): not there.
    status, _, body = await call(simulator, admin, "listAsyncJobs", account="ops")
    assert status == 431
    # domainid alone: that domain; isrecursive from ROOT: the whole tree.
    root = accounts["admin"]["domainid"]
    assert listed((await call(simulator, admin, "listAsyncJobs", domainid=ops_domain))[2]) == [
        ops_job
    ]
    assert listed((await call(simulator, admin, "listAsyncJobs", domainid=root))[2]) == [admin_job]
    assert (
        len(
            listed(
                (await call(simulator, admin, "listAsyncJobs", domainid=root, isrecursive="true"))[
                    2
                ]
            )
        )
        == 3
    )
    status, _, body = await call(
        simulator, ops, "listAsyncJobs", account="dev", domainid=accounts["dev"]["domainid"]
    )
    assert status == 531
    assert body["listasyncjobsresponse"]["cserrorcode"] == 4365


async def test_keyword_and_startdate(simulator: SimHandle) -> None:
    [old_stop] = await simulator.create_jobs(cmd="StopVMCmd", created_ago=7200)
    [new_stop] = await simulator.create_jobs(cmd="StopVMCmd")
    [deploy] = await simulator.create_jobs(cmd="DeployVMCmd")
    admin = simulator.admin
    assert listed((await call(simulator, admin, "listAsyncJobs", keyword="StopVM"))[2]) == [
        old_stop,
        new_stop,
    ]
    # SQL LIKE '%keyword%' on a case-insensitive collation, the keyword unescaped.
    for keyword in ("stopvm", "St_pVMC", "Stop%Cmd"):
        body = (await call(simulator, admin, "listAsyncJobs", keyword=keyword))[2]
        assert listed(body) == [old_stop, new_stop], keyword
    assert listed((await call(simulator, admin, "listAsyncJobs", keyword="St\\_p"))[2]) == []
    truth = await simulator.job(new_stop)
    assert truth is not None
    # The server's own date format, in its own time zone (-0700).
    status, _, body = await call(simulator, admin, "listAsyncJobs", startdate=truth["created_text"])
    assert (status, listed(body)) == (200, [new_stop, deploy])
    status, _, body = await call(simulator, admin, "listAsyncJobs", startdate="yesterday")
    assert status == 431


async def test_paging_rules(simulator: SimHandle) -> None:
    jobs = await simulator.create_jobs(12)
    admin = simulator.admin
    pages = []
    for page in (1, 2, 3):
        _, _, body = await call(simulator, admin, "listAsyncJobs", page=page, pagesize=5)
        assert body["listasyncjobsresponse"]["count"] == 12
        pages.extend(listed(body))
    assert pages == jobs
    _, _, body = await call(simulator, admin, "listAsyncJobs", page=4, pagesize=5)
    assert body == {"listasyncjobsresponse": {"count": 12}}

    status, _, body = await call(simulator, admin, "listAsyncJobs", page=1, pagesize=501)
    assert status == 431
    assert body["listasyncjobsresponse"]["errortext"] == (
        "Page size can't exceed max allowed page size value: 500"
    )
    assert (await call(simulator, admin, "listAsyncJobs", page=1))[0] == 431
    assert (await call(simulator, admin, "listAsyncJobs", pagesize=5))[0] == 431
    assert (await call(simulator, admin, "listAsyncJobs", page="x", pagesize=5))[0] == 431


async def test_default_page_is_500(simulator: SimHandle) -> None:
    await simulator.create_jobs(501)
    _, _, body = await call(simulator, simulator.admin, "listAsyncJobs")
    assert body["listasyncjobsresponse"]["count"] == 501
    assert len(body["listasyncjobsresponse"]["asyncjobs"]) == 500


# --- retention --------------------------------------------------------------------------------


async def test_purge_after_job_expire(simulator: SimHandle) -> None:
    expire = (await simulator.settings())["job_expire"]
    finished, unfinished = await simulator.create_jobs(2)
    await simulator.finish(finished, "success")
    await simulator.advance(expire - 10)
    assert (await query(simulator, finished))[0] == 200
    await simulator.advance(20)
    # Both are gone: the finished one after completion + expire, the other for being too old.
    assert (await query(simulator, finished))[0] == 431
    assert (await query(simulator, unfinished))[0] == 431
    assert await simulator.job(finished) is None


async def test_purge_now_applies_a_shorter_expiry(simulator: SimHandle) -> None:
    [job] = await simulator.create_jobs()
    await simulator.finish(job, "success")
    await simulator.settings(job_expire=60)
    before = (await simulator.purge())["jobs"]["purged"]
    await simulator.advance(61)
    assert (await simulator.purge())["jobs"]["purged"] == before + 1
    assert (await query(simulator, job))[0] == 431


# --- throttling -------------------------------------------------------------------------------


async def test_throttling_429_for_users_not_root_admins(simulator: SimHandle) -> None:
    await simulator.throttle(2, interval=60)
    codes = [(await call(simulator, simulator.ops, "listAsyncJobs"))[0] for _ in range(3)]
    assert codes == [200, 200, 429]
    async with aiohttp.ClientSession() as session:
        params = sign(
            {"command": "listAsyncJobs", "response": "json"},
            simulator.ops.api_key,
            simulator.ops.secret_key,
        )
        async with session.get(simulator.url, params=params) as resp:
            body = await resp.json()
            assert resp.status == 429 and "Retry-After" not in resp.headers
    text = body["listasyncjobsresponse"]["errortext"]
    wait = re.search(r"please retry after (\d+) ms\.$", text)
    assert wait is not None and 0 < int(wait.group(1)) <= 60_000
    assert all(
        [(await call(simulator, simulator.admin, "listAsyncJobs"))[0] == 200 for _ in range(5)]
    )
    await simulator.advance(61)
    assert (await call(simulator, simulator.ops, "listAsyncJobs"))[0] == 200


# --- XML and content types --------------------------------------------------------------------


async def test_xml_without_response_json(simulator: SimHandle) -> None:
    [job] = await simulator.create_jobs(cmd="DeployVMCmd")
    status, ctype, text = await call(simulator, simulator.admin, "listAsyncJobs", as_json=False)
    assert (status, ctype) == (200, "text/xml; charset=UTF-8")
    root = ET.fromstring(text)
    assert root.tag == "listasyncjobsresponse" and root.get("cloud-stack-version")
    assert root.findtext("count") == "1"
    assert root.findtext("asyncjobs/jobid") == job

    status, ctype, text = await call(
        simulator, simulator.admin, "queryAsyncJobResult", as_json=False, jobid="nope"
    )
    assert status == 431
    root = ET.fromstring(text)
    assert (root.tag, root.findtext("errorcode")) == ("queryasyncjobresultresponse", "431")


async def test_old_servers_text_javascript(simulator: SimHandle) -> None:
    await simulator.settings(json_content_type="text/javascript")
    status, ctype, body = await call(simulator, simulator.admin, "listAsyncJobs")
    assert (status, ctype, body) == (
        200,
        "text/javascript; charset=UTF-8",
        {"listasyncjobsresponse": {}},
    )


# --- faults -----------------------------------------------------------------------------------


async def test_outage_refuses_connections_until_cleared(simulator: SimHandle) -> None:
    await simulator.add_fault("outage")
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(simulator, simulator.admin, "listAsyncJobs")
    await simulator.clear_faults()
    assert (await call(simulator, simulator.admin, "listAsyncJobs"))[0] == 200


async def test_reset_and_latency_faults(simulator: SimHandle) -> None:
    await simulator.add_fault("reset")
    with pytest.raises(aiohttp.ClientError):
        await call(simulator, simulator.admin, "listAsyncJobs")
    await simulator.clear_faults()
    assert (await call(simulator, simulator.admin, "listAsyncJobs"))[0] == 200

    await simulator.add_fault("latency", seconds=40, commands=["listAsyncJobs"], count=1)
    timeout = aiohttp.ClientTimeout(total=0.3)
    params = sign(
        {"command": "listAsyncJobs", "response": "json"},
        simulator.admin.api_key,
        simulator.admin.secret_key,
    )
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(simulator.url, params=params) as resp:
                await resp.read()


async def test_answer_faults_are_scoped_and_counted(simulator: SimHandle) -> None:
    [job] = await simulator.create_jobs()
    await simulator.add_fault("proxy_502", commands=["listAsyncJobs"], count=2)
    for _ in range(2):
        status, ctype, text = await call(simulator, simulator.admin, "listAsyncJobs")
        assert status == 502 and ctype.startswith("text/html") and "Bad Gateway" in text
    assert (await query(simulator, job))[0] == 200  # other commands are not affected
    assert (await call(simulator, simulator.admin, "listAsyncJobs"))[0] == 200  # budget spent

    await simulator.add_fault("http_error", status=503, count=3)
    codes = [(await call(simulator, simulator.admin, "listAsyncJobs"))[0] for _ in range(4)]
    assert codes == [503, 503, 503, 200]

    for kind, check in (
        ("empty", lambda s, t: s == 200 and t == ""),
        ("not_json", lambda s, t: s == 200 and not t.startswith("{")),
        ("xml", lambda s, t: t.startswith("<?xml")),
        ("truncated", lambda s, t: t.startswith("{") and not t.endswith("}}")),
    ):
        await simulator.add_fault(kind, count=1)
        status, _, text = await call(simulator, simulator.admin, "listAsyncJobs", parse=False)
        assert check(status, text), kind


async def test_ill_typed_fields(simulator: SimHandle) -> None:
    jobs = await simulator.create_jobs(2)
    admin = simulator.admin
    expectations = {
        "jobstatus_abc": lambda r: r["asyncjobs"][0]["jobstatus"] == "abc",
        "created_yesterday": lambda r: r["asyncjobs"][0]["created"] == "yesterday",
        "cmd_null": lambda r: r["asyncjobs"][0]["cmd"] is None,
        "asyncjobs_not_list": lambda r: not isinstance(r["asyncjobs"], list),
        "count_string": lambda r: isinstance(r["count"], str),
        "entries_not_objects": lambda r: not isinstance(r["asyncjobs"][0], dict),
    }
    for kind, check in expectations.items():
        await simulator.add_fault(kind, count=1)
        status, _, body = await call(simulator, admin, "listAsyncJobs")
        assert status == 200 and check(body["listasyncjobsresponse"]), kind
    await simulator.add_fault("jobstatus_abc", commands=["queryAsyncJobResult"])
    assert (await query(simulator, jobs[0]))[1]["jobstatus"] == "abc"
    await simulator.clear_faults()
    assert (await query(simulator, jobs[0]))[1]["jobstatus"] == 0


# --- counters and workload --------------------------------------------------------------------


async def test_request_counters(simulator: SimHandle) -> None:
    await simulator.reset_counters()
    await call(simulator, simulator.ops, "listAsyncJobs")
    await call(simulator, simulator.ops, "listAsyncJobs")
    await call(simulator, simulator.admin, "queryAsyncJobResult", jobid="x")
    counters = await simulator.counters()
    assert counters["by_command"] == {"listAsyncJobs": 2, "queryAsyncJobResult": 1}
    assert counters["by_account"] == {"ops": 2, "admin": 1}
    assert counters["by_code"] == {"200": 2, "431": 1}
    await simulator.reset_counters()
    assert (await simulator.counters())["total"] == 0


async def _workload_jobs(seed: int) -> list[tuple[str, str, float | None]]:
    sim = Simulator(SimulatorConfig(seed=seed))
    await sim.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            url = sim.control_url
            async with session.post(
                url + "/workload", json={"seed": seed, "prefill": 30, "running": False}
            ) as resp:
                assert resp.status == 200
            async with session.get(url + "/jobs?status=pending") as resp:
                jobs = (await resp.json())["jobs"]
    finally:
        await sim.stop()
    return [(j["jobid"], j["cmd"], j["account"]) for j in jobs]


async def test_workload_is_reproducible_from_its_seed() -> None:
    first, again, other = await asyncio.gather(
        _workload_jobs(11), _workload_jobs(11), _workload_jobs(12)
    )
    assert len(first) == 30
    assert first == again
    assert first != other
    assert len({cmd for _, cmd, _ in first}) > 1


async def test_workload_creates_jobs_that_finish(simulator: SimHandle) -> None:
    mix = {"StopVMCmd": {"weight": 1, "median": 5, "sigma": 0.1, "failures": {"530": 0.5}}}
    await simulator.workload(rate=200, mix=mix, work_jobs=False)
    deadline = time.monotonic() + 10
    while (await simulator.control("GET", "/workload"))["created"] < 20:
        assert time.monotonic() < deadline, "the workload created no jobs"
        await asyncio.sleep(0.05)
    await simulator.stop_workload()
    await simulator.advance(3600)
    finished = await simulator.jobs("finished")
    assert finished and len(finished) == len(await simulator.jobs())
    assert {j["status_label"] for j in finished} == {"succeeded", "failed"}
    assert {j["result_code"] for j in finished if j["status"] == 2} == {530}


async def test_bad_control_requests_get_400(simulator: SimHandle, sim_session: Any) -> None:
    for path, body in (
        ("/jobs", {"count": 0}),
        ("/jobs", {"account": "nobody"}),
        ("/jobs", {"outcome": "exploded"}),
        ("/faults", {"kind": "meteor"}),
        ("/workload", {"mix": {"StopVMCmd": {"failures": {"530": 2}}}}),
    ):
        async with sim_session.post(simulator.control_url + path, json=body) as resp:
            assert resp.status == 400, (path, body)
            assert (await resp.json())["error"]


# --- command line -----------------------------------------------------------------------------


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        "accounts:\n"
        "  - {account: root, domain: /, type: admin, username: root, password: pw,\n"
        "     api_key: file-key, secret_key: file-secret}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudstack_simulator",
            "--listen",
            "127.0.0.1:0",
            "--accounts",
            str(accounts),
            "--timezone",
            "-0700",
            "--jobs",
            "3",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"(http://\S+/client/api)", line)
        assert url, line
        params = sign(
            {"command": "listAsyncJobs", "response": "json", "listall": "true"},
            "file-key",
            "file-secret",
        )
        with urllib.request.urlopen(url.group(1) + "?" + urllib.parse.urlencode(params)) as resp:
            body = json.loads(resp.read())
        assert body["listasyncjobsresponse"]["count"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "file-secret" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timezone", "Mars/Olympus"], "time zone"),
        (["--accounts", "/nonexistent/accounts.yaml"], "cannot read"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "cloudstack_simulator", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
