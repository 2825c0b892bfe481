//! jobstatus: live, durable job completion status over gRPC.
//!
//! # Layout
//! - [`domain`]: the pure state machine (no I/O).
pub mod domain;
