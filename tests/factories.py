"""Raw API job objects as queryAsyncJobResult and listAsyncJobs return them
(cloudstack-api.md §4): a pending job has no jobresult, jobresulttype or completed, and a field
CloudStack would leave null is absent, as its JSON omits nulls."""

from __future__ import annotations

from typing import Any

START_VM = "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin"
CREATED = "2026-04-13T09:42:21+0000"


def api_job(
    jobid: Any = "5c7a3b1e-0000-4000-8000-000000000001",
    status: int = 0,
    *,
    cmd: str = START_VM,
    created: str = CREATED,
    **overrides: Any,
) -> dict[str, Any]:
    """A job object; `overrides` replace or add fields, and a None override drops the field
    (jobinstancetype=None, say, for a job with no instance)."""
    obj: dict[str, Any] = {
        "jobid": jobid,
        "jobstatus": status,
        "jobprocstatus": 0,
        "jobresultcode": 0,
        "cmd": cmd,
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": f"vm-{jobid}",
        "accountid": "acct-1",
        "userid": "user-1",
        "created": created,
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not None}
