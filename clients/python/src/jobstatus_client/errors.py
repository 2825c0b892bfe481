"""Typed exceptions for jobstatus's gRPC status codes.

Every call raises a subclass of :class:`JobStatusError` instead of a bare
``grpc.RpcError``, so callers can catch what they can act on::

    try:
        client.approve_completion(job_id, PaymentMethod.CASH, request_id=rid)
    except FailedPrecondition as e:      # the job is not awaiting approval
        ...
    except Unavailable:                  # retry with the same request_id
        ...

The server's message (``e.message``) always says what to do.
"""

from __future__ import annotations

import grpc


class JobStatusError(Exception):
    """A call to jobstatus failed. ``code`` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: Whether trying again (with the same ``request_id``) may succeed.
    retryable: bool = False

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Unauthenticated(JobStatusError):
    """No token, a bad or expired one, or (on a stream) the token expired:
    get a fresh token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(JobStatusError):
    """The caller may not see or act on this job (or lost access to it)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(JobStatusError):
    """The request itself is wrong; the message says which field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(JobStatusError):
    """A service token named a job that does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(JobStatusError):
    """CreateJob with a job id that is taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(JobStatusError):
    """The action is not allowed in the job's current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(JobStatusError):
    """``expected_revision`` did not match: read the job and decide again."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(JobStatusError):
    """A limit was reached (too many open watches, a message too large); the
    message names it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(JobStatusError):
    """The server or its database cannot serve now, or it is shutting down:
    retry (with the same ``request_id`` for changes)."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(JobStatusError):
    """The call's timeout passed. A change may still have been committed:
    retry with the same ``request_id`` to learn the outcome."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class Internal(JobStatusError):
    """A bug on the server; details are in its log."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE = {
    cls.code: cls
    for cls in (
        Unauthenticated,
        PermissionDenied,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> JobStatusError:
    """The typed exception for a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, JobStatusError)
    return cls(details or code.name, code)
