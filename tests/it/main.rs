//! Black-box tests: a real gateway and a real sandbox (TLS) on ephemeral
//! ports. One test binary, so CI links once.

// Test code: failing loudly is the point, and helpers are shared by modules.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity,
    dead_code
)]

mod audit;
mod audit_evidence;
mod bodies;
mod common;
mod core;
mod crash;
mod demo;
mod drain;
mod edge;
mod faults;
mod goaway;
mod limits;
mod metric_catalogue;
mod mtls;
mod perf_switches;
mod reload;
mod sdk;
mod sdk_parity;
mod slow_clients;
mod telemetry;
