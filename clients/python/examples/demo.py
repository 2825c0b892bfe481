#!/usr/bin/env python3
"""Watch the demo job change from Python, against `cargo run -- serve --dev`.

Paste the `export` lines `serve --dev` prints, then:

    python clients/python/examples/demo.py            # 127.0.0.1:50051, job 1

The client's watch prints every update of the job while the worker marks
it complete and the client approves it, paying cash.
"""

import os
import sys
import threading

from jobstatus_client import CASH, JobStatusClient, errors, new_request_id, pb


def main() -> int:
    address = os.environ.get("JOBSTATUS_ADDRESS", "127.0.0.1:50051")
    job_id = int(os.environ.get("JOB_ID", "1"))
    try:
        client_token = os.environ["CLIENT_TOKEN"]
        worker_token = os.environ["WORKER_TOKEN"]
    except KeyError as missing:
        print(f"set {missing.args[0]}: paste the export lines `serve --dev` prints", file=sys.stderr)
        return 2

    client = JobStatusClient(address, client_token)
    worker = JobStatusClient(address, worker_token)
    now = client.get_job(job_id)
    if now.status != pb.JOB_STATUS_IN_PROGRESS:
        print(f"job {job_id} is {pb.JobStatus.Name(now.status)}, not in progress; "
              "start the demo over with `cargo run -- serve --dev --reset`", file=sys.stderr)
        return 1
    watch = client.watch_job(job_id)
    first = threading.Event()

    def show() -> None:
        for update in watch:
            what = pb.EventType.Name(update.event.event) if update.event else update.kind
            print(f"revision {update.job.revision}: {what} -> {pb.JobStatus.Name(update.job.status)}",
                  flush=True)
            first.set()

    viewer = threading.Thread(target=show, daemon=True)
    viewer.start()
    first.wait(timeout=10)
    try:
        worker.mark_complete(job_id, request_id=new_request_id())
        job = client.approve_completion(job_id, CASH, request_id=new_request_id())
    except errors.JobStatusError as refused:
        print(f"refused: {refused}", file=sys.stderr)
        watch.cancel()
        return 1
    # Wait until the watch has shown the approval too.
    while watch.revision is None or watch.revision < job.revision:
        viewer.join(timeout=0.05)
    watch.cancel()
    viewer.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
