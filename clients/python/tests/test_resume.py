"""Watchers resume across a server restart: nothing missed, nothing twice."""

import threading

from jobstatus_client import CASH, Backoff, JobStatusClient, pb

from conftest import SERVICE, token, wait_until

FAST = Backoff(initial=0.05, maximum=0.5)


def test_watchers_resume_across_a_restart_without_gaps_or_repeats(server):
    admin = JobStatusClient(server.addr, token(SERVICE, service=True))
    admin.admin.create_job(3, "client-3", "worker-3")
    client = JobStatusClient(server.addr, token("client-3"), backoff=FAST)
    worker = JobStatusClient(server.addr, token("worker-3"), backoff=FAST)
    states = []
    job_watch = client.watch_job(3, on_status=lambda state, attempt: states.append(state))
    mine = worker.watch_my_jobs()
    job_seen, my_seen = [], []

    def collect(watch, into):
        for update in watch:
            into.append(update)

    threads = [threading.Thread(target=collect, args=(job_watch, job_seen), daemon=True),
               threading.Thread(target=collect, args=(mine, my_seen), daemon=True)]
    for t in threads:
        t.start()
    wait_until(lambda: job_seen and mine.state == "live", what="both watches live")
    worker.mark_complete(3)
    wait_until(lambda: len(job_seen) == 2 and mine.revisions.get(3) == 2, what="revision 2")

    server.stop()
    wait_until(lambda: "reconnecting" in states, what="the watch to notice the restart")
    server.start()
    # A change made right after the restart reaches both watchers once.
    client.approve_completion(3, CASH)
    wait_until(lambda: len(job_seen) == 3 and mine.revisions.get(3) == 3,
               timeout=15, what="revision 3 after the restart")
    assert states.index("reconnecting") < len(states) - 1 and states[-1] == "live"

    job_watch.cancel()
    mine.cancel()
    for t in threads:
        t.join(timeout=10)
    assert [u.job.revision for u in job_seen] == [1, 2, 3]
    assert [(u.kind, u.job.revision) for u in my_seen] == [
        ("snapshot", 1), ("event", 2), ("event", 3)
    ]
    assert job_seen[-1].job.status == pb.JOB_STATUS_AWAITING_PAYMENT
