//! jobstatus: live, durable job completion status over gRPC.
//!
//! A worker marks a job complete, the client approves it and picks how to
//! pay, and everyone allowed to watch the job sees every change at once, in
//! order, exactly once, even across disconnects and restarts.
//!
//! # Layout
//! - [`domain`]: the pure state machine (no I/O): who may do what, and what
//!   a job becomes.
//! - [`storage`]: jobs and their event log in SQLite or, for several
//!   replicas, PostgreSQL (one interface, chosen by the database URL).
//! - [`hub`]: per-job broadcast channels that fan committed events out
//!   (and, on PostgreSQL, the LISTEN task that feeds them other replicas'
//!   commits).
//! - [`jobs`]: the application service: commands, reads and the watch
//!   promise (snapshot, replay, lag recovery), free of transport concerns.
//! - [`my_jobs`]: WatchMyJobs, every job of one user on one stream: the
//!   stream, its per-user fan-out and its resume map, all in one place.
//! - [`auth`]: bearer token verification and minting.
//! - [`grpc`]: the tonic transport: one accept loop with the connection
//!   limits, the edge layer (tokens, anonymous calls, deadlines), services,
//!   health, reflection, and the one place errors become statuses.
//! - [`config`], [`telemetry`], [`app`]: flags, logging, wiring; `clock_map`:
//!   the bounded second-chance map both in-memory caches use; `rfc3339`:
//!   timestamps as the text every backend stores.

pub mod app;
pub mod auth;
mod clock_map;
pub mod config;
pub mod dev;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod hub;
pub mod jobs;
pub mod my_jobs;
mod rfc3339;
pub mod storage;
pub mod telemetry;
