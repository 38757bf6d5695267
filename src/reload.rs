//! Reload without restart.
//!
//! Input: a config file path. [`reload_file`] loads and compiles a whole new
//! [`Snapshot`] (tenants, keys, callers, policies, schemas, limits) and swaps
//! it in atomically with an upstream client built for it; requests in flight
//! keep the `Arc` of the runtime they started with. [`watch`] polls the
//! config file and every file it references (`file:` key references, the
//! upstream CA, TLS certificate files) for a change of inode, size or mtime
//! every `reload.poll_interval_ms` and reloads on a change — no inotify
//! dependency, and it also sees Kubernetes' atomic symlink swaps of mounted
//! Secrets and ConfigMaps.
//! Failures: an invalid new config is refused with one log line (file, key,
//! reason; never a secret value) and `cubegate_config_reloads_total
//! {result="refused"}`; the old snapshot keeps serving. The rate limiter, the
//! audit log and the circuit breaker live outside the snapshot and carry on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{self, ConfigSource};
use crate::pipeline::forward::Upstream;
use crate::secret;
use crate::snapshot::{self, Snapshot};
use crate::state::{Runtime, Shared};
use crate::telemetry;

/// Swap in `snapshot` (and an upstream client for it). Refused, with the
/// old snapshot kept, if the upstream client cannot be built.
pub fn swap(shared: &Shared, snapshot: Snapshot) -> anyhow::Result<()> {
    let old = shared.runtime();
    // The limiter outlives reloads (its state must survive them); the
    // settings it was built with stay until a restart. `enabled`, budgets,
    // quotas and max_wait come from the new snapshot on the next request.
    let kept = old
        .snapshot
        .rate_limit
        .restart_only_changes(&snapshot.rate_limit);
    if !kept.is_empty() {
        tracing::warn!(
            settings = ?kept,
            "rate_limit settings changed by this reload apply only after a restart"
        );
    }
    let upstream = match Upstream::succeeding(&snapshot.upstream, &old.upstream) {
        Ok(u) => u,
        Err(e) => {
            telemetry::config_reload(false);
            return Err(e.into());
        }
    };
    let (rl_was, rl_now) = (old.snapshot.rate_limit.enabled, snapshot.rate_limit.enabled);
    // A tenant added by this reload gets its series at zero, as at start.
    telemetry::register_at_start(snapshot.tenants.iter().map(|t| t.id.as_str()));
    shared.swap(Runtime {
        snapshot: Arc::new(snapshot),
        upstream: Arc::new(upstream),
    });
    telemetry::config_reload(true);
    // `enabled` is read per request, so it takes effect with this swap.
    if rl_was != rl_now {
        if rl_now {
            tracing::info!("rate limiting turned back on by this reload");
        } else {
            tracing::warn!(
                "{} (turned off by this reload)",
                crate::pipeline::rate_limit::OFF_NOTICE
            );
        }
    }
    Ok(())
}

/// Load `path` (with the process environment) and swap it in. Logs the
/// outcome; on error the old snapshot keeps serving.
pub fn reload_file(shared: &Shared, path: &Path) -> anyhow::Result<()> {
    let loaded = snapshot::load(
        &ConfigSource::File(path),
        &config::process_env(),
        &secret::ProcessEnv,
    );
    let r = match loaded {
        Ok(s) => swap(shared, s),
        Err(e) => {
            telemetry::config_reload(false);
            Err(anyhow::anyhow!("{e}"))
        }
    };
    match &r {
        Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "reload refused; the previous config keeps serving")
        }
    }
    r
}

/// The files a snapshot was built from: the config file and every file it
/// references.
pub fn watched_files(config: &Path, snap: &Snapshot) -> Vec<PathBuf> {
    let base = config.parent().unwrap_or(Path::new("."));
    let mut files = vec![config.to_path_buf()];
    files.extend(snap.referenced_files().iter().map(|p| base.join(p)));
    files.extend(snap.listener_tls_files().into_iter().map(|p| base.join(p)));
    files.sort();
    files.dedup();
    files
}

/// What identifies a file's version cheaply: inode (atomic renames and
/// symlink swaps), size and mtime. `None` when missing or unreadable.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// Poll the config and its files; reload when any of them changes. Runs
/// until `stop` turns true. A refused reload is not retried until a file
/// changes again (no log flood every second).
pub async fn watch(shared: Arc<Shared>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut files = watched_files(&path, &shared.runtime().snapshot);
    let mut seen = stamps(&files);
    loop {
        let interval =
            Duration::from_millis(shared.runtime().snapshot.reload.poll_interval_ms.max(10));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        // Let a writer that truncates then writes finish before reading.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = reload_file(&shared, &path);
        // A new config may reference other files.
        files = watched_files(&path, &shared.runtime().snapshot);
        seen = stamps(&files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_changes_its_stamp_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "test_a").unwrap();
        let files = vec![f.clone(), dir.path().join("missing")];
        let before = stamps(&files);
        assert!(before[0].is_some() && before[1].is_none());
        // Same size, written aside and renamed in (how Kubernetes and
        // careful operators replace files): the inode differs.
        let tmp = dir.path().join("k.tmp");
        std::fs::write(&tmp, "test_b").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(stamps(&files), before);
    }
}
