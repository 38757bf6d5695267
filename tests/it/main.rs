//! Black-box tests: a real gateway and a real sandbox (TLS) on ephemeral
//! ports. One test binary, so CI links once.

mod common;
mod core;
mod perf_switches;
mod sdk;
