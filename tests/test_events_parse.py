"""AsyncJobEvent bodies as CloudStack's RabbitMQ bus publishes them (cloudstack-api.md §9)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.events import MalformedEvent, event_type, parse_event
from exporter.jobs import JobStatus

VM = "51df4992-7374-41f7-ac03-6a4eee654b63"
JOB = "2e2b5a3c-9d8e-4c1b-a6f0-1f2e3d4c5b6a"
ACCOUNT = "6a1b2c3d-0000-4000-8000-00000000000a"
USER = "6a1b2c3d-0000-4000-8000-00000000000b"
CMD = "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin"
SECRETS = {
    "sessionkey": "s3ss10n-k3y",
    "signature": "c2lnbmF0dXJl",
    "apikey": "the-api-key",
    "expires": "2026-12-05T12:00:00+0000",
    "signatureversion": "3",
}


def gson(obj: dict[str, object]) -> bytes:
    """JSON the way Gson writes it: nulls left out, HTML-sensitive characters escaped."""
    text = json.dumps({k: v for k, v in obj.items() if v is not None}, separators=(",", ":"))
    for char in "=<>&'":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text.encode()


def body(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "jobId": JOB,
        "command": CMD,
        "commandEventType": "VM.STOP",
        "status": "IN_PROGRESS",
        "resultCode": "0",
        "processStatus": "0",
        "instanceType": "VirtualMachine",
        "instanceUuid": VM,
        "user": USER,
        "account": ACCOUNT,
        "cmdInfo": {**SECRETS, "id": VM, "ctxUserId": "2", "httpmethod": "GET"},
    }
    base.update(overrides)
    return base


def key(kind: str, resource: str = "VirtualMachine", uuid: str = VM) -> str:
    return f"management-server.AsyncJobEvent.{kind}.{resource}.{uuid}"


def test_a_submit_starts_a_pending_job_with_its_command_and_instance() -> None:
    event = parse_event(key("submit"), gson(body()))
    assert event.type == "submit"
    assert event.job_id == JOB
    assert event.status is JobStatus.PENDING
    assert (event.cmd_class, event.cmd) == (CMD, "StopVMCmd")
    assert (event.instance_type, event.instance_id) == ("VirtualMachine", VM)
    assert (event.account_uuid, event.user_uuid) == (ACCOUNT, USER)
    assert (event.result_code, event.error, event.result_object) == (0, "", "")


def test_a_successful_complete_names_the_result_object() -> None:
    result = {"id": VM, "name": "web-1", "class": "...UserVmResponse", "object": "virtualmachine"}
    event = parse_event(key("complete"), gson(body(status="SUCCEEDED", jobResult=result)))
    assert event.final and event.status is JobStatus.SUCCEEDED
    assert event.result_object == "virtualmachine"
    assert event.error == ""


def test_a_failed_complete_carries_the_error_code_and_text_with_markup_kept_as_text() -> None:
    text = "Unable to create <vm> & 'disk'=full"
    result = {
        "uuidList": [],
        "errorcode": 533,
        "errortext": text,
        "class": "org.apache.cloudstack.api.response.ExceptionResponse",
        "object": "null",
    }
    raw = gson(body(status="FAILED", resultCode="533", jobResult=result))
    assert b"\\u003c" in raw  # Gson's escaping really is in the test input
    event = parse_event(key("complete"), raw)
    assert event.status is JobStatus.FAILED
    assert (event.result_code, event.error, event.result_object) == (533, text, "")


def test_the_error_text_is_cut_like_the_apis() -> None:
    result = {"errorcode": 530, "errortext": "x" * 1000, "class": "E", "object": "null"}
    event = parse_event(key("complete"), gson(body(status="FAILED", jobResult=result)))
    assert len(event.error) == 256


def test_pre_4_16_bodies_have_string_cmdinfo_and_jobresult() -> None:
    failed = "org.apache.cloudstack.api.response.ExceptionResponse/null/" + json.dumps(
        {"uuidList": [], "errorcode": 530, "errortext": "host went away"}
    )
    raw = gson(
        body(status="FAILED", resultCode="530", jobResult=failed, cmdInfo=json.dumps(SECRETS))
    )
    event = parse_event(key("complete"), raw)
    assert (event.result_code, event.error) == (530, "host went away")
    ok = "org.apache.cloudstack.api.response.UserVmResponse/virtualmachine/" + json.dumps(
        {"id": VM}
    )
    event = parse_event(key("complete"), gson(body(status="SUCCEEDED", jobResult=ok)))
    assert event.result_object == "virtualmachine"


def test_commands_without_a_resource_have_no_instance_type() -> None:
    for word in ("None", "unknown"):
        raw = gson(body(instanceType=word, instanceUuid=None))
        event = parse_event(key("submit", word, "*"), raw)
        assert (event.instance_type, event.instance_id) == ("", "")


def test_account_info_is_read_when_cloudstack_sends_it() -> None:
    raw = gson(body(username="admin", accountname="ops", domainname="ROOT"))
    event = parse_event(key("submit"), raw)
    assert (event.account_name, event.domain_name) == ("ops", "ROOT")


def test_the_body_status_wins_over_the_routing_key_type() -> None:
    # From apache/cloudstack PR #12971 publishing is asynchronous: a `submit` may show the end.
    event = parse_event(key("submit"), gson(body(status="SUCCEEDED")))
    assert event.type == "submit" and event.final


def test_nothing_of_cmdinfo_survives_in_the_event() -> None:
    event = parse_event(key("submit"), gson(body()))
    text = repr(event)
    for secret in SECRETS.values():
        if len(secret) > 3:
            assert secret not in text


@pytest.mark.parametrize(
    ("routing_key", "raw", "message"),
    [
        (key("submit"), b"not json", "body: not JSON"),
        (key("submit"), b"[1, 2]", "body: expected a JSON object"),
        (key("submit"), gson(body(jobId=None)), "jobId: expected a job id"),
        (key("submit"), gson(body(status="RUNNING")), "status: unknown value 'RUNNING'"),
        (key("submit"), gson(body(status=1)), "status: unknown value 1"),
        (key("submit"), gson(body(resultCode="abc")), "resultCode: expected an integer string"),
        (key("submit"), gson(body(command=["x"])), "command: expected a string"),
        (key("complete"), gson(body(status="FAILED", jobResult=5)), "jobResult: expected"),
        ("management-server.ActionEvent.VM-STOP.VirtualMachine.x", b"{}", "routing key"),
        (key("removed"), gson(body()), "routing key: unknown event type 'removed'"),
        ("a.b.c", b"{}", "routing key"),
    ],
)
def test_unreadable_messages_are_refused_with_a_reason(
    routing_key: str, raw: bytes, message: str
) -> None:
    with pytest.raises(MalformedEvent, match="^" + message.replace("(", r"\(")):
        parse_event(routing_key, raw)


def test_event_type_reads_the_third_word() -> None:
    assert event_type(key("update")) == "update"


@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_a_malformed_event(raw: bytes) -> None:
    with contextlib.suppress(MalformedEvent):
        parse_event(key("complete"), raw)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "jobId",
                "status",
                "resultCode",
                "processStatus",
                "command",
                "jobResult",
                "instanceType",
                "instanceUuid",
                "account",
                "user",
                "cmdInfo",
            ]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=5), st.text()),
    )
)
def test_any_json_object_gives_an_event_or_a_malformed_event(obj: dict[str, object]) -> None:
    with contextlib.suppress(MalformedEvent):
        parse_event(key("complete"), json.dumps(obj).encode())
