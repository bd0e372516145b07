"""Typed CloudStack API errors, raised by the client and handled by the poller.

`code` is the value of the `code` label of cloudstack_api_requests_total: the HTTP/CloudStack
status, or "error" for transport failures and unreadable bodies. Messages never carry request
parameters, so no key, signature or session key can leak through them.
"""

from __future__ import annotations


class CloudStackError(Exception):
    """Base of every failure of one API call."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        command: str = "",
        errorcode: int | None = None,
        cserrorcode: int | None = None,
        errortext: str = "",
    ) -> None:
        super().__init__(message)
        self.command = command
        self.errorcode = errorcode
        self.cserrorcode = cserrorcode
        self.errortext = errortext
        if errorcode is not None:
            self.code = str(errorcode)


class APIError(CloudStackError):
    """The server answered with a CloudStack error body (or at least an error status)."""


class Unauthorized(APIError):
    """401: bad signature, unknown key, expired `expires`, disabled user, expired session."""


class Throttled(APIError):
    """429: the account's API rate limit; `retry_after` is the wait in seconds."""

    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ParameterError(APIError):
    """431 (and 430): a parameter the server refused."""


class JobNotFound(ParameterError):
    """431 on queryAsyncJobResult: the job was purged or never existed."""


class PermissionDenied(APIError):
    """531: account error, e.g. another account's job or a bad login."""


class LoginFailed(PermissionDenied):
    """531 to the session login: username, password or domain refused. A failure of the
    cloud's credentials, never of the job whose request needed the login."""


class ServerError(APIError):
    """530 and the other 5xx codes: the server failed."""


class TransportError(CloudStackError):
    """No usable HTTP exchange: connection refused or reset, TLS failure, timeout."""


class BadResponse(CloudStackError):
    """A body that cannot be read as the expected JSON (HTML from a proxy, XML, truncated...)."""
