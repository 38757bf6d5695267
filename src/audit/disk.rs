//! Free space on the audit directory's file system, for the watermark
//! (`[audit] min_free_bytes`).
//!
//! Input: a directory. Output: the bytes an unprivileged writer can still
//! use there (`statvfs`: available blocks times fragment size), or None
//! where that cannot be read (an error, or a system other than Linux, where
//! the watermark is then never tripped). [`FreeSpace`] caches the answer
//! for a short while, so the request path pays for one `statvfs` per
//! interval, not per request.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a reading is reused.
const FRESH: Duration = Duration::from_millis(250);
/// "Not known" in the cache.
const UNKNOWN: u64 = u64::MAX;

/// Available bytes on the file system holding `dir`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn disk_free(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable
    // statvfs that outlives the call, which only fills it in.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Available bytes on the file system holding `dir` (unknown here).
#[cfg(not(target_os = "linux"))]
pub fn disk_free(_dir: &Path) -> Option<u64> {
    None
}

/// A [`disk_free`] reading reused for [`FRESH`].
#[derive(Debug)]
pub struct FreeSpace {
    start: Instant,
    bytes: AtomicU64,
    /// Nanoseconds since `start` of the reading, plus one (0: never read).
    at: AtomicU64,
}

impl Default for FreeSpace {
    fn default() -> Self {
        FreeSpace {
            start: Instant::now(),
            bytes: AtomicU64::new(UNKNOWN),
            at: AtomicU64::new(0),
        }
    }
}

impl FreeSpace {
    /// Free bytes under `dir`, read again when the last reading is stale.
    pub fn get(&self, dir: &Path) -> Option<u64> {
        let now = self.start.elapsed().as_nanos() as u64 + 1;
        let at = self.at.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) > FRESH.as_nanos() as u64 {
            let b = disk_free(dir).unwrap_or(UNKNOWN);
            self.bytes.store(b, Ordering::Relaxed);
            self.at.store(now, Ordering::Relaxed);
        }
        match self.bytes.load(Ordering::Relaxed) {
            UNKNOWN => None,
            b => Some(b),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_the_free_space_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        let free = disk_free(d.path()).unwrap();
        assert!(free > 0);
        assert_eq!(disk_free(&d.path().join("missing")), None);
        let cache = FreeSpace::default();
        assert!(cache.get(d.path()).is_some());
    }
}
