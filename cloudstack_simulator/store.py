"""The async-job table of the simulated management server: lifecycle, purge and the queries
behind listAsyncJobs and queryAsyncJobResult.

Jobs finish lazily: each one may carry the simulated time at which it ends and how; every
access first settles the jobs whose time has come (a heap, so the cost is per finished job).
Pending jobs live in an insertion-ordered dict (insertion order is CloudStack's id order, i.e.
oldest first), so an unfiltered page is a slice and its count is a len().
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cloudstack_simulator import catalog
from cloudstack_simulator.accounts import Account, Domain, User
from cloudstack_simulator.clock import SimClock

PENDING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3
STATUS_LABELS = {
    PENDING: "pending",
    SUCCEEDED: "succeeded",
    FAILED: "failed",
    CANCELLED: "cancelled",
}

# How a job ends. `failure` carries a jobresult; `restart` (530) and `queue_cancel` (0) do not.
SHAPES = ("success", "failure", "restart", "queue_cancel", "cancelled", "text")


class StoreError(ValueError):
    """A control request the store cannot honour; the message says why."""


@dataclass(frozen=True)
class Outcome:
    shape: str = "success"
    result_code: int | None = None
    errortext: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise StoreError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r:.32}")


def like_pattern(keyword: str) -> re.Pattern[str]:
    """CloudStack filters `keyword` with SQL `cmd LIKE '%keyword%'`, the keyword unescaped, on
    MySQL's default case-insensitive collation: `%` and `_` are wildcards, `\\` escapes, and
    case does not matter."""
    parts = []
    chars = iter(keyword)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits or 0))
    return tuple(parts)


class SimJob:
    """One row of the job table."""

    __slots__ = (
        "account",
        "cmd",
        "completed",
        "created",
        "created_text",
        "due",
        "instance_id",
        "instance_type",
        "msid",
        "outcome",
        "proc_status",
        "request",
        "result",
        "result_code",
        "result_object",
        "result_type",
        "seq",
        "shape",
        "status",
        "user",
        "uuid",
    )

    def __init__(
        self,
        seq: int,
        job_uuid: str,
        cmd: str | None,
        instance_type: str | None,
        instance_id: str | None,
        user: User,
        created: float,
        created_text: str,
        due: float | None,
        outcome: Outcome,
        result_object: str,
        msid: str,
    ) -> None:
        self.seq = seq
        self.uuid = job_uuid
        self.cmd = cmd
        self.instance_type = instance_type
        self.instance_id = instance_id
        self.user = user
        self.account: Account = user.account
        self.created = created
        self.created_text = created_text
        self.due = due
        self.outcome = outcome
        self.result_object = result_object
        self.msid = msid
        self.status = PENDING
        self.result_code = 0
        self.proc_status = 0
        # The API request that submitted the job (what CloudStack keeps as cmdInfo, secrets
        # included); None for jobs the control API or the workload made.
        self.request: dict[str, str] | None = None
        self.result: Any = None
        self.result_type: str | None = None
        self.completed: float | None = None
        self.shape: str | None = None  # how it ended, once it has

    def __repr__(self) -> str:
        return f"SimJob({self.uuid}, {self.cmd}, status={self.status})"


class JobStore:
    """Every job the management server still knows, and the rules that change them."""

    def __init__(
        self,
        clock: SimClock,
        *,
        expire: float = 1440 * 60,
        version: str = "4.19.0.0",
        management_servers: Iterable[str] = ("ms-1",),
        seed: int | None = 0,
    ) -> None:
        self.clock = clock
        self.expire = expire
        self.version = version
        self._features = version_tuple(version)
        self._rng = random.Random(seed)
        self.management_servers = [
            (catalog_uuid(self._rng), name) for name in management_servers
        ] or [(catalog_uuid(self._rng), "ms-1")]
        self.pending: dict[str, SimJob] = {}
        # What listAsyncJobs can show, oldest first: the pending jobs, less VM work and pseudo
        # jobs from 4.17.1 (PR #6564), plus finished jobs until purge up to 4.11.
        self.listed: dict[str, SimJob] = {}
        self.listed_by_account: dict[Account, dict[str, SimJob]] = {}
        self.list_finished = self._features < (4, 12)
        self.list_internal = self._features < (4, 17, 1)
        self.jobs: dict[str, SimJob] = {}
        self._seq = itertools.count(1)
        self._due: list[tuple[float, int, SimJob]] = []
        self._purge_finished: list[tuple[float, int, SimJob]] = []
        self._purge_pending: list[tuple[float, int, SimJob]] = []
        self.purged = 0
        # Called with ("submit" | "complete", job) once a job is stored or its end committed.
        self.observers: list[Callable[[str, SimJob], None]] = []

    # -- creation --------------------------------------------------------------------------
    def create(
        self,
        user: User,
        *,
        cmd: str | None,
        instance_type: str | None = None,
        instance_id: str | None = None,
        duration: float | None = None,
        outcome: Outcome | None = None,
        created_ago: float = 0.0,
        proc_status: int = 0,
        job_uuid: str | None = None,
        result_object: str = "success",
        now: float | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SimJob:
        """Add a pending job; with a duration it finishes by itself that long after creation."""
        now = self.clock.now() if now is None else now
        if created_ago < 0:
            raise StoreError("created_ago must not be negative")
        if duration is not None and duration < 0:
            raise StoreError("duration must not be negative")
        created = now - created_ago
        seq = next(self._seq)
        job_uuid = job_uuid or catalog_uuid(self._rng)
        if job_uuid in self.jobs:
            raise StoreError(f"job {job_uuid} already exists")
        if instance_type is not None and instance_id is None:
            instance_id = catalog_uuid(self._rng)
        msid = self.management_servers[seq % len(self.management_servers)][0]
        job = SimJob(
            seq,
            job_uuid,
            cmd,
            instance_type,
            instance_id,
            user,
            created,
            self.clock.format(created),
            None if duration is None else created + duration,
            outcome or Outcome(),
            result_object,
            msid,
        )
        job.proc_status = proc_status
        job.request = dict(request) if request is not None else None
        self.jobs[job_uuid] = job
        self.pending[job_uuid] = job
        if self.list_internal or not is_internal(cmd):
            self.listed[job_uuid] = job
            self.listed_by_account.setdefault(job.account, {})[job_uuid] = job
        if job.due is not None:
            heapq.heappush(self._due, (job.due, seq, job))
        heapq.heappush(self._purge_pending, (created, seq, job))
        for observer in self.observers:
            observer("submit", job)
        return job

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self, now: float | None = None) -> None:
        """Settle what time has decided: jobs whose duration elapsed, then the purge rules."""
        now = self.clock.now() if now is None else now
        due = self._due
        while due and due[0][0] <= now:
            when, _, job = heapq.heappop(due)
            if job.status == PENDING and job.due == when:
                self.finish(job, job.outcome, when=when)
        self.purge(now)

    def finish(self, job: SimJob, outcome: Outcome, *, when: float | None = None) -> SimJob:
        """End a pending job the way `outcome` says."""
        if job.status != PENDING:
            raise StoreError(f"job {job.uuid} already finished")
        when = self.clock.now() if when is None else when
        code = outcome.result_code
        shape = outcome.shape
        if shape == "success":
            job.status, job.result_code, job.result_type = SUCCEEDED, 0, "object"
            job.result = catalog.success_result(job.result_object, job.instance_id, job.seq)
        elif shape == "failure":
            code = 530 if code is None else code
            text = outcome.errortext or catalog.error_text(code)
            job.status, job.result_code, job.result_type = FAILED, code, "object"
            job.result = {"errorcode": code, "errortext": text}
        elif shape == "text":
            code = 530 if code is None else code
            job.status, job.result_code, job.result_type = FAILED, code, "text"
            job.result = outcome.errortext or catalog.error_text(code)
        elif shape == "restart":
            job.status, job.result_code = FAILED, 530 if code is None else code
        elif shape == "queue_cancel":
            job.status, job.result_code = FAILED, 0 if code is None else code
        else:  # cancelled
            job.status, job.result_code = CANCELLED, 0 if code is None else code
            if outcome.errortext:
                job.result_type = "object"
                job.result = {"errorcode": job.result_code, "errortext": outcome.errortext}
        job.shape = shape
        job.completed = when
        job.due = None
        del self.pending[job.uuid]
        if not self.list_finished:
            self._unlist(job)
        heapq.heappush(self._purge_finished, (when, job.seq, job))
        for observer in self.observers:
            observer("complete", job)
        return job

    def set_proc_status(self, job: SimJob, value: int) -> None:
        """A running job's progress (AsyncJobManagerImpl.updateAsyncJobStatus: attach volume,
        uploads). Its `update` event is built before the change, so it carries the old
        values, as CloudStack's does."""
        if job.status != PENDING:
            raise StoreError(f"job {job.uuid} is finished: its processing status is final")
        for observer in self.observers:
            observer("update", job)
        job.proc_status = value

    def restart(self) -> int:
        """A management-server restart: every pending job fails with 530 and no jobresult."""
        self.refresh()
        now = self.clock.now()
        victims = list(self.pending.values())
        for job in victims:
            if job.status == PENDING:  # a work job may have been ended by its parent
                self.finish(job, Outcome("restart"), when=now)
        return len(victims)

    def purge(self, now: float | None = None) -> int:
        """Delete finished jobs `expire` after completion and unfinished ones older than that."""
        now = self.clock.now() if now is None else now
        cutoff = now - self.expire
        count = 0
        finished = self._purge_finished
        while finished and finished[0][0] <= cutoff:
            job = heapq.heappop(finished)[2]
            if self.jobs.get(job.uuid) is job:
                del self.jobs[job.uuid]
                self._unlist(job)
                count += 1
        unfinished = self._purge_pending
        while unfinished and unfinished[0][0] <= cutoff:
            job = heapq.heappop(unfinished)[2]
            if job.status == PENDING and self.jobs.get(job.uuid) is job:
                del self.jobs[job.uuid]
                del self.pending[job.uuid]
                self._unlist(job)
                job.due = None
                count += 1
        self.purged += count
        return count

    def _unlist(self, job: SimJob) -> None:
        if self.listed.pop(job.uuid, None) is not None:
            del self.listed_by_account[job.account][job.uuid]

    # -- queries ---------------------------------------------------------------------------
    def get(self, job_uuid: str) -> SimJob | None:
        self.refresh()
        return self.jobs.get(job_uuid)

    def list_pending(
        self,
        *,
        accounts: list[Account] | None = None,
        domain: Domain | None = None,
        recursive: bool = False,
        keyword: str | None = None,
        start: float | None = None,
        msid: str | None = None,
        offset: int = 0,
        limit: int = 500,
    ) -> tuple[int, list[SimJob]]:
        """(total matches, one page) of the jobs listAsyncJobs shows, oldest first."""
        self.refresh()
        if accounts is not None and len(accounts) == 1:
            source = self.listed_by_account.get(accounts[0], {})
            accounts = None
        else:
            source = self.listed
        checks: list[Callable[[SimJob], bool]] = []
        if accounts is not None:
            allowed = set(accounts)
            checks.append(lambda j: j.account in allowed)
        if domain is not None:
            if recursive:
                checks.append(lambda j: j.account.domain.path.startswith(domain.path))
            else:
                checks.append(lambda j: j.account.domain is domain)
        if keyword is not None:
            pattern = like_pattern(keyword)
            checks.append(lambda j: j.cmd is not None and pattern.search(j.cmd) is not None)
        if start is not None:
            checks.append(lambda j: j.created >= start)
        if msid is not None:
            checks.append(lambda j: j.msid == msid)
        if not checks:
            return len(source), list(itertools.islice(source.values(), offset, offset + limit))
        matches: Iterator[SimJob] = (j for j in source.values() if all(c(j) for c in checks))
        page: list[SimJob] = []
        total = 0
        end = offset + limit
        for job in matches:
            if offset <= total < end:
                page.append(job)
            total += 1
        return total, page

    # -- rendering -------------------------------------------------------------------------
    def response(self, job: SimJob) -> dict[str, Any]:
        """The job as AsyncJobResponse serialises it (null fields left out)."""
        out: dict[str, Any] = {"accountid": job.account.uuid, "userid": job.user.uuid}
        if self._features >= (4, 19):
            out["account"] = job.account.name
            out["domainid"] = job.account.domain.uuid
            out["domainpath"] = job.account.domain.display_path
        if job.cmd is not None:
            out["cmd"] = job.cmd
        out["jobstatus"] = job.status
        out["jobprocstatus"] = job.proc_status
        out["jobresultcode"] = job.result_code
        if job.result_type is not None:
            out["jobresulttype"] = job.result_type
        if job.result is not None:
            out["jobresult"] = job.result
        if job.instance_type is not None and job.instance_id is not None:
            out["jobinstancetype"] = job.instance_type
            out["jobinstanceid"] = job.instance_id
        if job.status == PENDING and self._features >= (4, 21):
            out["managementserverid"] = job.msid
            out["managementservername"] = self.server_name(job.msid)
        elif job.status == PENDING and self._features >= (4, 19):
            # 4.19 and 4.20 show the numeric msid (AsyncJobResponse's Long field).
            out["managementserverid"] = numeric_msid(job.msid)
        out["created"] = job.created_text
        if job.completed is not None:
            out["completed"] = self.clock.format(job.completed)
        out["jobid"] = job.uuid
        return out

    def server_name(self, msid: str) -> str:
        for server_id, name in self.management_servers:
            if server_id == msid:
                return name
        return ""

    def truth(self, job: SimJob) -> dict[str, Any]:
        """Everything the simulator knows about a job, for the control API."""
        return {
            "jobid": job.uuid,
            "id": job.seq,
            "cmd": job.cmd,
            "status": job.status,
            "status_label": STATUS_LABELS[job.status],
            "result_code": job.result_code,
            "result_type": job.result_type,
            "result": job.result,
            "shape": job.shape,
            "proc_status": job.proc_status,
            "instance_type": job.instance_type,
            "instance_id": job.instance_id,
            "account": job.account.name,
            "accountid": job.account.uuid,
            "domain": job.account.domain.path,
            "domainid": job.account.domain.uuid,
            "userid": job.user.uuid,
            "created": job.created,
            "created_text": job.created_text,
            "completed": job.completed,
            "completed_text": None if job.completed is None else self.clock.format(job.completed),
            "due": job.due,
            "planned": None if job.status != PENDING else vars_of(job.outcome),
            "managementserverid": job.msid,
            "msid": numeric_msid(job.msid),
            "api": self.response(job),  # what queryAsyncJobResult shows of it now
        }

    def stats(self) -> dict[str, int]:
        self.refresh()
        finished = len(self.jobs) - len(self.pending)
        return {
            "pending": len(self.pending),
            "finished": finished,
            "known": len(self.jobs),
            "purged": self.purged,
        }


def vars_of(outcome: Outcome) -> dict[str, Any]:
    return {
        "shape": outcome.shape,
        "result_code": outcome.result_code,
        "errortext": outcome.errortext,
    }


def is_internal(cmd: str | None) -> bool:
    """A pseudo job (no cmd) or a VM work job, which servers from 4.17.1 leave out of lists."""
    return cmd is None or cmd.startswith(catalog.VM_WORK_PACKAGE + ".VmWork")


def numeric_msid(server_uuid: str) -> int:
    """The server's msid as 4.19 and 4.20 show it: a 48-bit number (CloudStack derives it from
    a MAC address), fixed per server UUID."""
    return int(uuid.UUID(server_uuid).hex[:12], 16)


def catalog_uuid(rng: random.Random) -> str:
    """A version-4 UUID from a seeded generator, so runs with the same seed agree."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
