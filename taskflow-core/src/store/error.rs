//! The store's error type: every variant names the file involved and says what to do next.

use std::path::PathBuf;

/// What the operator should run when a store is damaged; appended to corruption messages.
const NEXT_STEP: &str = "run `taskflow store inspect DIR` to see what is damaged, then restore a \
                         backup with `taskflow store restore BACKUP DIR --force` or re-run the \
                         business date";

/// An error from the event store.
///
/// Nothing in the store panics on bytes read from disk: damage always surfaces as
/// [`Error::Corrupt`] (or [`Error::Version`]) naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("i/o error on {path}: {source}; check the disk and permissions, then retry")]
    Io {
        /// The file or directory the call was made on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk failed a check (checksum, magic, sequence continuity, missing file).
    #[error("store corrupt: {path}{}: {reason}; {NEXT_STEP}", offset_suffix(*.offset))]
    Corrupt {
        /// The damaged file or directory.
        path: PathBuf,
        /// The byte offset of the damage inside the file, when known.
        offset: Option<u64>,
        /// What was found.
        reason: String,
    },
    /// Another process (or another `Store` in this process) holds the data directory.
    #[error(
        "store {path} is locked by another process; stop the other taskflow instance or use a \
         different data directory"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An append did not continue the sequence: every sequence number must be the previous plus one.
    #[error(
        "event sequence gap: expected seq {expected}, got {got}; the caller must assign \
         contiguous sequence numbers (this is a bug in the caller, nothing was written)"
    )]
    Gap {
        /// The sequence number the log expected next.
        expected: u64,
        /// The sequence number that was handed over.
        got: u64,
    },
    /// A file was written by a format version this build does not read.
    #[error(
        "{path} has format version {found}, this build supports {supported}; run a taskflow \
         build that supports it, or migrate the store"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found on disk.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// The log writer hit an I/O error earlier and stopped; nothing after its watermark is durable.
    #[error(
        "event log writer for {path} stopped after an error: {reason}; no further events are \
         acknowledged, restart the process after fixing the disk"
    )]
    WriterFailed {
        /// The log directory.
        path: PathBuf,
        /// The original error, rendered.
        reason: String,
    },
    /// The store is closed (the writer thread has shut down).
    #[error("event store {path} is closed")]
    Closed {
        /// The data directory.
        path: PathBuf,
    },
    /// A caller passed an invalid argument (e.g. a snapshot seq beyond the durable watermark).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Restore refused to overwrite a non-empty directory.
    #[error(
        "restore target {path} is not empty; pass `--force` to replace it (its contents will \
         be deleted) or choose an empty directory"
    )]
    NotEmpty {
        /// The target directory.
        path: PathBuf,
    },
}

fn offset_suffix(offset: Option<u64>) -> String {
    offset.map(|o| format!(" at offset {o}")).unwrap_or_default()
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

/// Shorthand used throughout the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;
