//! The bare baseline: the same proto (JobService + JobAdminService) served
//! from memory. No storage, no auth, one tokio broadcast channel per job,
//! the same message shapes (a snapshot first, then events). It runs as its
//! own process, so its RSS and CPU are measured like the real server's.
//!
//! With `--hand-off` it also hands each CreateJob, MarkComplete and
//! ApproveCompletion to a thread of its own and waits for the answer, as
//! jobstatus hands a change to its SQLite writer (a deadline, a queue the
//! thread drains in batches, an answer channel, the publish on that
//! thread), but does the same in-memory work there: what that hand-off costs, apart
//! from storage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::Stream;
use jobstatus::grpc::listen::{self, ConnectionLimits};
use jobstatus::grpc::pb;
use pb::job_admin_service_server::{JobAdminService, JobAdminServiceServer};
use pb::job_service_server::{JobService, JobServiceServer};
use pb::watch_job_response::Kind;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tower::ServiceBuilder;

/// Same as the real server's default watch buffer.
const CHANNEL_CAPACITY: usize = 16;

#[derive(Debug)]
struct Entry {
    job: pb::Job,
    /// Created by the first watcher, as the real hub creates its topics:
    /// a channel costs memory (~0.5 KiB at 16 slots), and unwatched jobs
    /// should not pay it (nor should it hide in W3's "before" figure).
    events: Option<broadcast::Sender<Arc<pb::JobEvent>>>,
}

#[derive(Debug, Clone, Default)]
struct Bare {
    jobs: Arc<Mutex<HashMap<i64, Entry>>>,
    /// The queue of the thread changes are handed to (`--hand-off`).
    hand_off: Option<mpsc::Sender<Work>>,
}

/// A change for the hand-off thread: it does the work and sends the answer.
type Work = Box<dyn FnOnce() + Send>;

/// The real writer's queue and batch bounds.
const HAND_OFF_QUEUE: usize = 4096;
const HAND_OFF_BATCH: usize = 256;

/// Starts the thread changes are handed to: a current-thread runtime that
/// drains its queue in batches, as jobstatus's SQLite writer does.
fn start_hand_off() -> Result<mpsc::Sender<Work>, String> {
    let (queue, mut work) = mpsc::channel::<Work>(HAND_OFF_QUEUE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the hand-off runtime: {e}"))?;
    std::thread::Builder::new()
        .name("hand-off".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(HAND_OFF_BATCH);
                while work.recv_many(&mut batch, HAND_OFF_BATCH).await > 0 {
                    for change in batch.drain(..) {
                        change();
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the hand-off thread: {e}"))?;
    Ok(queue)
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

impl Bare {
    /// Runs a change here, or, with `--hand-off`, on the hand-off thread
    /// (which publishes it, so that it is published even if the caller
    /// goes away) with a deadline for queueing and answering together.
    async fn change<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Bare) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let Some(queue) = &self.hand_off else {
            return work(self);
        };
        let this = self.clone();
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let change: Work = Box::new(move || {
            let _ = reply.send(work(&this));
        });
        tokio::time::timeout_at(deadline, queue.send(change))
            .await
            .map_err(|_| Status::unavailable("hand-off queue full"))?
            .map_err(|_| Status::unavailable("hand-off thread gone"))?;
        tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(|_| Status::unavailable("no answer from the hand-off thread"))?
            .map_err(|_| Status::unavailable("hand-off thread gone"))?
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<i64, Entry>>, Status> {
        self.jobs
            .lock()
            .map_err(|_| Status::internal("poisoned lock"))
    }

    /// One transition as a change (on the hand-off thread with
    /// `--hand-off`): see [`Bare::apply`].
    async fn transition(
        &self,
        job_id: i64,
        from: pb::JobStatus,
        event: pb::EventType,
        role: pb::ActorRole,
        apply: impl FnOnce(&mut pb::Job) + Send + 'static,
    ) -> Result<Response<pb::Job>, Status> {
        self.change(move |bare| bare.apply(job_id, from, event, role, apply))
            .await
            .map(Response::new)
    }

    /// Applies one transition and publishes its event, like the real
    /// service does after its commit.
    fn apply(
        &self,
        job_id: i64,
        from: pb::JobStatus,
        event: pb::EventType,
        role: pb::ActorRole,
        apply: impl FnOnce(&mut pb::Job),
    ) -> Result<pb::Job, Status> {
        let mut jobs = self.lock()?;
        let entry = jobs
            .get_mut(&job_id)
            .ok_or_else(|| Status::not_found(format!("job {job_id} not found")))?;
        if entry.job.status != from as i32 {
            return Err(Status::failed_precondition("wrong status"));
        }
        let at = now();
        apply(&mut entry.job);
        entry.job.revision += 1;
        entry.job.updated_at = Some(at);
        let job = entry.job.clone();
        let actor_id = match role {
            pb::ActorRole::Worker => job.worker_id.clone(),
            _ => job.client_id.clone(),
        };
        let message = pb::JobEvent {
            event: event as i32,
            job_id,
            revision: job.revision,
            worker_marked_complete: job.worker_marked_complete,
            client_marked_complete: job.client_marked_complete,
            awaiting_client_verification: job.awaiting_client_verification,
            payment_method: job.payment_method,
            timestamp: Some(at),
            status: job.status,
            actor_id,
            actor_role: role as i32,
            request_id: String::new(),
            job: Some(job.clone()),
            reason: String::new(),
        };
        if let Some(events) = &entry.events {
            let _ = events.send(Arc::new(message));
        }
        Ok(job)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Bare {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = request.into_inner().job_id;
        let jobs = self.lock()?;
        jobs.get(&id)
            .map(|e| Response::new(e.job.clone()))
            .ok_or_else(|| Status::not_found(format!("job {id} not found")))
    }

    async fn mark_complete(
        &self,
        request: Request<pb::MarkCompleteRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = request.into_inner().job_id;
        self.transition(
            id,
            pb::JobStatus::InProgress,
            pb::EventType::WorkerMarkedComplete,
            pb::ActorRole::Worker,
            |job| {
                job.status = pb::JobStatus::AwaitingClientApproval as i32;
                job.worker_marked_complete = true;
                job.awaiting_client_verification = true;
            },
        )
        .await
    }

    async fn approve_completion(
        &self,
        request: Request<pb::ApproveCompletionRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let message = request.into_inner();
        self.transition(
            message.job_id,
            pb::JobStatus::AwaitingClientApproval,
            pb::EventType::ClientApprovedCompletion,
            pb::ActorRole::Client,
            move |job| {
                job.status = pb::JobStatus::AwaitingPayment as i32;
                job.client_marked_complete = true;
                job.awaiting_client_verification = false;
                job.payment_method = message.payment_method;
            },
        )
        .await
    }

    async fn request_changes(
        &self,
        _: Request<pb::RequestChangesRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }

    async fn submit_payment_proof(
        &self,
        _: Request<pb::SubmitPaymentProofRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }

    async fn confirm_payment(
        &self,
        _: Request<pb::ConfirmPaymentRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().job_id;
        let (job, mut events) = {
            let mut jobs = self.lock()?;
            let entry = jobs
                .get_mut(&id)
                .ok_or_else(|| Status::not_found(format!("job {id} not found")))?;
            let events = entry
                .events
                .get_or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0);
            (entry.job.clone(), events.subscribe())
        };
        let stream = async_stream::stream! {
            let mut last = job.revision;
            yield Ok(pb::WatchJobResponse {
                kind: Some(Kind::Snapshot(pb::Snapshot {
                    job: Some(job),
                    reason: pb::SnapshotReason::Initial as i32,
                })),
            });
            loop {
                match events.recv().await {
                    Ok(event) if event.revision > last => {
                        last = event.revision;
                        yield Ok(pb::WatchJobResponse {
                            kind: Some(Kind::Event((*event).clone())),
                        });
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        yield Err(Status::data_loss("watcher lagged"));
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchMyJobsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchMyJobsResponse, Status>> + Send>>;

    async fn watch_my_jobs(
        &self,
        _: Request<pb::WatchMyJobsRequest>,
    ) -> Result<Response<Self::WatchMyJobsStream>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }
}

#[tonic::async_trait]
impl JobAdminService for Bare {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let m = request.into_inner();
        let at = now();
        let status = if m.worker_id.is_empty() {
            pb::JobStatus::Open
        } else {
            pb::JobStatus::InProgress
        };
        let job = pb::Job {
            job_id: m.job_id,
            client_id: m.client_id,
            worker_id: m.worker_id,
            status: status as i32,
            revision: 1,
            created_at: Some(at),
            updated_at: Some(at),
            ..pb::Job::default()
        };
        self.change(move |bare| {
            let mut jobs = bare.lock()?;
            if jobs.contains_key(&m.job_id) {
                return Err(Status::already_exists("job exists"));
            }
            jobs.insert(
                m.job_id,
                Entry {
                    job: job.clone(),
                    events: None,
                },
            );
            Ok(job)
        })
        .await
        .map(Response::new)
    }

    async fn assign_worker(
        &self,
        _: Request<pb::AssignWorkerRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }

    async fn confirm_payment(
        &self,
        _: Request<pb::ConfirmPaymentRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Err(Status::unimplemented("not in the bare baseline"))
    }
}

/// Serves until SIGINT/SIGTERM (the bench tool kills it when done).
pub async fn serve(
    listen: SocketAddr,
    max_concurrent_streams: u32,
    hand_off: bool,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bare = Bare {
        hand_off: hand_off.then(start_hand_off).transpose()?,
        ..Bare::default()
    };
    // grpc-web too (browsers over HTTP/1.1), as the real server serves it,
    // through the same clear-text accept loop.
    let routes = Routes::new(JobServiceServer::new(bare.clone()))
        .add_service(JobAdminServiceServer::new(bare))
        .prepare();
    let service = ServiceBuilder::new()
        .layer(tonic_web::GrpcWebLayer::new())
        .service(routes);
    // The same accept loop and transport settings as `jobstatus::grpc::serve`,
    // with room for every connection and stream a workload opens.
    let limits = ConnectionLimits {
        max_concurrent_streams,
        max_connections: 1_000_000,
        ..ConnectionLimits::default()
    };
    listen::serve(
        listener,
        tower::util::BoxCloneSyncService::new(service),
        None,
        limits,
        Default::default(),
        jobstatus::app::shutdown_signal(),
    )
    .await;
    Ok(())
}
