"""The control and inspection API under `/sim/` (JSON, unauthenticated; see README.md).

Tests, the demo and benchmarks drive the simulator through it: create and end jobs, read the
truth of jobs, move the clock, restart, revoke keys, expire sessions, throttle, inject faults,
run a workload, read request counters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from cloudstack_simulator import catalog
from cloudstack_simulator.accounts import Account, Directory
from cloudstack_simulator.api import CloudStackApi
from cloudstack_simulator.clock import SimClock
from cloudstack_simulator.faults import Fault, FaultError, Faults
from cloudstack_simulator.responses import JSON_CONTENT_TYPE, OLD_JSON_CONTENT_TYPE
from cloudstack_simulator.store import PENDING, JobStore, Outcome, StoreError
from cloudstack_simulator.workload import Workload, WorkloadError, parse_mix

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_CREATE = 1_000_000


class ControlledSimulator(Protocol):
    """What the control API needs of the simulator, and nothing else."""

    store: JobStore
    directory: Directory
    clock: SimClock
    api: CloudStackApi
    workload: Workload
    faults: Faults
    json_content_type: str

    @property
    def url(self) -> str: ...

    @property
    def control_url(self) -> str: ...

    async def start_outage(self, seconds: float = 0.0) -> Fault: ...

    async def end_outage(self) -> None: ...

    async def clear_faults(self) -> int: ...


class BadRequest(Exception):
    """A control request that cannot be honoured: 400 with the message."""


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _number(data: dict[str, Any], key: str, default: float | None, *, minimum: float = 0) -> Any:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise BadRequest(f"{key}: a number")
    if value < minimum:
        raise BadRequest(f"{key}: at least {minimum}")
    return value


def _integer(data: dict[str, Any], key: str, default: int | None, *, minimum: int = 0) -> Any:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"{key}: an integer of at least {minimum}")
    return value


def _guard(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (BadRequest, StoreError, FaultError, WorkloadError) as exc:
            return _ok({"error": str(exc)}, status=400)

    return wrapped


class Control:
    """The /sim/ routes, one method each, acting on the simulator through `ControlledSimulator`."""

    def __init__(self, sim: ControlledSimulator) -> None:
        self.sim = sim

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every /sim/ route."""
        return [
            ("GET", "/sim", self.index),
            ("GET", "/sim/", self.index),
            ("GET", "/sim/accounts", self.accounts),
            ("POST", "/sim/accounts/{account}/enabled", self.enable_account),
            ("POST", "/sim/jobs", self.create_jobs),
            ("GET", "/sim/jobs", self.list_jobs),
            ("GET", "/sim/jobs/{jobid}", self.get_job),
            ("POST", "/sim/jobs/{jobid}/finish", self.finish_job),
            ("POST", "/sim/jobs/{jobid}/procstatus", self.set_procstatus),
            ("POST", "/sim/purge", self.purge),
            ("GET", "/sim/clock", self.clock),
            ("POST", "/sim/clock", self.clock),
            ("POST", "/sim/restart", self.restart),
            ("POST", "/sim/keys/revoke", self.revoke_key),
            ("POST", "/sim/sessions/expire", self.expire_sessions),
            ("GET", "/sim/throttle", self.throttle),
            ("POST", "/sim/throttle", self.throttle),
            ("GET", "/sim/faults", self.list_faults),
            ("POST", "/sim/faults", self.add_fault),
            ("DELETE", "/sim/faults", self.clear_faults),
            ("DELETE", "/sim/faults/{fault}", self.remove_fault),
            ("GET", "/sim/workload", self.workload),
            ("POST", "/sim/workload", self.workload),
            ("DELETE", "/sim/workload", self.workload),
            ("GET", "/sim/counters", self.counters),
            ("DELETE", "/sim/counters", self.counters),
            ("GET", "/sim/maintenance", self.maintenance),
            ("POST", "/sim/maintenance", self.maintenance),
            ("GET", "/sim/settings", self.settings),
            ("POST", "/sim/settings", self.settings),
        ]

    def add_to(self, app: web.Application) -> None:
        for method, path, handler in self.routes():
            app.router.add_route(method, path, _guard(handler))

    # -- helpers ----------------------------------------------------------------------------
    def _account_of(self, ref: Any) -> Account:
        if ref is None:
            return self.sim.directory.accounts[0]
        if not isinstance(ref, str):
            raise BadRequest("account: a name, name@/domain/path or UUID")
        account = self.sim.directory.account_by_ref(ref)
        if account is None:
            raise BadRequest(f"account: no account {ref!r:.64} (or the name is ambiguous)")
        return account

    def _job_of(self, request: web.Request) -> Any:
        job = self.sim.store.get(request.match_info["jobid"])
        if job is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "no such job (never created, or purged)"}),
                content_type="application/json",
            )
        return job

    def _outcome_of(self, data: dict[str, Any], default_shape: str) -> Outcome:
        shape = data.get("outcome", data.get("shape", default_shape))
        if not isinstance(shape, str):
            raise BadRequest("outcome: a shape name")
        code = _integer(data, "result_code", None)
        text = data.get("errortext")
        if text is not None and not isinstance(text, str):
            raise BadRequest("errortext: a string")
        return Outcome(shape, code, text)

    # -- routes -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return _ok(
            {
                "version": self.sim.store.version,
                "url": self.sim.url,
                "control_url": self.sim.control_url,
                "now": self.sim.clock.now(),
                "clock_offset": self.sim.clock.offset,
                "jobs": self.sim.store.stats(),
                "workload": self.sim.workload.describe(),
                "faults": self.sim.faults.describe(),
            }
        )

    async def accounts(self, request: web.Request) -> web.Response:
        return _ok({"accounts": self.sim.directory.describe()})

    async def create_jobs(self, request: web.Request) -> web.Response:
        data = await _body(request)
        count = _integer(data, "count", 1, minimum=1)
        if count > MAX_CREATE:
            raise BadRequest(f"count: at most {MAX_CREATE}")
        account = self._account_of(data.get("account"))
        user = self.sim.directory.first_user(account)
        pseudo = bool(data.get("pseudo", False))
        cmd_name = data.get("cmd", None if pseudo else "StopVMCmd")
        if cmd_name is not None and not isinstance(cmd_name, str):
            raise BadRequest("cmd: a command name or Java class name")
        if cmd_name is None:
            cmd, instance_type, result_object = None, None, "success"
        else:
            cmd, instance_type, result_object = catalog.class_for(cmd_name, account.is_root_admin)
        if "instance_type" in data:
            instance_type = data["instance_type"]
            if instance_type is not None and not isinstance(instance_type, str):
                raise BadRequest("instance_type: a string or null")
        instance_id = data.get("instance_id")
        if instance_id is not None and not isinstance(instance_id, str):
            raise BadRequest("instance_id: a string")
        job_id = data.get("jobid")
        if job_id is not None and (not isinstance(job_id, str) or count != 1):
            raise BadRequest("jobid: a string, with count 1")
        duration = _number(data, "duration", None)
        created_ago = _number(data, "created_ago", 0.0)
        proc_status = _integer(data, "proc_status", 0)
        outcome = self._outcome_of(data, "success")
        now = self.sim.clock.now()
        ids = []
        for _ in range(count):
            job = self.sim.store.create(
                user,
                cmd=cmd,
                instance_type=instance_type,
                instance_id=instance_id,
                duration=duration,
                outcome=outcome,
                created_ago=created_ago,
                proc_status=proc_status,
                job_uuid=job_id,
                result_object=result_object,
                now=now,
            )
            ids.append(job.uuid)
        return _ok({"jobids": ids}, status=201)

    async def list_jobs(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "all")
        if status not in ("all", "pending", "finished"):
            raise BadRequest("status: all, pending or finished")
        try:
            limit = int(request.query.get("limit", "1000"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise BadRequest("limit and offset: integers") from None
        self.sim.store.refresh()
        source = self.sim.store.pending if status == "pending" else self.sim.store.jobs
        selected = [j for j in source.values() if status != "finished" or j.status != PENDING][
            offset : offset + limit
        ]
        return _ok(
            {"stats": self.sim.store.stats(), "jobs": [self.sim.store.truth(j) for j in selected]}
        )

    async def get_job(self, request: web.Request) -> web.Response:
        return _ok(self.sim.store.truth(self._job_of(request)))

    async def finish_job(self, request: web.Request) -> web.Response:
        job = self._job_of(request)
        data = await _body(request)
        outcome = self._outcome_of(data, "success")
        self.sim.store.finish(job, outcome)
        return _ok(self.sim.store.truth(job))

    async def set_procstatus(self, request: web.Request) -> web.Response:
        job = self._job_of(request)
        data = await _body(request)
        value = _integer(data, "value", None, minimum=-(2**31))
        if value is None:
            raise BadRequest("value: the new jobprocstatus")
        self.sim.store.set_proc_status(job, value)
        return _ok(self.sim.store.truth(job))

    async def purge(self, request: web.Request) -> web.Response:
        self.sim.store.refresh()
        return _ok({"purged": self.sim.store.purge(), "jobs": self.sim.store.stats()})

    async def clock(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            data = await _body(request)
            seconds = _number(data, "advance", 0.0)
            self.sim.clock.advance(seconds)
            self.sim.store.refresh()
        return _ok({"now": self.sim.clock.now(), "offset": self.sim.clock.offset})

    async def restart(self, request: web.Request) -> web.Response:
        failed = self.sim.store.restart()
        sessions = self.sim.directory.expire_sessions()
        return _ok({"failed": failed, "sessions_expired": sessions})

    async def revoke_key(self, request: web.Request) -> web.Response:
        data = await _body(request)
        api_key = data.get("api_key")
        if api_key is None and data.get("account") is not None:
            account = self._account_of(data["account"])
            keys = [
                u.api_key for u in self.sim.directory.users if u.account is account and u.api_key
            ]
        elif isinstance(api_key, str):
            keys = [api_key]
        else:
            raise BadRequest("api_key (or account): whose key to revoke")
        revoked = sum(self.sim.directory.revoke_key(k) for k in keys)
        return _ok({"revoked": revoked})

    async def enable_account(self, request: web.Request) -> web.Response:
        account = self._account_of(request.match_info["account"])
        data = await _body(request)
        enabled = data.get("enabled")
        if not isinstance(enabled, bool):
            raise BadRequest("enabled: true or false")
        account.enabled = enabled
        return _ok({"account": account.name, "enabled": enabled})

    async def expire_sessions(self, request: web.Request) -> web.Response:
        return _ok({"expired": self.sim.directory.expire_sessions()})

    async def throttle(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            data = await _body(request)
            limit = _integer(data, "max", None, minimum=1)
            interval = _number(data, "interval", 1.0)
            if not interval:
                raise BadRequest("interval: a positive number of seconds")
            self.sim.api.set_throttle(limit, float(interval))
        return _ok({"max": self.sim.api.throttle.max, "interval": self.sim.api.throttle.interval})

    async def list_faults(self, request: web.Request) -> web.Response:
        return _ok({"faults": self.sim.faults.describe()})

    async def add_fault(self, request: web.Request) -> web.Response:
        data = await _body(request)
        if data.get("kind") == "outage":
            seconds = _number(data, "seconds", 0.0)
            fault = await self.sim.start_outage(float(seconds))
        else:
            fault = self.sim.faults.add(data)
        return _ok(fault.describe(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        return _ok({"cleared": await self.sim.clear_faults()})

    async def remove_fault(self, request: web.Request) -> web.Response:
        try:
            fault_id = int(request.match_info["fault"])
        except ValueError:
            raise BadRequest("fault id: an integer") from None
        outage = self.sim.faults.active("outage")
        if outage is not None and outage.id == fault_id:
            await self.sim.end_outage()
            return _ok({"removed": True})
        return _ok({"removed": self.sim.faults.remove(fault_id)})

    async def workload(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            await self.sim.workload.stop()
        elif request.method == "POST":
            data = await _body(request)
            seed = data.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise BadRequest("seed: an integer")
            accounts = data.get("accounts")
            if accounts is not None and (
                not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts)
            ):
                raise BadRequest("accounts: a list of account names")
            work_jobs = data.get("work_jobs")
            if work_jobs is not None and not isinstance(work_jobs, bool):
                raise BadRequest("work_jobs: true or false")
            self.sim.workload.configure(
                rate=_number(data, "rate", None),
                seed=seed,
                mix=parse_mix(data["mix"]) if "mix" in data else None,
                accounts=accounts,
                work_jobs=work_jobs,
            )
            prefill = _integer(data, "prefill", 0)
            if prefill:
                self.sim.workload.prefill(prefill)
            if data.get("running", True):
                self.sim.workload.start()
            else:
                await self.sim.workload.stop()
        return _ok(self.sim.workload.describe())

    async def counters(self, request: web.Request) -> web.Response:
        body = self.sim.api.counters.describe()
        if request.method == "DELETE":
            self.sim.api.counters.reset()
        return _ok(body)

    async def maintenance(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            data = await _body(request)
            enabled = data.get("enabled")
            if not isinstance(enabled, bool):
                raise BadRequest("enabled: true or false")
            self.sim.api.maintenance = enabled
        return _ok({"enabled": self.sim.api.maintenance})

    async def settings(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            data = await _body(request)
            content_type = data.get("json_content_type")
            if content_type is not None:
                if content_type not in ("application/json", "text/javascript"):
                    raise BadRequest("json_content_type: application/json or text/javascript")
                self.sim.json_content_type = (
                    JSON_CONTENT_TYPE
                    if content_type == "application/json"
                    else OLD_JSON_CONTENT_TYPE
                )
            if "expires_skew" in data:
                self.sim.api.expires_skew = float(_number(data, "expires_skew", 0.0, minimum=-1e9))
            if "api_job_duration" in data:
                self.sim.api.job_duration = float(_number(data, "api_job_duration", None))
            if "job_expire" in data:
                self.sim.store.expire = float(_number(data, "job_expire", None, minimum=1))
        return _ok(
            {
                "json_content_type": self.sim.json_content_type,
                "expires_skew": self.sim.api.expires_skew,
                "job_expire": self.sim.store.expire,
                "api_job_duration": self.sim.api.job_duration,
                "version": self.sim.store.version,
                "page_size": self.sim.api.page_size,
            }
        )
