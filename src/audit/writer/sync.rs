//! The writer's syncs, behind one trait: [`Syncer`] is what makes the log,
//! the checkpoint file and a new directory entry durable.
//!
//! Production passes [`OsSync`] (plain `fdatasync` / directory `fsync`);
//! the tests pass a fault injector through the very same code path, so the
//! recovery they exercise (rewrite after a failed sync, a rotation kept
//! back by a failed directory sync) is the code that runs in production.
//! The one sync outside it is start-up's `sync_all` after cutting a torn
//! line, before the writer exists.

use std::fs::File;
use std::path::Path;

/// The syncs the writer makes; `Send + Sync` because the writer thread and
/// appenders writing inline share it.
pub(super) trait Syncer: Send + Sync {
    /// Makes `f`'s data durable (`fdatasync`).
    fn sync_data(&self, f: &File) -> std::io::Result<()>;

    /// Makes the entries of directory `dir` durable (a new file's name).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The operating system's syncs.
pub(super) struct OsSync;

impl Syncer for OsSync {
    fn sync_data(&self, f: &File) -> std::io::Result<()> {
        f.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
