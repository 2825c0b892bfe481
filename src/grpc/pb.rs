//! Code generated from `proto/jobstatus/v1/jobstatus.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("jobstatus.v1");

/// The encoded descriptor set, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jobstatus_descriptor.bin"));
