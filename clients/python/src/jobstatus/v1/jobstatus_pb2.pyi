import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_OPEN: _ClassVar[JobStatus]
    JOB_STATUS_IN_PROGRESS: _ClassVar[JobStatus]
    JOB_STATUS_AWAITING_CLIENT_APPROVAL: _ClassVar[JobStatus]
    JOB_STATUS_AWAITING_PAYMENT: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]

class PaymentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_UNSPECIFIED: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_GCASH: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_CASH: _ClassVar[PaymentMethod]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_JOB_CREATED: _ClassVar[EventType]
    EVENT_TYPE_WORKER_ASSIGNED: _ClassVar[EventType]
    EVENT_TYPE_WORKER_MARKED_COMPLETE: _ClassVar[EventType]
    EVENT_TYPE_CLIENT_REQUESTED_CHANGES: _ClassVar[EventType]
    EVENT_TYPE_CLIENT_APPROVED_COMPLETION: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_PROOF_SUBMITTED: _ClassVar[EventType]
    EVENT_TYPE_PAYMENT_CONFIRMED: _ClassVar[EventType]
    EVENT_TYPE_JOB_CANCELLED: _ClassVar[EventType]

class ActorRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_ROLE_UNSPECIFIED: _ClassVar[ActorRole]
    ACTOR_ROLE_CLIENT: _ClassVar[ActorRole]
    ACTOR_ROLE_WORKER: _ClassVar[ActorRole]
    ACTOR_ROLE_SERVICE: _ClassVar[ActorRole]

class SnapshotReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_REASON_UNSPECIFIED: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_INITIAL: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_RESYNC: _ClassVar[SnapshotReason]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_OPEN: JobStatus
JOB_STATUS_IN_PROGRESS: JobStatus
JOB_STATUS_AWAITING_CLIENT_APPROVAL: JobStatus
JOB_STATUS_AWAITING_PAYMENT: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
PAYMENT_METHOD_UNSPECIFIED: PaymentMethod
PAYMENT_METHOD_GCASH: PaymentMethod
PAYMENT_METHOD_CASH: PaymentMethod
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_JOB_CREATED: EventType
EVENT_TYPE_WORKER_ASSIGNED: EventType
EVENT_TYPE_WORKER_MARKED_COMPLETE: EventType
EVENT_TYPE_CLIENT_REQUESTED_CHANGES: EventType
EVENT_TYPE_CLIENT_APPROVED_COMPLETION: EventType
EVENT_TYPE_PAYMENT_PROOF_SUBMITTED: EventType
EVENT_TYPE_PAYMENT_CONFIRMED: EventType
EVENT_TYPE_JOB_CANCELLED: EventType
ACTOR_ROLE_UNSPECIFIED: ActorRole
ACTOR_ROLE_CLIENT: ActorRole
ACTOR_ROLE_WORKER: ActorRole
ACTOR_ROLE_SERVICE: ActorRole
SNAPSHOT_REASON_UNSPECIFIED: SnapshotReason
SNAPSHOT_REASON_INITIAL: SnapshotReason
SNAPSHOT_REASON_RESYNC: SnapshotReason

class Job(_message.Message):
    __slots__ = ("job_id", "client_id", "worker_id", "status", "payment_method", "worker_marked_complete", "client_marked_complete", "awaiting_client_verification", "payment_proof_ref", "change_request_reason", "cancel_reason", "revision", "created_at", "updated_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    WORKER_MARKED_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MARKED_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    AWAITING_CLIENT_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_PROOF_REF_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REQUEST_REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    client_id: str
    worker_id: str
    status: JobStatus
    payment_method: PaymentMethod
    worker_marked_complete: bool
    client_marked_complete: bool
    awaiting_client_verification: bool
    payment_proof_ref: str
    change_request_reason: str
    cancel_reason: str
    revision: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[int] = ..., client_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., worker_marked_complete: _Optional[bool] = ..., client_marked_complete: _Optional[bool] = ..., awaiting_client_verification: _Optional[bool] = ..., payment_proof_ref: _Optional[str] = ..., change_request_reason: _Optional[str] = ..., cancel_reason: _Optional[str] = ..., revision: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("event", "job_id", "revision", "worker_marked_complete", "client_marked_complete", "awaiting_client_verification", "payment_method", "timestamp", "status", "actor_id", "actor_role", "request_id", "job", "reason")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WORKER_MARKED_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MARKED_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    AWAITING_CLIENT_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event: EventType
    job_id: int
    revision: int
    worker_marked_complete: bool
    client_marked_complete: bool
    awaiting_client_verification: bool
    payment_method: PaymentMethod
    timestamp: _timestamp_pb2.Timestamp
    status: JobStatus
    actor_id: str
    actor_role: ActorRole
    request_id: str
    job: Job
    reason: str
    def __init__(self, event: _Optional[_Union[EventType, str]] = ..., job_id: _Optional[int] = ..., revision: _Optional[int] = ..., worker_marked_complete: _Optional[bool] = ..., client_marked_complete: _Optional[bool] = ..., awaiting_client_verification: _Optional[bool] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[JobStatus, str]] = ..., actor_id: _Optional[str] = ..., actor_role: _Optional[_Union[ActorRole, str]] = ..., request_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class MarkCompleteRequest(_message.Message):
    __slots__ = ("job_id", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ApproveCompletionRequest(_message.Message):
    __slots__ = ("job_id", "payment_method", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    payment_method: PaymentMethod
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class RequestChangesRequest(_message.Message):
    __slots__ = ("job_id", "reason", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    reason: str
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class SubmitPaymentProofRequest(_message.Message):
    __slots__ = ("job_id", "proof_ref", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_REF_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    proof_ref: str
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., proof_ref: _Optional[str] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class ConfirmPaymentRequest(_message.Message):
    __slots__ = ("job_id", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    after_revision: int
    def __init__(self, job_id: _Optional[int] = ..., after_revision: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("job", "reason")
    JOB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job: Job
    reason: SnapshotReason
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., reason: _Optional[_Union[SnapshotReason, str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("revision", "server_time")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    revision: int
    server_time: _timestamp_pb2.Timestamp
    def __init__(self, revision: _Optional[int] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("snapshot", "event", "heartbeat")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    event: JobEvent
    heartbeat: Heartbeat
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., event: _Optional[_Union[JobEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class WatchMyJobsRequest(_message.Message):
    __slots__ = ("after_revisions",)
    class AfterRevisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    AFTER_REVISIONS_FIELD_NUMBER: _ClassVar[int]
    after_revisions: _containers.ScalarMap[int, int]
    def __init__(self, after_revisions: _Optional[_Mapping[int, int]] = ...) -> None: ...

class JobLeft(_message.Message):
    __slots__ = ("job_id", "revision", "cause")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    revision: int
    cause: EventType
    def __init__(self, job_id: _Optional[int] = ..., revision: _Optional[int] = ..., cause: _Optional[_Union[EventType, str]] = ...) -> None: ...

class WatchMyJobsResponse(_message.Message):
    __slots__ = ("snapshot", "event", "heartbeat", "left")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    event: JobEvent
    heartbeat: Heartbeat
    left: JobLeft
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., event: _Optional[_Union[JobEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., left: _Optional[_Union[JobLeft, _Mapping]] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("job_id", "client_id", "worker_id", "request_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    client_id: str
    worker_id: str
    request_id: str
    def __init__(self, job_id: _Optional[int] = ..., client_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AssignWorkerRequest(_message.Message):
    __slots__ = ("job_id", "worker_id", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    worker_id: str
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., worker_id: _Optional[str] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason", "request_id", "expected_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    reason: str
    request_id: str
    expected_revision: int
    def __init__(self, job_id: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...
