"""Reconnecting watchers: what every caller would otherwise write around the
raw WatchJob and WatchMyJobs streams, with the same rules as the TypeScript
client in web/.

- Reconnects after any failure or server shutdown, with capped exponential
  back-off and jitter, so a restarted server is not hit by every watcher in
  the same millisecond.
- Resumes from the last revision it handed out (``after_revision``, or the
  ``after_revisions`` map), so nothing is missed or applied twice: events
  that repeat a revision are dropped, and a hole makes it reconnect (the
  server then replays from its log).
- Stops, by raising, on errors that retrying cannot fix: a refused token
  (after one retry with a fresh token when the token is a callable), no
  access, bad arguments.
- Can be cancelled from another thread; iteration then ends.

Both are plain iterators, so a Django management command or a worker
thread can simply ``for update in client.watch_job(42): ...``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional

import grpc

from jobstatus.v1 import jobstatus_pb2 as pb

from .errors import JobStatusError, from_rpc_error

#: Codes that retrying cannot fix; everything else is retried.
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

TERMINAL = frozenset({pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_CANCELLED})


@dataclass(frozen=True)
class Backoff:
    """Capped exponential back-off with jitter: the n-th failure in a row
    waits about ``initial * multiplier**(n-1)`` seconds, at most ``maximum``,
    of which a ``jitter`` share is random."""

    initial: float = 0.25
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        share = min(1.0, max(0.0, self.jitter))
        return ceiling * (1 - share) + ceiling * share * rand()


@dataclass(frozen=True)
class JobUpdate:
    """One thing that happened to a watched job, in revision order."""

    #: The whole job after this update.
    job: pb.Job
    #: ``"snapshot"`` (the job as it is, at the start or to replace local
    #: state), ``"event"`` (a change), or ``"left"`` (WatchMyJobs: the caller
    #: lost access; ``job`` is the last state it saw).
    kind: str
    #: The change, for ``"event"``.
    event: Optional[pb.JobEvent] = None


class _Retry(Exception):
    """Raised inside a session to make the loop reconnect."""


class _Watch:
    """The shared loop of both watchers. Subclasses open the call and turn
    its messages into updates."""

    def __init__(self, metadata: Callable[[], list], token_is_callable: bool,
                 backoff: Backoff, on_status: Optional[Callable[[str, int], None]],
                 max_attempts: Optional[int]):
        self._metadata = metadata
        self._token_is_callable = token_is_callable
        self._backoff = backoff
        self._on_status = on_status
        self._max_attempts = max_attempts
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._call = None
        self._pending: list = []
        #: connecting | live | reconnecting | ended | cancelled | failed
        self.state = "connecting"
        self.attempt = 0
        self._auth_retried = False

    # Subclass hooks
    def _open(self, metadata: list):  # pragma: no cover - abstract
        raise NotImplementedError

    def _handle(self, message) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_clean_end(self) -> None:
        """The stream ended with OK."""

    # The loop
    def _report(self, state: str) -> None:
        self.state = state
        if self._on_status is not None:
            self._on_status(state, self.attempt)

    def _live(self) -> None:
        self.attempt = 0
        self._auth_retried = False
        if self.state != "live":
            self._report("live")

    def cancel(self) -> None:
        """Ends the watch; safe from any thread. Iteration stops."""
        self._cancelled.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if self.state not in ("ended", "failed"):
            self._report("cancelled")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    def __iter__(self) -> Iterator[JobUpdate]:
        return self

    def __next__(self) -> JobUpdate:
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._cancelled.is_set() or self.state in ("ended", "failed"):
                raise StopIteration
            with self._lock:
                if self._call is None:
                    self._call = self._open(self._metadata())
                call = self._call
            try:
                message = next(call)
            except StopIteration:
                self._drop_call()
                try:
                    self._on_clean_end()
                except _Retry:
                    self._wait_before_retry()
                    continue
                self._report("ended")
                raise
            except grpc.RpcError as error:
                self._drop_call()
                if self._cancelled.is_set():
                    raise StopIteration from None
                typed = from_rpc_error(error)
                if self._is_final(typed):
                    self._report("failed")
                    raise typed from None
                self._wait_before_retry()
                continue
            try:
                self._pending.extend(self._handle(message))
            except _Retry:
                with self._lock:
                    call, self._call = self._call, None
                if call is not None:
                    call.cancel()
                self._wait_before_retry()

    def _drop_call(self) -> None:
        with self._lock:
            self._call = None

    def _is_final(self, error: JobStatusError) -> bool:
        if error.code not in FINAL_CODES:
            return False
        if error.code == grpc.StatusCode.UNAUTHENTICATED and self._token_is_callable \
                and not self._auth_retried:
            # A token source may have a fresh token: try once more with it.
            self._auth_retried = True
            return False
        return True

    def _wait_before_retry(self) -> None:
        self.attempt += 1
        if self._max_attempts is not None and self.attempt > self._max_attempts:
            self._report("failed")
            raise JobStatusError(
                f"gave up after {self._max_attempts} attempts to reconnect",
                grpc.StatusCode.UNAVAILABLE,
            )
        self._report("reconnecting")
        self._cancelled.wait(self._backoff.delay(self.attempt))


class JobWatch(_Watch):
    """Iterates over one job's updates: a snapshot (unless resuming), then
    every change in revision order, across reconnects. Ends after a terminal
    change (COMPLETED or CANCELLED)."""

    def __init__(self, stub, job_id: int, after_revision: Optional[int], **common):
        super().__init__(**common)
        self._stub = stub
        self.job_id = job_id
        #: The last revision handed out; what a reconnect resumes from.
        self.revision: Optional[int] = after_revision
        #: The job as of ``revision`` (None until a snapshot or event).
        self.job: Optional[pb.Job] = None

    def _open(self, metadata: list):
        request = pb.WatchJobRequest(job_id=self.job_id)
        if self.revision is not None:
            request.after_revision = self.revision
        return self._stub.WatchJob(request, metadata=metadata)

    def _handle(self, message) -> list:
        kind = message.WhichOneof("kind")
        if kind == "snapshot":
            job = message.snapshot.job
            self.job, self.revision = job, job.revision
            self._live()
            return [JobUpdate(job=job, kind="snapshot")]
        if kind == "event":
            event = message.event
            if self.revision is not None and event.revision <= self.revision:
                return []  # already handed out
            if self.revision is not None and event.revision != self.revision + 1:
                raise _Retry(f"revision {event.revision} after {self.revision}")
            self.job, self.revision = event.job, event.revision
            self._live()
            return [JobUpdate(job=event.job, kind="event", event=event)]
        if kind == "heartbeat":
            self._live()
        return []

    def _on_clean_end(self) -> None:
        if self.job is None or self.job.status not in TERMINAL:
            # Only a terminal job ends its stream with OK.
            raise _Retry("the stream ended early")


class MyJobsWatch(_Watch):
    """Iterates over every job of the caller (a user token) on one stream:
    snapshots, then changes, per job in revision order, across reconnects.
    ``jobs`` holds each job's latest state. Never ends by itself."""

    def __init__(self, stub, after_revisions: Optional[Dict[int, int]], **common):
        super().__init__(**common)
        self._stub = stub
        #: Job id -> the last revision handed out.
        self.revisions: Dict[int, int] = dict(after_revisions or {})
        #: Job id -> the job as of that revision.
        self.jobs: Dict[int, pb.Job] = {}

    def _open(self, metadata: list):
        return self._stub.WatchMyJobs(
            pb.WatchMyJobsRequest(after_revisions=self.revisions), metadata=metadata
        )

    def _handle(self, message) -> list:
        kind = message.WhichOneof("kind")
        if kind == "snapshot":
            job = message.snapshot.job
            self.jobs[job.job_id] = job
            self.revisions[job.job_id] = job.revision
            return [JobUpdate(job=job, kind="snapshot")]
        if kind == "event":
            event = message.event
            known = self.revisions.get(event.job_id)
            if known is not None and event.revision <= known:
                return []
            if known is not None and event.revision != known + 1:
                raise _Retry(f"job {event.job_id}: revision {event.revision} after {known}")
            self.jobs[event.job_id] = event.job
            self.revisions[event.job_id] = event.revision
            return [JobUpdate(job=event.job, kind="event", event=event)]
        if kind == "left":
            job_id = message.left.job_id
            self.revisions.pop(job_id, None)
            last = self.jobs.pop(job_id, pb.Job(job_id=job_id))
            return [JobUpdate(job=last, kind="left")]
        if kind == "heartbeat":
            self._live()
        return []

    def _on_clean_end(self) -> None:
        raise _Retry("WatchMyJobs never ends by itself")
