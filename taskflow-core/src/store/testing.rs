//! Fault points and observation hooks of the store, for tests only (feature `test-util`).
//!
//! - [`kill_after_next_write`]: the log writer's next write reaches the kernel (the page
//!   cache) and the process is then killed with `SIGKILL` before its `fdatasync` — the
//!   window in which a crash leaves bytes that were never made durable.
//! - [`record_syncs`] / [`synced`]: every file and directory the store fsyncs from now on, in
//!   order, so a test can check that something was made durable before it was relied on.
//!
//! Without the feature the hooks do not exist and the store's calls to them compile to
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static KILL_AFTER_WRITE: AtomicBool = AtomicBool::new(false);
static RECORDING: AtomicBool = AtomicBool::new(false);
static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Arms the fault point between the log writer's `write` and its `fdatasync`: the next batch
/// is written, then the process kills itself with `SIGKILL`.
pub fn kill_after_next_write() {
    KILL_AFTER_WRITE.store(true, Ordering::SeqCst);
}

/// Starts (or restarts, clearing what was recorded) recording the store's fsyncs.
pub fn record_syncs() {
    SYNCED.lock().unwrap_or_else(|p| p.into_inner()).clear();
    RECORDING.store(true, Ordering::SeqCst);
}

/// The files and directories fsync'd since [`record_syncs`], in order.
pub fn synced() -> Vec<PathBuf> {
    SYNCED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Called by the log writer between its write and its fdatasync.
pub(crate) fn after_write() {
    if KILL_AFTER_WRITE.swap(false, Ordering::SeqCst) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        // SIGKILL cannot be caught; should it somehow not arrive, still never reach the sync.
        std::process::abort();
    }
}

/// Called after every fsync of a store file or directory.
pub(crate) fn did_sync(path: &Path) {
    if RECORDING.load(Ordering::SeqCst) {
        SYNCED.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_owned());
    }
}
