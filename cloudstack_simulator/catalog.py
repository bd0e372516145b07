"""What CloudStack's async commands look like: Java class names, instance types, result objects
and the error texts of failures.

Admin callers run the `...ByAdmin` classes where CloudStack has them; internal VM work jobs are
`com.cloud.vm.VmWork*` classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

API_PACKAGE = "org.apache.cloudstack.api.command"
VM_WORK_PACKAGE = "com.cloud.vm"


@dataclass(frozen=True)
class Command:
    name: str  # short class name, e.g. StopVMCmd
    user_package: str | None  # e.g. "user.vm"; None for admin-only commands
    admin_package: str  # where the admin class lives
    by_admin: bool  # whether a ...ByAdmin class exists
    instance_type: str | None
    result_object: str  # the key of a success `jobresult`
    work_job: str | None = None  # the VmWork* sub-job it runs through, if any

    def class_name(self, admin: bool) -> str:
        if admin or self.user_package is None:
            suffix = "ByAdmin" if self.by_admin else ""
            return f"{API_PACKAGE}.{self.admin_package}.{self.name}{suffix}"
        return f"{API_PACKAGE}.{self.user_package}.{self.name}"


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("DeployVMCmd", "user.vm", "admin.vm", True, "VirtualMachine", "virtualmachine"),
        Command(
            "StartVMCmd", "user.vm", "admin.vm", True, "VirtualMachine", "virtualmachine", "Start"
        ),
        Command(
            "StopVMCmd", "user.vm", "admin.vm", True, "VirtualMachine", "virtualmachine", "Stop"
        ),
        Command(
            "RebootVMCmd", "user.vm", "admin.vm", True, "VirtualMachine", "virtualmachine", "Reboot"
        ),
        Command("DestroyVMCmd", "user.vm", "admin.vm", True, "VirtualMachine", "virtualmachine"),
        Command(
            "MigrateVMCmd", None, "admin.vm", False, "VirtualMachine", "virtualmachine", "Migrate"
        ),
        Command(
            "CreateSnapshotCmd", "user.snapshot", "admin.snapshot", True, "Snapshot", "snapshot"
        ),
        Command(
            "DeleteSnapshotCmd", "user.snapshot", "user.snapshot", False, "Snapshot", "success"
        ),
        Command("CreateVolumeCmd", "user.volume", "admin.volume", True, "Volume", "volume"),
        Command(
            "MigrateVolumeCmd",
            "user.volume",
            "admin.volume",
            True,
            "Volume",
            "volume",
            "MigrateVolume",
        ),
        Command(
            "CreateTemplateCmd", "user.template", "admin.template", True, "Template", "template"
        ),
        Command("RestartNetworkCmd", "user.network", "user.network", False, "Network", "success"),
    )
}
# Common spellings people use for the same command.
ALIASES = {"MigrateVirtualMachineCmd": "MigrateVMCmd"}

ERROR_TEXTS: dict[int, str] = {
    530: "Internal error executing command, please contact your system administrator",
    431: "Unable to execute API command due to invalid value. Entity does not exist",
    531: "Account does not have permission to operate on this resource",
    532: "Maximum number of resources of type 'user_vm' for account has exceeded",
    533: "Unable to create a deployment for VM instance: insufficient server capacity",
    534: "Resource [Host:1] is unreachable: Host 1: Unable to reach the host agent",
    535: "Maximum number of resources of type 'volume' for account has been exceeded",
    536: "Resource is in use by another operation",
    537: "The range specified conflicts with an existing network rule",
}


def error_text(code: int) -> str:
    return ERROR_TEXTS.get(code, f"Job failed with error code {code}")


def resolve(cmd: str) -> Command | None:
    """A short name, an alias or a full class name -> its Command, if the catalogue knows it."""
    name = cmd.rpartition(".")[2]
    if name.endswith("ByAdmin"):
        name = name[: -len("ByAdmin")]
    return COMMANDS.get(ALIASES.get(name, name))


def class_for(cmd: str, admin: bool) -> tuple[str, str | None, str]:
    """(cmd class, instance type, result object) for a command named any way the caller likes.

    Unknown names are kept as given (a full class name) or put in the API package, so tests
    can invent commands; `VmWork...` names become internal work jobs.
    """
    short = cmd.rpartition(".")[2]
    if short.startswith("VmWork"):
        return (cmd if "." in cmd else f"{VM_WORK_PACKAGE}.{cmd}"), "VirtualMachine", "success"
    known = resolve(cmd)
    if known is not None and "." not in cmd:
        return known.class_name(admin), known.instance_type, known.result_object
    if known is not None:
        return cmd, known.instance_type, known.result_object
    if "." in cmd:
        return cmd, None, "success"
    return f"{API_PACKAGE}.user.{cmd}", None, "success"


def success_result(result_object: str, instance_id: str | None, seq: int) -> dict[str, Any]:
    """A small, plausible `jobresult` of a successful job."""
    if result_object == "success":
        return {"success": True}
    body: dict[str, Any] = {"id": instance_id or ""}
    if result_object == "virtualmachine":
        body.update(name=f"i-2-{seq}-VM", state="Running")
    elif result_object == "volume":
        body.update(name=f"vol-{seq}", state="Ready")
    elif result_object == "snapshot":
        body.update(name=f"snap-{seq}", state="BackedUp")
    else:
        body.update(name=f"{result_object}-{seq}")
    return {result_object: body}
