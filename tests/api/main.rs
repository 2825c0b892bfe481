//! The integration suite: the real server on a random port, driven by the
//! generated tonic clients. One binary, one module per concern.

mod helpers;

mod errors;
mod flows;
mod lifecycle;
mod replicas;
mod watch;
