//! The two gRPC services: decode and validate, call [`Jobs`], encode. Each
//! RPC runs in one span that names the method, the job and the caller, and
//! logs how it ended.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::identity;
use super::convert;
use super::pb;
use super::pb::job_admin_service_server::JobAdminService;
use super::pb::job_service_server::JobService;
use super::quota::{WatchPermit, WatchQuota};
use crate::auth::Identity;
use crate::domain::{self, DomainError, Job};
use crate::error::AppError;
use crate::jobs::Jobs;

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
    let message = request.into_inner();
    let span = tracing::info_span!(
        "rpc",
        method,
        job_id = job_id(&message),
        caller = identity.caller.id()
    );
    async move {
        let result: Result<Job, AppError> = match convert(identity.caller, message) {
            Ok(req) => jobs.execute(req).await,
            Err(invalid) => Err(invalid.into()),
        };
        finish(result)
    }
    .instrument(span)
    .await
}

fn finish(result: Result<Job, AppError>) -> Result<Response<pb::Job>, Status> {
    match result {
        Ok(job) => {
            tracing::info!(revision = job.revision, status = %job.status, "ok");
            Ok(Response::new(convert::job(&job)))
        }
        Err(err) => {
            let status = Status::from(err);
            tracing::info!(code = ?status.code(), message = status.message(), "refused");
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
        let raw = request.into_inner().job_id;
        let span = tracing::info_span!(
            "rpc",
            method = "GetJob",
            job_id = raw,
            caller = identity.caller.id()
        );
        async move {
            let result = match convert::job_id(raw) {
                Ok(id) => self.jobs.get(&identity.caller, id).await,
                Err(invalid) => Err(invalid.into()),
            };
            finish(result)
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
        let message = request.into_inner();
        let id = convert::job_id(message.job_id)?;
        let after = convert::after_revision(message.after_revision)?;
        let permit = self.admit_watch(&identity, "WatchJob")?;
        let span = tracing::info_span!(
            "watch",
            job_id = message.job_id,
            caller = identity.caller.id(),
            after_revision = after
        );
        tracing::info!(parent: &span, "watch opened");
        let stream = self
            .jobs
            .watch(identity, id, after)
            .map(move |item| {
                // The stream owns its place: it is given back when the
                // stream is dropped, however it ends.
                let _held = &permit;
                match item {
                Ok(item) => Ok(convert::watch_item(&item)),
                Err(err) => {
                    let status = Status::from(err);
                    tracing::info!(parent: &span, code = ?status.code(), message = status.message(), "watch ended");
                    Err(status)
                }
            }});
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchMyJobsStream = MyJobsStream;

    async fn watch_my_jobs(
        &self,
        request: Request<pb::WatchMyJobsRequest>,
    ) -> Result<Response<Self::WatchMyJobsStream>, Status> {
        let identity = identity(&request)?;
        let message = request.into_inner();
        let after = crate::my_jobs::resume_map(&message.after_revisions)?;
        let permit = self.admit_watch(&identity, "WatchMyJobs")?;
        let span = tracing::info_span!(
            "watch_my_jobs",
            caller = identity.caller.id(),
            resumed_jobs = after.len()
        );
        tracing::info!(parent: &span, "watch opened");
        let stream = crate::my_jobs::watch(&self.jobs, identity, after)
            .map(move |item| {
                let _held = &permit;
                match item {
                    Ok(item) => Ok(convert::my_jobs_item(&item)),
                    Err(err) => {
                        let status = Status::from(err);
                        tracing::info!(parent: &span, code = ?status.code(), message = status.message(), "watch ended");
                        Err(status)
                    }
                }
            });
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
