"""The CloudStack API of the simulator: authentication (signatures, version-3 expiry, sessions),
throttling, and the commands listAsyncJobs, queryAsyncJobResult, listCapabilities, login and
logout, plus a few VM commands that start async jobs, answering as ApiServlet / ApiServer do.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudstack_simulator import catalog
from cloudstack_simulator.accounts import DOMAIN_ADMIN, NORMAL, Account, Directory, Domain, User
from cloudstack_simulator.clock import SimClock, parse_start_date, parse_tz_date
from cloudstack_simulator.responses import (
    CS_INVALID_PARAMETER,
    CS_PERMISSION_DENIED,
    CS_SERVER_API,
    ApiFailure,
)
from cloudstack_simulator.store import JobStore, Outcome, version_tuple
from exporter.signing import signature

# API commands that submit an async job (BaseAsyncCmd), and the command class each runs.
ASYNC_COMMANDS = {
    "startVirtualMachine": "StartVMCmd",
    "stopVirtualMachine": "StopVMCmd",
    "rebootVirtualMachine": "RebootVMCmd",
}
COMMANDS = (
    "listAsyncJobs",
    "listAccounts",
    "queryAsyncJobResult",
    "listCapabilities",
    "login",
    "logout",
    *ASYNC_COMMANDS,
)
# ApiServer.queueCommand's refusal while the server is in maintenance (apache/cloudstack #10417).
MAINTENANCE_TEXT = (
    "Maintenance or Shutdown has been initiated on this management server. Can not accept new jobs"
)
# ApiServer.CONTROL_CHARACTERS: C0 controls and DEL, except LF and CR.
CONTROL_CHARACTERS = re.compile("[\x00-\x09\x0b-\x0c\x0e-\x1f\x7f]")
BAD_CREDENTIALS = "unable to verify user credentials and/or request signature"
BAD_SESSION = "unable to verify user credentials"
SESSION_TIMEOUT = 1800  # seconds; the `timeout` of a login response
_INTEGER = re.compile(r"[+-]?[0-9]+")


def response_name(command: str) -> str:
    """The key of an answer: `<command lower>response`, `errorresponse` for unknown commands."""
    return f"{command.lower()}response" if command in COMMANDS else "errorresponse"


@dataclass
class Throttle:
    """CloudStack's api-rate-limit plugin: `max` calls per account per `interval` seconds."""

    max: int | None = None  # None: off (the default)
    interval: float = 1.0


class Counters:
    """Requests seen, by command, by account and by answer code."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.by_command: Counter[str] = Counter()
        self.by_account: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.total = 0

    def describe(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_command": dict(self.by_command),
            "by_account": dict(self.by_account),
            "by_code": dict(self.by_code),
        }


@dataclass
class Caller:
    user: User
    session_id: str | None = None

    @property
    def account(self) -> Account:
        return self.user.account


class CloudStackApi:
    """Turns one request's parameters into (status, body); raises ApiFailure for errors."""

    def __init__(
        self,
        *,
        store: JobStore,
        directory: Directory,
        clock: SimClock,
        page_size: int = 500,
    ) -> None:
        self.store = store
        self.directory = directory
        self.clock = clock
        self.page_size = page_size
        self.throttle = Throttle()
        self._windows: dict[Account, list[float]] = {}  # account -> [window end, calls]
        self.counters = Counters()
        self.expires_skew = 0.0  # seconds added to real time when checking `expires`
        self.maintenance = False  # refuse new async jobs with 503, as in maintenance/shutdown
        self.job_duration = 2.0  # seconds an API-submitted job runs before it succeeds

    # -- authentication --------------------------------------------------------------------
    def authenticate(
        self, command: str, params: Mapping[str, str], session_cookie: str | None
    ) -> Caller:
        """A session (cookie + sessionkey) or a signed request (ApiServer.verifyRequest)."""
        session = self.directory.sessions.get(session_cookie) if session_cookie else None
        if session is not None:
            key = params.get("sessionkey")
            if key is None or not secrets.compare_digest(
                key.encode(), session.session_key.encode()
            ):
                self.directory.sessions.pop(session.session_id, None)
                raise ApiFailure(401, BAD_SESSION, described=False)
            user = session.user
            if not (user.enabled and user.account.enabled):
                self.directory.sessions.pop(session.session_id, None)
                raise ApiFailure(401, BAD_SESSION, described=False)
            self._command_available(user, command)
            return Caller(user, session.session_id)
        return Caller(self._verify_signature(command, params))

    def _verify_signature(self, command: str, params: Mapping[str, str]) -> User:
        if command not in COMMANDS:
            raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        sig = api_key = version = expires = None
        for name in sorted(params):
            folded = name.lower()
            if folded == "signature":
                sig = params[name]
            elif folded == "apikey":
                api_key = params[name]
            elif folded == "signatureversion":
                version = params[name]
            elif folded == "expires":
                expires = params[name]
        if sig is None or api_key is None:
            raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        if version == "3":
            if expires is None:
                raise ApiFailure(401, BAD_CREDENTIALS, described=False)
            try:
                deadline = parse_tz_date(expires)
            except ValueError:
                raise ApiFailure(401, BAD_CREDENTIALS, described=False) from None
            if deadline < time.time() + self.expires_skew:
                raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        user = self.directory.user_by_key(api_key)
        if user is None or not (user.enabled and user.account.enabled):
            raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        self._command_available(user, command)
        if user.secret_key is None:
            raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        expected = signature(params, user.secret_key)
        if not secrets.compare_digest(sig.encode(), expected.encode()):
            raise ApiFailure(401, BAD_CREDENTIALS, described=False)
        return user

    def _command_available(self, user: User, command: str) -> None:
        if command not in COMMANDS:
            raise ApiFailure(
                401,
                f"The given command '{command}' either does not exist, is not available for user.",
                CS_SERVER_API,
            )
        self._check_rate(user.account)

    def _check_rate(self, account: Account) -> None:
        limit = self.throttle.max
        if limit is None or account.is_root_admin:
            return
        now = self.clock.now()
        window = self._windows.get(account)
        if window is None or now >= window[0]:
            window = self._windows[account] = [now + self.throttle.interval, 0]
        window[1] += 1
        if window[1] > limit:
            wait_ms = max(0, int((window[0] - now) * 1000))
            raise ApiFailure(
                429,
                "The given user has reached his/her account api limit, "
                f"please retry after {wait_ms} ms.",
                CS_SERVER_API,
            )

    def set_throttle(self, limit: int | None, interval: float) -> None:
        self.throttle = Throttle(limit, interval)
        self._windows.clear()

    # -- login / logout --------------------------------------------------------------------
    def login(self, params: Mapping[str, str]) -> tuple[dict[str, Any], str, str]:
        """(answer, session id, session key) or ApiFailure 531."""
        username = params.get("username", "")
        password = params.get("password", "")
        domain_path = params.get("domain") or "/"
        domain_id = params.get("domainid") or params.get("domainId")
        if domain_id:
            domain = self.directory.domain_by_uuid(domain_id)
            domain_path = domain.path if domain else "\0"  # no such domain: login fails
        user = self.directory.authenticate(username, password, domain_path)
        if user is None or not (user.enabled and user.account.enabled):
            raise ApiFailure(
                531,
                f"Failed to authenticate user {username} in domain {domain_path}; "
                "please provide valid credentials",
                response_name="loginresponse",
                # ApiServlet writes the authenticator's ServerApiException without the header.
                described=False,
            )
        session = self.directory.new_session(user, self.clock.now())
        account = user.account
        answer = {
            "loginresponse": {
                "timeout": str(SESSION_TIMEOUT),
                "sessionkey": session.session_key,
                "username": user.username,
                "userid": user.uuid,
                "domainid": account.domain.uuid,
                "type": str(account.type),
                "account": account.name,
                "firstname": user.username,
                "lastname": account.name,
                "registered": "false",
                "is2faenabled": "false",
                "is2faverified": "true",
            }
        }
        return answer, session.session_id, session.session_key

    # -- commands --------------------------------------------------------------------------
    @staticmethod
    def check_characters(params: Mapping[str, str]) -> None:
        """ApiServer.checkCharacterInkParams: 431 for a value with a control character."""
        for name, value in params.items():
            if name != "activationrule" and CONTROL_CHARACTERS.search(value):
                raise ApiFailure(
                    431,
                    "Received value containing illegal ASCII non-printable characters for "
                    f"parameter {name}",
                    CS_SERVER_API,
                )

    def execute(self, caller: Caller, command: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Run an authenticated command; `params` have lower-case names, as CloudStack's."""
        if command in ASYNC_COMMANDS:
            return self._submit(caller, command, params)
        if command == "listAsyncJobs":
            return self._list_async_jobs(caller.account, params)
        if command == "listAccounts":
            return self._list_accounts(caller.account, params)
        if command == "queryAsyncJobResult":
            return self._query_async_job_result(caller.account, params)
        if command == "logout":
            if caller.session_id is not None:
                self.directory.sessions.pop(caller.session_id, None)
            return {"logoutresponse": {"description": "success"}}
        return {
            "listcapabilitiesresponse": {
                "capability": {
                    "cloudstackversion": self.store.version,
                    "apilimitinterval": int(self.throttle.interval),
                    "apilimitmax": self.throttle.max or 0,
                    "allowusercreateprojects": True,
                }
            }
        }

    def _submit(self, caller: Caller, command: str, params: Mapping[str, str]) -> dict[str, Any]:
        """A BaseAsyncCmd: store the job and answer its jobid (ApiServer.queueCommand)."""
        if self.maintenance:
            raise ApiFailure(503, MAINTENANCE_TEXT, CS_SERVER_API)
        vm_id = params.get("id")
        if not vm_id:
            raise ApiFailure(
                431,
                f"Unable to execute API command {command.lower()} due to missing parameter id",
                CS_SERVER_API,
            )
        cmd, instance_type, result_object = catalog.class_for(
            ASYNC_COMMANDS[command], caller.account.is_root_admin
        )
        # No VM inventory: any id is taken as the job's instance.
        job = self.store.create(
            caller.user,
            cmd=cmd,
            instance_type=instance_type,
            instance_id=vm_id,
            duration=self.job_duration,
            outcome=Outcome(),
            result_object=result_object,
            request=params,
        )
        return {f"{command.lower()}response": {"jobid": job.uuid}}

    def _query_async_job_result(self, caller: Account, params: Mapping[str, str]) -> dict[str, Any]:
        job_id = params.get("jobid")
        if job_id is None:
            raise ApiFailure(
                431,
                "Unable to execute API command queryasyncjobresult due to missing parameter jobid",
                CS_SERVER_API,
            )
        job = self.store.get(job_id)
        if job is None:
            raise ApiFailure(
                431, _invalid_uuid("queryasyncjobresult", "jobid", job_id), CS_SERVER_API
            )
        owner = job.account
        if caller.type == NORMAL and owner is not caller:
            raise ApiFailure(
                531,
                f"Account {caller.java_str()} is not authorized to see job id={job.seq}",
                CS_PERMISSION_DENIED,
            )
        if caller.type == DOMAIN_ADMIN and not caller.domain.contains(owner.domain):
            raise ApiFailure(531, _no_access(caller, owner), CS_PERMISSION_DENIED)
        return {"queryasyncjobresultresponse": self.store.response(job)}

    def _list_async_jobs(self, caller: Account, params: Mapping[str, str]) -> dict[str, Any]:
        cmd = "listasyncjobs"
        page = _int_param(cmd, params, "page")
        pagesize = _int_param(cmd, params, "pagesize")
        listall = params.get("listall", "").lower() == "true"
        recursive = params.get("isrecursive", "").lower() == "true"
        domain: Domain | None = None
        if params.get("domainid") is not None:
            domain = self.directory.domain_by_uuid(params["domainid"])
            if domain is None:
                raise ApiFailure(
                    431, _invalid_uuid(cmd, "domainid", params["domainid"]), CS_SERVER_API
                )
        # The parameter exists from 4.19 (an older server ignores it, as any unknown one) and
        # takes a management server's UUID: an unknown one is refused like any entity UUID.
        known = version_tuple(self.store.version) >= (4, 19)
        msid = params.get("managementserverid") if known else None
        if msid is not None and msid not in dict(self.store.management_servers):
            raise ApiFailure(431, _invalid_uuid(cmd, "managementserverid", msid), CS_SERVER_API)
        start: float | None = None
        if params.get("startdate") is not None:
            try:
                start = parse_start_date(params["startdate"], self.clock.tz)
            except ValueError:
                raise ApiFailure(
                    431,
                    f"Unable to parse date {params['startdate']} for command {cmd}, "
                    "please pass dates in the format mentioned in the api documentation",
                    CS_SERVER_API,
                ) from None
        if page is None and pagesize is not None and pagesize != -1:
            raise ApiFailure(
                431, '"page" parameter is required when "pagesize" is specified', CS_SERVER_API
            )
        if pagesize is None and page is not None:
            raise ApiFailure(
                431, '"pagesize" parameter is required when "page" is specified', CS_SERVER_API
            )

        accounts, domain, recursive = self._scope(
            caller, params.get("account"), domain, recursive, listall
        )

        if pagesize is not None and pagesize > self.page_size:
            raise ApiFailure(
                431,
                f"Page size can't exceed max allowed page size value: {self.page_size}",
                CS_INVALID_PARAMETER,
            )
        if pagesize == -1 and page is not None:
            raise ApiFailure(
                431,
                "Can't specify page parameter when pagesize is -1 (Unlimited)",
                CS_INVALID_PARAMETER,
            )
        limit = self.page_size if pagesize is None else pagesize
        if limit == -1:
            offset, limit = 0, len(self.store.jobs)
        else:
            limit = max(limit, 0)
            offset = limit * (page - 1) if page is not None and page > 0 else 0
        total, jobs = self.store.list_pending(
            accounts=accounts,
            domain=domain,
            recursive=recursive,
            keyword=params.get("keyword"),
            start=start,
            msid=msid,
            offset=offset,
            limit=limit,
        )
        inner: dict[str, Any] = {}
        if total:
            inner["count"] = total
        if jobs:
            inner["asyncjobs"] = [self.store.response(j) for j in jobs]
        return {"listasyncjobsresponse": inner}

    def _list_accounts(self, caller: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """listAccounts (ListAccountsCmd): the accounts the caller may see, with the same
        scope rules as the job listing; `name` filters (no match is an empty answer)."""
        cmd = "listaccounts"
        listall = params.get("listall", "").lower() == "true"
        recursive = params.get("isrecursive", "").lower() == "true"
        domain: Domain | None = None
        if params.get("domainid") is not None:
            domain = self.directory.domain_by_uuid(params["domainid"])
            if domain is None:
                raise ApiFailure(
                    431, _invalid_uuid(cmd, "domainid", params["domainid"]), CS_SERVER_API
                )
        accounts, domain, recursive = self._scope(caller, None, domain, recursive, listall)
        if accounts is None:
            accounts = [
                a
                for a in self.directory.accounts
                if domain is None or a.domain is domain or (recursive and domain.contains(a.domain))
            ]
        name = params.get("name")
        if name is not None:
            accounts = [a for a in accounts if a.name.lower() == name.lower()]
        inner: dict[str, Any] = {}
        if accounts:
            inner["count"] = len(accounts)
            inner["account"] = [
                {
                    "id": a.uuid,
                    "name": a.name,
                    "accounttype": a.type,
                    "domainid": a.domain.uuid,
                    "domain": a.domain.name,
                    "domainpath": a.domain.display_path,
                    "state": "enabled",
                }
                for a in accounts
            ]
        return {"listaccountsresponse": inner}

    def _scope(
        self,
        caller: Account,
        account_name: str | None,
        domain: Domain | None,
        recursive: bool,
        listall: bool,
    ) -> tuple[list[Account] | None, Domain | None, bool]:
        """AccountManagerImpl.buildACLSearchParameters: whose jobs this caller may list."""
        if domain is not None and not self._may_see_domain(caller, domain):
            raise ApiFailure(
                531,
                f"Account {caller.java_str()} does not have permission to operate within "
                f"domain id={domain.uuid}",
                CS_PERMISSION_DENIED,
            )
        if account_name is not None:
            where = domain or caller.domain
            target = self.directory.find_account(account_name, where)
            if target is None:
                raise ApiFailure(
                    431,
                    f"Unable to find account {account_name} in domain id={where.uuid}",
                    CS_INVALID_PARAMETER,
                )
            if caller.type == NORMAL and target is not caller:
                raise ApiFailure(531, _no_access(caller, target), CS_PERMISSION_DENIED)
            if caller.type == DOMAIN_ADMIN and not caller.domain.contains(target.domain):
                raise ApiFailure(531, _no_access(caller, target), CS_PERMISSION_DENIED)
            return [target], None, False
        if caller.type == NORMAL:
            return [caller], None, False
        if domain is not None:
            return None, domain, recursive
        if not listall:
            return [caller], None, False
        if caller.type == DOMAIN_ADMIN:
            return None, caller.domain, True
        return None, None, False

    @staticmethod
    def _may_see_domain(caller: Account, domain: Domain) -> bool:
        if caller.is_root_admin:
            return True
        if caller.type == DOMAIN_ADMIN:
            return caller.domain.contains(domain)
        return caller.domain is domain


def _invalid_uuid(command: str, name: str, value: str) -> str:
    return (
        f"Unable to execute API command {command} due to invalid value. Invalid parameter "
        f"{name} value={value} due to incorrect long value format, or entity does not exist or "
        "due to incorrect parameter annotation for the field in api cmd class."
    )


def _no_access(caller: Account, target: Account) -> str:
    return (
        f"Caller {caller.java_str()} does not have permission to operate with resource "
        f"{target.java_str()}"
    )


def _int_param(command: str, params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    # Integer.valueOf: an optional sign and ASCII digits, nothing else.
    number = int(value) if _INTEGER.fullmatch(value) else None
    if number is None or not -(2**31) <= number < 2**31:
        raise ApiFailure(
            431,
            f"Unable to execute API command {command} due to invalid value {value} "
            f"for parameter {name}",
            CS_SERVER_API,
        )
    return number
