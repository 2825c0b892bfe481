"""Every status code the service sends arrives as its typed exception, and
watchers stop on what retrying cannot fix."""

import socket

import grpc
import pytest

from jobstatus_client import CASH, Backoff, JobStatusClient, errors, pb

from conftest import SERVICE, free_port, simplejwt, token

FAST = Backoff(initial=0.05, maximum=0.2)


def test_unary_calls_raise_typed_errors(server):
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    admin.admin.create_job(1, "client-1", "worker-1")
    client = JobStatusClient(server.addr, token("client-1"))
    worker = JobStatusClient(server.addr, token("worker-1"))
    stranger = JobStatusClient(server.addr, token("stranger-1"))

    with pytest.raises(errors.Unauthenticated, match="invalid token"):
        JobStatusClient(server.addr, "not-a-jwt").get_job(1)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        JobStatusClient(server.addr, token("client-1", ttl_secs=-60)).get_job(1)
    with pytest.raises(errors.PermissionDenied):
        stranger.get_job(1)
    with pytest.raises(errors.PermissionDenied):
        client.admin.create_job(2, "client-1")
    with pytest.raises(errors.InvalidArgument, match="job_id"):
        client.get_job(0)
    with pytest.raises(errors.NotFound):
        admin.get_job(999)
    with pytest.raises(errors.AlreadyExists):
        admin.admin.create_job(1, "client-1")
    with pytest.raises(errors.FailedPrecondition, match="in_progress"):
        client.approve_completion(1, CASH)
    with pytest.raises(errors.Aborted):
        worker.mark_complete(1, expected_revision=5)
    error = None
    try:
        client.approve_completion(1, pb.PAYMENT_METHOD_UNSPECIFIED)
    except errors.JobStatusError as e:
        error = e
    assert isinstance(error, errors.InvalidArgument)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and not error.retryable


def test_a_server_that_is_not_there_is_unavailable_and_retryable():
    nobody = JobStatusClient(f"127.0.0.1:{free_port()}", "token", timeout=2)
    with pytest.raises(errors.Unavailable) as caught:
        nobody.get_job(1)
    assert caught.value.retryable


def test_a_call_past_its_timeout_is_deadline_exceeded():
    # A peer that takes the connection and never answers: the call can only
    # end at its deadline, however fast the machine (a real server may
    # answer before even a microsecond's deadline is noticed).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = JobStatusClient(f"127.0.0.1:{port}", "token", timeout=0.3)
        with pytest.raises(errors.DeadlineExceeded) as caught:
            client.get_job(1)
        assert caught.value.retryable


def test_watches_stop_on_errors_retrying_cannot_fix(server):
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    admin.admin.create_job(5, "client-5", "worker-5")
    with pytest.raises(errors.PermissionDenied):
        next(iter(JobStatusClient(server.addr, token("stranger-5")).watch_job(5)))
    with pytest.raises(errors.Unauthenticated):
        next(iter(JobStatusClient(server.addr, "bad-token").watch_job(5)))
    with pytest.raises(errors.InvalidArgument):
        next(iter(JobStatusClient(server.addr, token("client-5")).watch_job(-1)))
    # A token callable gets one more try with a fresh token, then gives up.
    asked = []

    def source():
        asked.append(1)
        return "still-bad"

    with pytest.raises(errors.Unauthenticated):
        next(iter(JobStatusClient(server.addr, source, backoff=FAST).watch_job(5)))
    assert len(asked) == 2


def test_a_watch_over_the_limit_retries_then_gives_up_when_told(server_factory):
    server = server_factory("--max-watches-per-user", "1")
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    admin.admin.create_job(6, "client-6", "worker-6")
    client = JobStatusClient(server.addr, token("client-6"), backoff=FAST)
    first = client.watch_job(6)
    assert next(first).kind == "snapshot"
    second = client.watch_job(6, max_attempts=2)
    with pytest.raises(errors.JobStatusError, match="gave up after 2 attempts"):
        next(second)
    first.cancel()


def test_simplejwt_access_tokens_work_and_refresh_tokens_do_not(server):
    tokens = simplejwt()

    class User:
        id = 42
        pk = 42
        is_active = True

    access = str(tokens.AccessToken.for_user(User()))
    refresh = str(tokens.RefreshToken.for_user(User()))

    # The platform's service token, as the README mints it.
    def service_token():
        t = tokens.AccessToken()
        t["sub"] = "marketplace"
        t["scope"] = "jobstatus.admin"
        return str(t)

    admin = JobStatusClient(server.addr, token=service_token)
    # Users are named by their Django primary key, as a string.
    admin.admin.create_job(42, "42")
    job = JobStatusClient(server.addr, access).get_job(42)
    assert job.client_id == "42"
    with pytest.raises(errors.Unauthenticated, match="refresh tokens"):
        JobStatusClient(server.addr, refresh).get_job(42)
