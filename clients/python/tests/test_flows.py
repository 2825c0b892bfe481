"""Whole job lives through the Python client against the real server: both
payment methods, watched by the client and the worker at once."""

import threading

from jobstatus_client import CASH, GCASH, Backoff, JobStatusClient, new_request_id, pb

from conftest import SERVICE, token, wait_until

FAST = Backoff(initial=0.05, maximum=0.5)


def clients(server, job_id):
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    client = JobStatusClient(server.addr, token(f"client-{job_id}"), backoff=FAST)
    worker = JobStatusClient(server.addr, token(f"worker-{job_id}"), backoff=FAST)
    admin.admin.create_job(job_id, f"client-{job_id}", f"worker-{job_id}")
    return admin, client, worker


def watch_in_background(watch):
    """Collects every update of `watch` on a thread; the list fills as they come."""
    updates = []

    def run():
        for update in watch:
            updates.append(update)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return updates, thread


def test_cash_flow_with_two_watchers_sees_every_change_once_in_order(server):
    _, client, worker = clients(server, 7)
    client_watch = client.watch_job(7)
    worker_watch = worker.watch_job(7)
    seen_by_client, client_thread = watch_in_background(client_watch)
    seen_by_worker, worker_thread = watch_in_background(worker_watch)
    wait_until(lambda: seen_by_client and seen_by_worker, what="both snapshots")

    worker.mark_complete(7)
    wait_until(lambda: len(seen_by_client) == 2, what="the client sees mark complete")
    approve = new_request_id()
    approved = client.approve_completion(7, CASH, request_id=approve)
    assert approved.status == pb.JOB_STATUS_AWAITING_PAYMENT
    # A retry with the same request id returns the original answer.
    again = client.approve_completion(7, CASH, request_id=approve)
    assert again.revision == approved.revision
    client.submit_payment_proof(7, "uploads/receipt-7.jpg")
    done = worker.confirm_payment(7)
    assert done.status == pb.JOB_STATUS_COMPLETED

    # A terminal change ends both watches by themselves.
    client_thread.join(timeout=10)
    worker_thread.join(timeout=10)
    assert not client_thread.is_alive() and not worker_thread.is_alive()
    for seen in (seen_by_client, seen_by_worker):
        assert [u.kind for u in seen] == ["snapshot"] + ["event"] * 4
        assert [u.job.revision for u in seen] == [1, 2, 3, 4, 5]
        assert [u.event.event for u in seen[1:]] == [
            pb.EVENT_TYPE_WORKER_MARKED_COMPLETE,
            pb.EVENT_TYPE_CLIENT_APPROVED_COMPLETION,
            pb.EVENT_TYPE_PAYMENT_PROOF_SUBMITTED,
            pb.EVENT_TYPE_PAYMENT_CONFIRMED,
        ]
        assert seen[2].job.payment_method == pb.PAYMENT_METHOD_CASH
        assert seen[3].job.payment_proof_ref == "uploads/receipt-7.jpg"
        assert seen[-1].job.status == pb.JOB_STATUS_COMPLETED
    assert client_watch.state == "ended" and worker_watch.state == "ended"


def test_gcash_flow_is_confirmed_by_the_payment_service(server):
    admin, client, worker = clients(server, 8)
    seen, thread = watch_in_background(worker.watch_job(8))
    wait_until(lambda: seen, what="the snapshot")
    worker.mark_complete(8)
    client.approve_completion(8, GCASH)
    confirmed = admin.admin.confirm_payment(8)
    assert confirmed.status == pb.JOB_STATUS_COMPLETED
    thread.join(timeout=10)
    assert [u.job.revision for u in seen] == [1, 2, 3, 4]
    last = seen[-1].event
    assert last.event == pb.EVENT_TYPE_PAYMENT_CONFIRMED
    assert last.actor_role == pb.ACTOR_ROLE_SERVICE


def test_watch_my_jobs_sees_jobs_join_change_and_leave(server):
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    worker = JobStatusClient(server.addr, token("worker-m"), backoff=FAST)
    watch = worker.watch_my_jobs()
    seen, thread = watch_in_background(watch)
    wait_until(lambda: watch.state == "live", what="the stream to be live")
    admin.admin.create_job(21, "client-m", "worker-m")
    wait_until(lambda: 21 in watch.jobs, what="job 21 joins")
    admin.admin.create_job(22, "client-m", "worker-m")
    wait_until(lambda: 22 in watch.jobs, what="job 22 joins")
    worker.mark_complete(22)
    wait_until(lambda: watch.revisions.get(22) == 2, what="the change")
    admin.admin.assign_worker(21, "worker-other")
    wait_until(lambda: 21 not in watch.jobs, what="job 21 leaves")
    watch.cancel()
    thread.join(timeout=10)
    assert [(u.kind, u.job.job_id) for u in seen] == [
        ("snapshot", 21), ("snapshot", 22), ("event", 22), ("left", 21)
    ]
    assert watch.state == "cancelled"


def test_the_demo_example_runs_against_a_dev_style_job(server):
    """examples/demo.py, as the README tells a newcomer to run it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    admin.admin.create_job(1, "client-alice", "worker-bob")
    example = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
    run = subprocess.run(
        [sys.executable, str(example)],
        env={**os.environ, "JOBSTATUS_ADDRESS": server.addr,
             "CLIENT_TOKEN": token("client-alice"), "WORKER_TOKEN": token("worker-bob")},
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "revision 1: snapshot -> JOB_STATUS_IN_PROGRESS",
        "revision 2: EVENT_TYPE_WORKER_MARKED_COMPLETE -> JOB_STATUS_AWAITING_CLIENT_APPROVAL",
        "revision 3: EVENT_TYPE_CLIENT_APPROVED_COMPLETION -> JOB_STATUS_AWAITING_PAYMENT",
    ]
    # A second run finds the job moved on and says how to start over.
    again = subprocess.run(
        [sys.executable, str(example)],
        env={**os.environ, "JOBSTATUS_ADDRESS": server.addr,
             "CLIENT_TOKEN": token("client-alice"), "WORKER_TOKEN": token("worker-bob")},
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 1 and "--reset" in again.stderr
