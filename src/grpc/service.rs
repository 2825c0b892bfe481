//! The two gRPC services: decode and validate, call [`Jobs`], encode. Each
//! RPC has a [`CallLog`] naming the method, the job, the caller, the peer
//! address and the request id, and logs how it ended and how long it took
//! (a refusal at info, a success at debug).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::identity;
use super::convert;
use super::observe::{CallLog, Watched};
use super::pb;
use super::pb::job_admin_service_server::JobAdminService;
use super::pb::job_service_server::JobService;
use super::quota::{WatchPermit, WatchQuota};
use crate::auth::Identity;
use crate::domain::{self, DomainError, Job};
use crate::error::AppError;
use crate::jobs::Jobs;
use crate::jobs::WatchItem;
use crate::my_jobs::MyJobsItem;

/// Implements `jobstatus.v1.JobService` (user tokens; services may read).
#[derive(Debug, Clone)]
pub struct JobServiceImpl {
    jobs: Jobs,
    /// Open watch streams per caller.
    watches: Arc<WatchQuota>,
}

/// Implements `jobstatus.v1.JobAdminService` (service tokens only).
#[derive(Debug, Clone)]
pub struct JobAdminServiceImpl {
    jobs: Jobs,
}

impl JobServiceImpl {
    pub fn new(jobs: Jobs, watches: Arc<WatchQuota>) -> Self {
        Self { jobs, watches }
    }

    /// A place for one more watch stream of this caller, or why not.
    fn admit_watch(&self, identity: &Identity, rpc: &'static str) -> Result<WatchPermit, Status> {
        self.watches.acquire(&identity.caller).map_err(|limit| {
            let status = Status::from(AppError::Limit(limit));
            tracing::info!(
                rpc,
                caller = identity.caller.id(),
                message = status.message(),
                "watch refused"
            );
            status
        })
    }
}

impl JobAdminServiceImpl {
    pub fn new(jobs: Jobs) -> Self {
        Self { jobs }
    }
}

/// Runs one mutating RPC: authenticate, convert, execute, answer.
async fn mutate<M>(
    jobs: &Jobs,
    method: &'static str,
    request: Request<M>,
    job_id: impl Fn(&M) -> i64,
    convert: impl FnOnce(domain::Caller, M) -> Result<domain::Request, DomainError>,
) -> Result<Response<pb::Job>, Status> {
    let identity = identity(&request)?;
    let log = CallLog::of(
        method,
        &request,
        Some(job_id(request.get_ref())),
        identity.caller.id(),
    );
    let message = request.into_inner();
    let started = Instant::now();
    let span = log.span();
    async move {
        let result: Result<Job, AppError> = match convert(identity.caller, message) {
            Ok(req) => jobs.execute(req).await,
            Err(invalid) => Err(invalid.into()),
        };
        finish(result, started, &log)
    }
    .instrument(span)
    .await
}

/// The call's answer, and its one line: how it ended and how long it took.
/// A successful call's line is at debug: at info, with its span, it cost
/// about a tenth of a call's CPU (BENCHMARKS.md); refusals stay at info.
fn finish(
    result: Result<Job, AppError>,
    started: Instant,
    log: &CallLog,
) -> Result<Response<pb::Job>, Status> {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(job) => {
            tracing::debug!(code = "OK", revision = job.revision, status = %job.status, micros, "ok");
            Ok(Response::new(convert::job(&job)))
        }
        Err(err) => {
            let status = Status::from(err);
            log.refused(&status, micros);
            Err(status)
        }
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobServiceImpl {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let identity = identity(&request)?;
        let log = CallLog::of(
            "GetJob",
            &request,
            Some(request.get_ref().job_id),
            identity.caller.id(),
        );
        let raw = request.into_inner().job_id;
        let started = Instant::now();
        let span = log.span();
        async move {
            let result = match convert::job_id(raw) {
                Ok(id) => self.jobs.get(&identity.caller, id).await,
                Err(invalid) => Err(invalid.into()),
            };
            finish(result, started, &log)
        }
        .instrument(span)
        .await
    }

    async fn mark_complete(
        &self,
        request: Request<pb::MarkCompleteRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "MarkComplete",
            request,
            |m| m.job_id,
            convert::mark_complete,
        )
        .await
    }

    async fn approve_completion(
        &self,
        request: Request<pb::ApproveCompletionRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "ApproveCompletion",
            request,
            |m| m.job_id,
            convert::approve_completion,
        )
        .await
    }

    async fn request_changes(
        &self,
        request: Request<pb::RequestChangesRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "RequestChanges",
            request,
            |m| m.job_id,
            convert::request_changes,
        )
        .await
    }

    async fn submit_payment_proof(
        &self,
        request: Request<pb::SubmitPaymentProofRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "SubmitPaymentProof",
            request,
            |m| m.job_id,
            convert::submit_payment_proof,
        )
        .await
    }

    async fn confirm_payment(
        &self,
        request: Request<pb::ConfirmPaymentRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "ConfirmPayment",
            request,
            |m| m.job_id,
            convert::confirm_payment,
        )
        .await
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let identity = identity(&request)?;
        let log = CallLog::of(
            "WatchJob",
            &request,
            Some(request.get_ref().job_id),
            identity.caller.id(),
        );
        let message = request.into_inner();
        let id = convert::job_id(message.job_id)?;
        let after = convert::after_revision(message.after_revision)?;
        let permit = self.admit_watch(&identity, "WatchJob")?;
        tracing::debug!(parent: &log.span(), after_revision = after, "watch opened");
        // The stream owns its place in the limit: it is given back when the
        // stream is dropped, however it ends.
        let stream = Watched::new(
            self.jobs.watch(identity, id, after),
            |item: &WatchItem| {
                (
                    convert::watch_item(item),
                    matches!(item, WatchItem::Event(_)),
                )
            },
            "WatchJob",
            log,
            permit,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchMyJobsStream = MyJobsStream;

    async fn watch_my_jobs(
        &self,
        request: Request<pb::WatchMyJobsRequest>,
    ) -> Result<Response<Self::WatchMyJobsStream>, Status> {
        let identity = identity(&request)?;
        let log = CallLog::of("WatchMyJobs", &request, None, identity.caller.id());
        let message = request.into_inner();
        let after = crate::my_jobs::resume_map(&message.after_revisions)?;
        let permit = self.admit_watch(&identity, "WatchMyJobs")?;
        tracing::debug!(parent: &log.span(), resumed_jobs = after.len(), "watch opened");
        let stream = Watched::new(
            crate::my_jobs::watch(&self.jobs, identity, after),
            |item: &MyJobsItem| {
                (
                    convert::my_jobs_item(item),
                    matches!(item, MyJobsItem::Event(_)),
                )
            },
            "WatchMyJobs",
            log,
            permit,
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

pub type MyJobsStream = Pin<Box<dyn Stream<Item = Result<pb::WatchMyJobsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobAdminService for JobAdminServiceImpl {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "CreateJob",
            request,
            |m| m.job_id,
            convert::create_job,
        )
        .await
    }

    async fn assign_worker(
        &self,
        request: Request<pb::AssignWorkerRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "AssignWorker",
            request,
            |m| m.job_id,
            convert::assign_worker,
        )
        .await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "CancelJob",
            request,
            |m| m.job_id,
            convert::cancel_job,
        )
        .await
    }

    async fn confirm_payment(
        &self,
        request: Request<pb::ConfirmPaymentRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        mutate(
            &self.jobs,
            "AdminConfirmPayment",
            request,
            |m| m.job_id,
            convert::confirm_payment,
        )
        .await
    }
}
