//! Fuzz target for the `read body` and `policy` stages.
//!
//! Input: arbitrary bytes as a request body (seeds in corpus/body_policy).
//! Checks (see `body::roundtrip_property`): header check and strict parser
//! never panic; an accepted body parses identically with serde_json; the
//! `clients.update` policy strips only present fields; serialising and
//! re-parsing strictly gives back the same value. A broken property panics,
//! which libFuzzer reports as a crash.
//!
//! Run: `cargo +nightly fuzz run body_policy` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The stage modules, compiled from the gateway's sources (see Cargo.toml).
#[allow(dead_code)]
#[path = "../../src/pipeline"]
mod pipeline {
    pub mod body;
    pub mod policy;
}

fuzz_target!(|data: &[u8]| {
    if let Err(property) = pipeline::body::roundtrip_property(data) {
        panic!("property broken: {property}");
    }
});
