//! The durable event store: the only module that touches sled or the data files.
//!
//! The store is byte-oriented: it keeps opaque event payloads keyed by a `u64` sequence number,
//! opaque snapshot bytes, and small typed metadata. It does not know the event types.
//!
//! # Layout of a data directory
//!
//! - `STORE` — manifest (magic, format version, creation time, crc32). Its presence means "this
//!   directory holds a store", so a store whose contents vanished is told apart from a new one.
//! - `LOCK` — held with an exclusive `flock` while a [`Store`] is open (one process per directory).
//! - `log/<first_seq:020>.seg` — the append-only event log (format in the `log` submodule docs).
//! - `SLEDMARK` — the number of sled's last durable commit, kept outside sled so that sled
//!   silently recovering an older state (it stops replaying at damage) is detected.
//! - `sled/` — sled 0.34.7 holding snapshot generations (≤ 16 KiB chunks, never one big blob)
//!   and metadata, every value in a checksummed, versioned envelope.
//!
//! # Guarantees
//!
//! - **Acknowledged means power-loss durable.** The durable watermark ([`Store::durable`],
//!   [`Store::durable_seq`]) only moves after the writer thread has written the events and
//!   `fdatasync`'d the segment (and, for a new segment, fsync'd the `log/` directory). Every event
//!   with seq ≤ the watermark is returned by the next [`Store::open`], in order, byte for byte.
//! - **Group commit, no waiting.** [`Store::append`] only validates and queues; the writer drains
//!   everything queued, writes it with one write and one `fdatasync`, then publishes the new
//!   watermark. One fsync covers every event handed over while the previous one ran.
//! - **Failures are never silent.** A seq gap is refused at hand-over ([`Error::Gap`]); an I/O
//!   error stops the writer for good: the watermark freezes, [`Durable::failure`] is set on the
//!   watch channel and every later call returns [`Error::WriterFailed`].
//! - **What recovery finds is made durable first.** A process killed between its write and its
//!   `fdatasync` leaves records only in the page cache; [`Store::open`] fsyncs every segment it
//!   keeps and `log/` before those records count as durable.
//! - **Recovery is strict.** Every record's checksum is verified. Only a torn tail of the last
//!   segment (an incomplete record, a zero-filled region, or a last record whose payload reads
//!   as zeros — data that was never acknowledged) is truncated, with one `warn!`. Anything else — a bad checksum in a complete record, a
//!   non-contiguous seq, a damaged header, a missing segment, a missing `log/` or `sled/`, sled
//!   panicking or missing its keys, a log that ends before the seq recorded at the last clean
//!   close or snapshot — is [`Error::Corrupt`] naming the file. A damaged store is never opened
//!   as an empty day.
//! - **Snapshots are durable before the log they replace is deleted.** [`Store::write_snapshot`]
//!   writes chunks + manifest, `flush`es sled and fsyncs sled's files, then moves `snap/current`
//!   (and syncs again). Two generations are kept, and the log is compacted only through the
//!   *older* one, so a corrupt newest snapshot falls back to the previous one plus log replay
//!   (reported by `warn!`, [`Recovered::snapshot_fallback`] and [`inspect`]). A crash during
//!   the first snapshot leaves generations without a pointer: never committed, ignored (the
//!   log, never compacted for them, is replayed from seq 1).
//!
//! - **Reading never writes.** [`read_only`] recovers what [`Store::open`] would (same checks)
//!   under a shared lock, from a temporary copy of `sled/`, without repairing a torn tail: every
//!   byte of the directory stays as it was. Past days and `taskflow store events` read this way.
//!
//! What a crash loses: nothing acknowledged. An external truncation of the last segment of a
//! store that crashed (no clean close since the truncated events were written) is
//! indistinguishable from a torn write and is treated as one; after a clean close or a snapshot
//! the store records the durable seq, so such a truncation is reported as corruption.

mod backup;
mod data_dir;
mod epoch;
mod error;
mod format;
pub mod history;
mod log;
mod read;
mod seed; // replication: stores seeded from a snapshot
mod snap;
#[cfg(feature = "test-util")]
pub mod testing;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;
use tracing::warn;

pub use backup::{Report, SegmentReport, Verdict, backup, inspect, restore};
pub use data_dir::{
    DAYS_DIR, MANAGER_LOCK, ManagerLock, day_dirs, finish_removals, is_empty_dir, remove_day_dir,
};
pub use epoch::{EPOCH_FILE, bump_dir_epoch, dir_epoch};
pub use error::{Error, Result};
pub use format::{FORMAT_VERSION, Manifest};
pub use log::{Durable, LogReader, LogStats, MAX_PAYLOAD, SegmentInfo, TornTail};
pub use read::{ReadEvents, read_only};
pub use seed::create_seeded;
pub use snap::GenerationReport;

use format::{encode_manifest, now_unix, read_manifest, sync_dir, write_file_durably};
use log::Log;
use snap::{APP_PREFIX, KEY_CREATED, KEY_FORMAT_VERSION, KEY_LOG_FLOOR};

/// Options of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A log segment is closed and a new one started once it would exceed this many bytes.
    /// Default 64 MiB.
    pub segment_bytes: u64,
    /// sled's page cache size in bytes. Default 64 MiB (the store keeps little in sled).
    pub sled_cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { segment_bytes: 64 << 20, sled_cache_bytes: 64 << 20 }
    }
}

impl StoreOptions {
    /// Small segments (64 KiB) and cache, so tests exercise segment rolling.
    pub fn for_test() -> Self {
        StoreOptions { segment_bytes: 64 << 10, sled_cache_bytes: 8 << 20 }
    }
}

/// The state found by [`Store::open`] (or [`read_only`]): the newest valid snapshot and the
/// events after it.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot to start from, if one was ever written.
    pub snapshot: Option<RecoveredSnapshot>,
    /// Every durable event after the snapshot, in seq order ([`read_only`] with
    /// [`ReadEvents::All`]: every event the log still holds).
    pub events: Vec<(u64, Vec<u8>)>,
    /// The seq the next appended event must carry.
    pub next_seq: u64,
    /// A torn (never acknowledged) tail: [`Store::open`] truncated it, [`read_only`] left it in
    /// place and returned the events before it.
    pub torn_tail: Option<TornTail>,
    /// Set when the newest snapshot was unusable and the previous one was used; says why.
    pub snapshot_fallback: Option<String>,
    /// Inconsistencies that lost nothing but deserve an operator's look (also logged).
    pub warnings: Vec<String>,
}

/// A snapshot returned by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSnapshot {
    /// The snapshot covers every event with seq ≤ this.
    pub seq: u64,
    /// The sled generation it was read from.
    pub generation: u64,
    /// The opaque snapshot bytes.
    pub bytes: Vec<u8>,
}

/// The result of [`Store::write_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The new generation.
    pub generation: u64,
    /// The seq it covers.
    pub seq: u64,
    /// The seq the kept older generation covers (the log is compacted through it).
    pub fallback_seq: Option<u64>,
    /// Log segments deleted by the compaction that followed.
    pub segments_removed: usize,
}

/// An open event store. `Send + Sync`: share it in an `Arc` between the actor that appends and
/// the background thread that writes snapshots.
pub struct Store {
    dir: PathBuf,
    sled_dir: PathBuf,
    log: Log,
    db: sled::Db,
    /// Serialises snapshot writes and holds the seq of the older kept generation.
    snap_lock: Mutex<Option<u64>>,
    closed: bool,
    // Declared last so it is released after sled and the writer are gone.
    _lock: DirLock,
}

/// The store's `LOCK`, released only once sled has let go of its own lock too (sled 0.34's
/// background threads keep `sled/db` open for a moment after the last handle is dropped), so
/// whoever takes `LOCK` next finds sled free.
struct DirLock {
    _file: File,
    sled_dir: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if !snap::wait_sled_released(&self.sled_dir) {
            warn!(dir = %self.sled_dir.display(), "sled still holds its lock after the store closed");
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Takes the exclusive lock on `<dir>/LOCK`.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Everything in `dir` except the lock file.
fn dir_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.file_name().is_some_and(|n| n != "LOCK") {
            out.push(p);
        }
    }
    Ok(out)
}

/// Whether a directory without a STORE manifest holds only what an interrupted
/// [`init_layout`] leaves: `log/` (segments with a header and no record), `sled/`,
/// `SLEDMARK`, a `SLEDMARK.tmp` or `STORE.tmp` not yet renamed. No event is ever appended before the manifest exists, so nothing acknowledged
/// can be in it; anything else (a record, an unknown file) is not taken for one.
fn interrupted_init(entries: &[PathBuf]) -> Result<bool> {
    for e in entries {
        match e.file_name().and_then(|n| n.to_str()) {
            // The temporary files of `write_file_durably` (SLEDMARK's, STORE's) included.
            Some("sled" | "SLEDMARK" | "SLEDMARK.tmp" | "STORE.tmp") => {}
            Some("log") => {
                for seg in fs::read_dir(e).map_err(|err| Error::io(e, err))? {
                    let seg = seg.map_err(|err| Error::io(e, err))?;
                    let len = seg.metadata().map_err(|err| Error::io(seg.path(), err))?.len();
                    if len > log::SEG_HEADER as u64 {
                        return Ok(false);
                    }
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Creates a fresh store layout in the (locked, empty) `dir`. The first log segment starts at
/// `first_seq`; `fill` may write metadata/snapshots into sled before the manifest seals it.
pub(crate) fn init_layout(
    dir: &Path,
    opts: &StoreOptions,
    first_seq: u64,
    fill: impl FnOnce(&sled::Db, &Path) -> Result<()>,
) -> Result<()> {
    let log_dir = dir.join("log");
    fs::create_dir_all(&log_dir).map_err(|e| Error::io(&log_dir, e))?;
    log::create_segment(&log_dir, first_seq)?;
    let sled_dir = snap::sled_dir(dir);
    let db = snap::open_sled(&sled_dir, opts.sled_cache_bytes)?;
    snap::put_meta(&db, &sled_dir, KEY_FORMAT_VERSION, &FORMAT_VERSION)?;
    snap::put_meta(&db, &sled_dir, KEY_CREATED, &now_unix())?;
    fill(&db, &sled_dir)?;
    snap::commit(&db, &sled_dir)?;
    drop(db);
    sync_dir(dir)?;
    // The manifest is written last: a directory without it was never a complete store.
    let manifest = Manifest { format_version: FORMAT_VERSION, created_unix: now_unix() };
    write_file_durably(&dir.join("STORE"), &encode_manifest(&manifest))
}

/// What the shared recovery path found (used by `open` and by `inspect`).
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) chosen: snap::Chosen,
    pub(crate) log: log::LogRecovery,
    /// Inconsistencies that lose nothing but remove the fallback; logged with `warn!`.
    pub(crate) warnings: Vec<String>,
}

/// Which log records [`recover`] keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// None (inspection only checks them).
    Nothing,
    /// Those after the chosen snapshot (what a fold of the day needs).
    AfterSnapshot,
    /// Every record the log holds.
    All,
}

/// Checks a store whose lock is held and whose sled is open. With `repair`, a torn tail is
/// truncated; `keep` selects which events are kept in memory. `db` may be a copy of the
/// store's sled (a read-only open): `dir` names the files in messages and locates the log and
/// `SLEDMARK`, which are only read.
pub(crate) fn recover(dir: &Path, db: &sled::Db, repair: bool, keep: Keep) -> Result<Recovery> {
    let sled_dir = snap::sled_dir(dir);
    let log_dir = dir.join("log");
    match snap::get_value::<u16>(db, &sled_dir, KEY_FORMAT_VERSION.as_bytes())? {
        None => {
            return Err(Error::corrupt(
                &sled_dir,
                None,
                "sled holds no store metadata although STORE exists: its contents vanished",
            ));
        }
        Some(v) if v != FORMAT_VERSION => {
            return Err(Error::Version { path: sled_dir, found: v, supported: FORMAT_VERSION });
        }
        Some(_) => {}
    }
    snap::verify_meta(db, &sled_dir)?;
    snap::verify_commit(db, &sled_dir)?;
    let floor = snap::get_value::<u64>(db, &sled_dir, KEY_LOG_FLOOR.as_bytes())?.unwrap_or(0);
    let chosen = snap::choose(db, &sled_dir)?;
    let snap_seq = chosen.manifest.map_or(0, |m| m.seq);
    let keep_after = match keep {
        Keep::Nothing => u64::MAX,
        Keep::AfterSnapshot => snap_seq,
        Keep::All => 0,
    };
    let log = log::recover(&log_dir, keep_after, repair)?;
    let first_path = log.segments[0].path.clone();
    if log.first_seq > snap_seq + 1 {
        return Err(Error::corrupt(
            first_path,
            None,
            format!(
                "the log starts at seq {} but the usable snapshot covers only through seq {snap_seq}: events {}..{} are missing",
                log.first_seq,
                snap_seq + 1,
                log.first_seq - 1
            ),
        ));
    }
    let last = log.next_seq - 1;
    let last_path = log.segments.last().map(|s| s.path.clone()).unwrap_or(log_dir);
    if last < snap_seq {
        return Err(Error::corrupt(
            last_path,
            None,
            format!(
                "the log ends at seq {last} but the snapshot covers seq {snap_seq}: acknowledged events are missing"
            ),
        ));
    }
    if last < floor {
        return Err(Error::corrupt(
            last_path,
            None,
            format!(
                "the log ends at seq {last} but seq {floor} was durable at the last clean close or snapshot: acknowledged events were lost"
            ),
        ));
    }
    let mut warnings = Vec::new();
    if let Some(older) = chosen.older_seq
        && log.first_seq > older + 1
    {
        let w = format!(
            "{}: the log starts at seq {} but the fallback snapshot covers only through seq {older}: \
             segments were deleted outside the store; the newest snapshot is intact so nothing is \
             lost, but there is no fallback until the next snapshot",
            first_path.display(),
            log.first_seq
        );
        warn!("{w}");
        warnings.push(w);
    }
    Ok(Recovery { chosen, log, warnings })
}

impl Store {
    /// Opens (or, for a missing or empty directory, creates) the store in `dir` and recovers it.
    ///
    /// Fails with [`Error::Locked`] if another `Store` holds the directory, and with
    /// [`Error::Corrupt`] naming the file for any damage other than a torn tail; see the module
    /// docs for the exact rules.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<(Store, Recovered)> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = take_lock(&dir)?;
        let manifest_path = dir.join("STORE");
        if !manifest_path.exists() {
            let entries = dir_entries(&dir)?;
            if entries.is_empty() {
                init_layout(&dir, &opts, 1, |_, _| Ok(()))?;
            } else if interrupted_init(&entries)? {
                warn!(
                    dir = %dir.display(),
                    "the store's creation was interrupted (no STORE manifest, no event in its \
                     log): creating it again"
                );
                for e in &entries {
                    let removed =
                        if e.is_dir() { fs::remove_dir_all(e) } else { fs::remove_file(e) };
                    removed.map_err(|err| Error::io(e, err))?;
                }
                sync_dir(&dir)?;
                init_layout(&dir, &opts, 1, |_, _| Ok(()))?;
            } else {
                let names: Vec<String> = entries
                    .iter()
                    .filter_map(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                return Err(Error::corrupt(
                    &manifest_path,
                    None,
                    format!(
                        "the STORE manifest is missing but the directory holds {} and its log \
                         is not empty: not a store, nor an interrupted creation",
                        names.join(", ")
                    ),
                ));
            }
        }
        read_manifest(&manifest_path)?;
        let log_dir = dir.join("log");
        let sled_dir = snap::sled_dir(&dir);
        for d in [&log_dir, &sled_dir] {
            if !d.is_dir() {
                return Err(Error::corrupt(d, None, "directory is missing although STORE exists"));
            }
        }
        let db = snap::open_sled(&sled_dir, opts.sled_cache_bytes)?;
        let rec = recover(&dir, &db, true, Keep::AfterSnapshot)?;
        let snapshot = rec.chosen.manifest.map(|m| RecoveredSnapshot {
            seq: m.seq,
            generation: m.generation,
            bytes: rec.chosen.bytes,
        });
        // The older kept generation bounds compaction.
        let fallback_seq = rec.chosen.older_seq;
        let next_seq = rec.log.next_seq;
        let log = Log::start(log_dir, rec.log.segments, next_seq, opts.segment_bytes)?;
        let lock = DirLock { _file: lock, sled_dir: sled_dir.clone() };
        let store = Store {
            dir,
            sled_dir,
            log,
            db,
            snap_lock: Mutex::new(fallback_seq),
            closed: false,
            _lock: lock,
        };
        let recovered = Recovered {
            snapshot,
            events: rec.log.records,
            next_seq,
            torn_tail: rec.log.torn,
            snapshot_fallback: rec.chosen.fallback,
            warnings: rec.warnings,
        };
        Ok((store, recovered))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a batch of `(seq, payload)` events to the writer thread. Never waits on the disk.
    ///
    /// Seqs must continue the log without gaps or repeats ([`Error::Gap`], nothing queued).
    /// Returns [`Error::WriterFailed`] once the writer has stopped after an I/O error. The
    /// events are durable once [`Store::durable_seq`] reaches their seq.
    pub fn append(&self, batch: Vec<(u64, Vec<u8>)>) -> Result<()> {
        self.log.append(batch)
    }

    /// The seq the next handed-over event must carry.
    pub fn next_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// The durable watermark: every event with seq ≤ this survives power loss.
    pub fn durable_seq(&self) -> u64 {
        self.log.durable_seq()
    }

    /// A watch on the durable watermark (and the writer's failure, if any), for async waiters.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.log.durable()
    }

    /// Blocks until `seq` is durable (`Ok(true)`), `timeout` passes (`Ok(false)`) or the writer
    /// fails (`Err`). For threads that are not async; actors should use [`Store::durable`].
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> Result<bool> {
        self.log.wait_durable(seq, timeout)
    }

    /// Writer counters (fsyncs, events, bytes, batches) since open.
    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    /// The log's segments as currently known.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.log.segments()
    }

    /// Durable events with seq ≥ `from`, up to the watermark at the time of the call (for the
    /// snapshot builder and replication catch-up). Each segment is read and verified whole.
    pub fn read_from(&self, from: u64) -> LogReader {
        self.log.read_from(from)
    }

    /// Writes a snapshot covering every event with seq ≤ `seq`, durably, then compacts the log
    /// through the older kept snapshot.
    ///
    /// **Blocking** (several fsyncs, proportional to the snapshot size): run it on a background
    /// thread (`spawn_blocking`), never in an actor handler. `seq` must already be durable and
    /// not below the current snapshot. Concurrent calls are serialised.
    pub fn write_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<SnapshotWritten> {
        let mut fallback_seq = self.snap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let durable = self.durable_seq();
        if seq > durable {
            return Err(Error::Invalid(format!(
                "snapshot seq {seq} is beyond the durable watermark {durable}"
            )));
        }
        if let Some(ptr) = snap::read_pointer(&self.db, &self.sled_dir)?
            && let Ok((m, _)) = snap::load_generation(&self.db, ptr.current)
            && seq < m.seq
        {
            return Err(Error::Invalid(format!(
                "snapshot seq {seq} is older than the current snapshot's seq {}",
                m.seq
            )));
        }
        // Record the durable floor in the same sled sync as the snapshot.
        snap::put_meta(&self.db, &self.sled_dir, KEY_LOG_FLOOR, &durable)?;
        let (manifest, fallback) = snap::write_generation(&self.db, &self.sled_dir, seq, bytes)?;
        *fallback_seq = fallback.map(|m| m.seq);
        let segments_removed = match *fallback_seq {
            Some(s) => self.log.compact_through(s)?,
            None => 0,
        };
        Ok(SnapshotWritten {
            generation: manifest.generation,
            seq,
            fallback_seq: *fallback_seq,
            segments_removed,
        })
    }

    /// Deletes whole log segments whose events are all ≤ `seq`, but never beyond the older kept
    /// snapshot (so a fallback stays possible). Returns the number of segments deleted.
    pub fn compact_through(&self, seq: u64) -> Result<usize> {
        let fallback_seq = *self.snap_lock.lock().unwrap_or_else(|p| p.into_inner());
        match fallback_seq {
            Some(s) => self.log.compact_through(seq.min(s)),
            None => Ok(0),
        }
    }

    /// Reads caller metadata `name` (e.g. `cluster_id`).
    pub fn meta_get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        snap::get_value(&self.db, &self.sled_dir, format!("{APP_PREFIX}{name}").as_bytes())
    }

    /// Writes caller metadata `name`, power-loss durable on return. Blocking (fsync).
    pub fn meta_put<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        snap::put_meta(&self.db, &self.sled_dir, &format!("{APP_PREFIX}{name}"), value)?;
        snap::commit(&self.db, &self.sled_dir)
    }

    /// The epoch this day store last ran under (0 if never set). The authoritative, never
    /// decreasing epoch is the data directory's ([`bump_dir_epoch`]); this copy lets a day
    /// store moved to another data directory (or written by an older version) keep the floor.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self.meta_get::<u64>("epoch")?.unwrap_or(0))
    }

    /// Records `epoch` as the one this day store runs under, durably (never lowers it).
    pub fn set_epoch(&self, epoch: u64) -> Result<()> {
        if epoch > self.epoch()? {
            self.meta_put("epoch", &epoch)?;
        }
        Ok(())
    }

    /// All caller metadata as `(name, raw rmp payload)` pairs, verified.
    pub(crate) fn meta_all(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(APP_PREFIX.as_bytes()) {
            let (k, v) = item.map_err(|e| snap::sled_err(&self.sled_dir, e))?;
            let name = String::from_utf8_lossy(&k[APP_PREFIX.len()..]).into_owned();
            let payload = format::open_envelope(&v).map_err(|r| {
                Error::corrupt(&self.sled_dir, None, format!("key meta/app/{name}: {r}"))
            })?;
            out.push((name, payload.to_vec()));
        }
        Ok(out)
    }

    /// Stops the writer after it made everything handed over durable, records the durable seq
    /// (so a later loss of the log tail is detected) and releases the directory.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let durable = self.log.shutdown()?;
        snap::put_meta(&self.db, &self.sled_dir, KEY_LOG_FLOOR, &durable)?;
        snap::commit(&self.db, &self.sled_dir)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            warn!(dir = %self.dir.display(), error = %e, "event store did not close cleanly");
        }
    }
}
