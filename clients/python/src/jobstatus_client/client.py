"""The client: one gRPC channel, a bearer token on every call, typed
exceptions instead of ``grpc.RpcError``, and reconnecting watchers.

The token is a string, or a callable that returns one: pass a callable when
tokens expire (a simplejwt access token lives five minutes by default), and
every call and every reconnect asks it for the current token.
"""

from __future__ import annotations

import uuid
from typing import Callable, Dict, Optional, Union

import grpc

from jobstatus.v1 import jobstatus_pb2 as pb
from jobstatus.v1 import jobstatus_pb2_grpc as pb_grpc

from .errors import from_rpc_error
from .watch import Backoff, JobWatch, MyJobsWatch

TokenSource = Union[str, Callable[[], str]]


def new_request_id() -> str:
    """A fresh idempotency key. Keep it to retry the same change safely."""
    return str(uuid.uuid4())


class _Calls:
    """Runs unary calls with the token and the timeout, raising typed errors."""

    def __init__(self, token: TokenSource, timeout: Optional[float]):
        self._token = token
        self._timeout = timeout

    def metadata(self) -> list:
        token = self._token() if callable(self._token) else self._token
        return [("authorization", f"Bearer {token}")]

    def __call__(self, method, request, timeout: Optional[float] = None):
        try:
            return method(
                request,
                metadata=self.metadata(),
                timeout=self._timeout if timeout is None else timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


def _optional(request, **fields):
    for name, value in fields.items():
        if value is not None:
            setattr(request, name, value)
    return request


class AdminClient:
    """JobAdminService, for the platform's backends (service tokens)."""

    def __init__(self, channel: grpc.Channel, calls: _Calls):
        self._stub = pb_grpc.JobAdminServiceStub(channel)
        self._calls = calls

    def create_job(self, job_id: int, client_id: str, worker_id: str = "",
                   request_id: Optional[str] = None) -> pb.Job:
        """Creates a job: OPEN, or IN_PROGRESS when a worker is given."""
        return self._calls(self._stub.CreateJob, pb.CreateJobRequest(
            job_id=job_id, client_id=client_id, worker_id=worker_id,
            request_id=request_id or ""))

    def assign_worker(self, job_id: int, worker_id: str, request_id: Optional[str] = None,
                      expected_revision: Optional[int] = None) -> pb.Job:
        """Assigns (or replaces) the worker; a replaced worker loses access."""
        return self._calls(self._stub.AssignWorker, _optional(
            pb.AssignWorkerRequest(job_id=job_id, worker_id=worker_id,
                                   request_id=request_id or ""),
            expected_revision=expected_revision))

    def cancel_job(self, job_id: int, reason: str, request_id: Optional[str] = None,
                   expected_revision: Optional[int] = None) -> pb.Job:
        """Cancels the job (any state but COMPLETED)."""
        return self._calls(self._stub.CancelJob, _optional(
            pb.CancelJobRequest(job_id=job_id, reason=reason, request_id=request_id or ""),
            expected_revision=expected_revision))

    def confirm_payment(self, job_id: int, request_id: Optional[str] = None,
                        expected_revision: Optional[int] = None) -> pb.Job:
        """The payment system confirms a GCASH payment: the job is COMPLETED."""
        return self._calls(self._stub.ConfirmPayment, _optional(
            pb.ConfirmPaymentRequest(job_id=job_id, request_id=request_id or ""),
            expected_revision=expected_revision))


class JobStatusClient:
    """A jobstatus client. ``target`` is ``host:port``.

    ``credentials``: ``grpc.ssl_channel_credentials(...)`` for a TLS server;
    clear text without. ``timeout``: seconds each unary call may take (sent
    as its deadline). ``channel``: use an existing channel instead.
    """

    def __init__(self, target: str = "", token: TokenSource = "", *,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 timeout: Optional[float] = 10.0,
                 channel: Optional[grpc.Channel] = None,
                 backoff: Backoff = Backoff()):
        if channel is None:
            channel = (grpc.secure_channel(target, credentials) if credentials
                       else grpc.insecure_channel(target))
        self.channel = channel
        self._token = token
        self._calls = _Calls(token, timeout)
        self._backoff = backoff
        self._stub = pb_grpc.JobServiceStub(channel)
        #: JobAdminService (needs a service token).
        self.admin = AdminClient(channel, self._calls)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # JobService
    def get_job(self, job_id: int) -> pb.Job:
        return self._calls(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def mark_complete(self, job_id: int, request_id: Optional[str] = None,
                      expected_revision: Optional[int] = None) -> pb.Job:
        """Worker: the job is done and waits for the client's approval."""
        return self._calls(self._stub.MarkComplete, _optional(
            pb.MarkCompleteRequest(job_id=job_id, request_id=request_id or ""),
            expected_revision=expected_revision))

    def approve_completion(self, job_id: int, payment_method: int,
                           request_id: Optional[str] = None,
                           expected_revision: Optional[int] = None) -> pb.Job:
        """Client: approves the work and picks ``PAYMENT_METHOD_GCASH`` or
        ``PAYMENT_METHOD_CASH``."""
        return self._calls(self._stub.ApproveCompletion, _optional(
            pb.ApproveCompletionRequest(job_id=job_id, payment_method=payment_method,
                                        request_id=request_id or ""),
            expected_revision=expected_revision))

    def request_changes(self, job_id: int, reason: str, request_id: Optional[str] = None,
                        expected_revision: Optional[int] = None) -> pb.Job:
        """Client: sends the job back to work, saying why."""
        return self._calls(self._stub.RequestChanges, _optional(
            pb.RequestChangesRequest(job_id=job_id, reason=reason, request_id=request_id or ""),
            expected_revision=expected_revision))

    def submit_payment_proof(self, job_id: int, proof_ref: str,
                             request_id: Optional[str] = None,
                             expected_revision: Optional[int] = None) -> pb.Job:
        """Client, CASH: records the proof of payment (an upload's reference)."""
        return self._calls(self._stub.SubmitPaymentProof, _optional(
            pb.SubmitPaymentProofRequest(job_id=job_id, proof_ref=proof_ref,
                                         request_id=request_id or ""),
            expected_revision=expected_revision))

    def confirm_payment(self, job_id: int, request_id: Optional[str] = None,
                        expected_revision: Optional[int] = None) -> pb.Job:
        """Worker, CASH, after a proof: the job is COMPLETED."""
        return self._calls(self._stub.ConfirmPayment, _optional(
            pb.ConfirmPaymentRequest(job_id=job_id, request_id=request_id or ""),
            expected_revision=expected_revision))

    # Watching
    def watch_job(self, job_id: int, after_revision: Optional[int] = None, *,
                  on_status: Optional[Callable[[str, int], None]] = None,
                  max_attempts: Optional[int] = None) -> JobWatch:
        """Every update of one job, in order, across reconnects (see
        :class:`~jobstatus_client.watch.JobWatch`). ``after_revision``: the
        last revision you applied, to resume instead of starting with a
        snapshot. ``on_status(state, attempt)`` hears connecting, live,
        reconnecting, ended, cancelled, failed."""
        return JobWatch(self._stub, job_id, after_revision, metadata=self._calls.metadata,
                        token_is_callable=callable(self._token), backoff=self._backoff,
                        on_status=on_status, max_attempts=max_attempts)

    def watch_my_jobs(self, after_revisions: Optional[Dict[int, int]] = None, *,
                      on_status: Optional[Callable[[str, int], None]] = None,
                      max_attempts: Optional[int] = None) -> MyJobsWatch:
        """Every job of the caller on one stream, across reconnects (see
        :class:`~jobstatus_client.watch.MyJobsWatch`)."""
        return MyJobsWatch(self._stub, after_revisions, metadata=self._calls.metadata,
                           token_is_callable=callable(self._token), backoff=self._backoff,
                           on_status=on_status, max_attempts=max_attempts)
