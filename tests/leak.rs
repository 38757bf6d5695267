//! Memory stays flat when nobody scrapes `/metrics` (issue 23): a gateway
//! and its sandbox in this process, a counting global allocator, a warm-up
//! phase, then N requests and N more; the live bytes after the second N
//! equal those after the first within a small constant. No timing
//! assertions and no RSS: only the allocator's count, read when the process
//! is quiet.
//!
//! Its own test binary, so the allocator and the process-wide metrics
//! recorder see this gateway alone.

// Test code: failing loudly is the point. `unsafe` only for the allocator.
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "it/common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Opts, TOKEN_A, TestEnv};
use cubegate::sandbox::SandboxOptions;
use cubegate::telemetry;

/// `System`, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `layout` contract is passed on to `System`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every
        // allocation of this allocator is).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Requests per phase. Large enough that a few bytes kept per request
/// (a histogram sample is 8) stand far above the bound below.
const N: usize = 5_000;
/// Concurrent callers.
const CALLERS: usize = 8;
/// What may differ between two quiet moments besides a leak: buffers of
/// pooled connections, allocator-sized tables that grew once more.
const SLACK: usize = 64 * 1024;

/// `N` requests from `CALLERS` callers: GETs of a route without PII, and
/// every tenth an update of one client (audited, and bounded in the
/// sandbox's store).
async fn drive(env: &Arc<TestEnv>, client_id: &str) {
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let env = env.clone();
        let update = format!("/v1/clients/{client_id}");
        tasks.push(tokio::spawn(async move {
            for i in (c..N).step_by(CALLERS) {
                let r = if i % 10 == 0 {
                    env.post(TOKEN_A, &update, r#"{"email":"leak@example.com"}"#)
                        .await
                } else {
                    env.get(TOKEN_A, "/v1/accountInfo").await
                };
                assert_eq!(r.status, 200, "{}", r.text);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Live bytes once the gateway is idle and a scheduled upkeep has run
/// after the last request.
async fn quiet_live_bytes(env: &TestEnv) -> usize {
    while env.gw.shared().in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = telemetry::upkeeps();
    while telemetry::upkeeps() < seen + 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    LIVE.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_memory_is_flat_without_a_scraper() {
    telemetry::set_upkeep_interval(Duration::from_millis(50));
    let env = Arc::new(
        TestEnv::with(Opts {
            sandbox: SandboxOptions {
                max_recorded: 0,
                ..SandboxOptions::default()
            },
            ..Opts::default()
        })
        .await,
    );
    let id = env.create_client(TOKEN_A).await;
    // A warm-up phase first: pools, the sandbox's bounded store and
    // allocator-sized tables reach their size once, then stay.
    drive(&env, &id).await;
    quiet_live_bytes(&env).await;
    drive(&env, &id).await;
    let after_n = quiet_live_bytes(&env).await;
    drive(&env, &id).await;
    let after_2n = quiet_live_bytes(&env).await;
    let grew = after_2n.saturating_sub(after_n);
    println!(
        "live bytes after {}: {after_n}, after {}: {after_2n}, grew {grew} ({:.1} per request)",
        2 * N,
        3 * N,
        grew as f64 / N as f64
    );
    assert!(
        grew <= SLACK,
        "live memory grew {grew} bytes over {N} requests nobody scraped"
    );
}
