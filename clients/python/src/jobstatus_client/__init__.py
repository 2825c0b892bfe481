"""Python client for jobstatus: live, durable job status over gRPC.

    from jobstatus_client import JobStatusClient, pb

    client = JobStatusClient("jobs.internal:50051", token=lambda: current_token())
    client.mark_complete(42, request_id=new_request_id())
    for update in client.watch_job(42):
        print(update.kind, pb.JobStatus.Name(update.job.status))

``pb`` is the generated ``jobstatus.v1`` module (messages and enums);
``jobstatus_client.errors`` has one exception per status code.
"""

from jobstatus.v1 import jobstatus_pb2 as pb

from . import errors
from .client import AdminClient, JobStatusClient, TokenSource, new_request_id
from .errors import JobStatusError
from .watch import Backoff, JobUpdate, JobWatch, MyJobsWatch

#: Shorthands for the two payment methods.
GCASH = pb.PAYMENT_METHOD_GCASH
CASH = pb.PAYMENT_METHOD_CASH

__all__ = [
    "AdminClient",
    "Backoff",
    "CASH",
    "GCASH",
    "JobStatusClient",
    "JobStatusError",
    "JobUpdate",
    "JobWatch",
    "MyJobsWatch",
    "TokenSource",
    "errors",
    "new_request_id",
    "pb",
]
