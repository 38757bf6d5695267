//! Black-box tests: a real gateway and a real sandbox (TLS) on ephemeral
//! ports. One test binary, so CI links once.

mod common;
mod core;
mod drain;
mod faults;
mod mtls;
mod prod_support;
mod reload;
mod sdk;
mod slow_clients;
