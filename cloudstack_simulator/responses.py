"""How the simulated server writes its answers: CloudStack's JSON and XML bodies and error
bodies (ExceptionResponse), with their content types.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
OLD_JSON_CONTENT_TYPE = "text/javascript; charset=UTF-8"  # what servers before 4.x sent
XML_CONTENT_TYPE = "text/xml; charset=UTF-8"

# cserrorcode values from CloudStack's CSExceptionErrorCode.
CS_SERVER_API = 9999  # a ServerApiException thrown on its own
CS_INVALID_PARAMETER = 4350  # InvalidParameterValueException
CS_PERMISSION_DENIED = 4365  # PermissionDeniedException
CS_CLOUD_AUTHENTICATION = 4410


class ApiFailure(Exception):
    """An error answer: HTTP status = errorcode, body = ExceptionResponse."""

    def __init__(
        self,
        errorcode: int,
        errortext: str,
        cserrorcode: int | None = None,
        *,
        response_name: str | None = None,
        described: bool = True,
    ) -> None:
        super().__init__(f"{errorcode}: {errortext}")
        self.errorcode = errorcode
        self.errortext = errortext
        self.cserrorcode = cserrorcode
        self.response_name = response_name
        # ApiServlet sets X-Description (the errortext) on a ServerApiException's answer only;
        # a failed verifyRequest or login is written without it.
        self.described = described

    def body(self, default_name: str) -> dict[str, Any]:
        inner: dict[str, Any] = {"uuidList": [], "errorcode": self.errorcode}
        if self.cserrorcode is not None:
            inner["cserrorcode"] = self.cserrorcode
        inner["errortext"] = self.errortext
        return {self.response_name or default_name: inner}


def to_json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _xml_value(name: str, value: Any, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            _xml_value(name, item, out)
        return
    out.append(f"<{name}>")
    if isinstance(value, dict):
        for key, item in value.items():
            _xml_value(key, item, out)
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    else:
        out.append(escape(str(value)))
    out.append(f"</{name}>")


def to_xml(body: dict[str, Any], version: str) -> bytes:
    """`{"xresponse": {...}}` as ApiResponseSerializer writes XML: one root, lists repeated."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    for name, inner in body.items():
        out.append(f"<{name} cloud-stack-version={quoteattr(version)}>")
        if isinstance(inner, dict):
            for key, value in inner.items():
                _xml_value(key, value, out)
        out.append(f"</{name}>")
    return "".join(out).encode("utf-8")
