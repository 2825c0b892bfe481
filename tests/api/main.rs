//! The integration suite: the real server on a random port, driven by the
//! generated tonic clients. One binary, one module per concern.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod errors;
mod flows;
mod lifecycle;
mod replicas;
mod watch;
