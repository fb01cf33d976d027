"""Azure failures as cloudhpc sees them: one plain line each, capacity and quota failures
told apart so that node sets back off exactly as they do locally."""

from __future__ import annotations

from typing import Any

from cloudhpc.errors import CloudHPCError

# error codes that mean "no capacity or no quota for this size now": back off, fail over
CAPACITY_CODES = {"SkuNotAvailable", "QuotaExceeded", "OperationNotAllowed",
                  "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
                  "OverconstrainedZonalAllocationRequest"}


class AzureError(CloudHPCError):
    """An Azure call that failed, with Azure's code and message."""

    def __init__(self, message: str, code: str = "", hint: str = "") -> None:
        super().__init__(message, hint)
        self.code = code

    @property
    def capacity(self) -> bool:
        return self.code in CAPACITY_CODES


def from_http(exc: Any, doing: str) -> AzureError:
    """An azure-core HttpResponseError as one line: what we did, Azure's code and message."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or str(getattr(exc, "message", exc))
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    hint = ""
    if code in CAPACITY_CODES:
        hint = "Azure has no capacity or quota for this size now: the node set backs off " \
               "and jobs may run on other node sets of the partition"
    elif code in ("AuthorizationFailed", "InvalidAuthenticationToken") and \
            "roleAssignments/write" in message:
        hint = ("the deployment gives the head's identity a role on the resource group, "
                "which the Contributor role cannot do: deploy as Owner, or with Contributor "
                "and User Access Administrator (or Role Based Access Control "
                "Administrator) on the group")
    elif code in ("AuthorizationFailed", "InvalidAuthenticationToken"):
        hint = "check `az login` and the identity's role on the resource group"
    return AzureError(f"{doing}: {code + ': ' if code else ''}{first}", code, hint)


def late_failure(exc: Any, doing: str) -> str:
    """One line for an azure-core error (azure.core.exceptions.AzureError) raised while
    Azure makes something in the background (a poller's result): Azure's answer, or the
    contact lost once the SDK's retries are spent."""
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError):
        return from_http(exc, doing).message
    first = (str(exc).strip().splitlines() or ["no message"])[0]
    return f"{doing}: lost contact with Azure while it was made ({type(exc).__name__}: {first})"
