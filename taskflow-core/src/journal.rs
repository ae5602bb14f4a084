//! The day journal: one business day's in-memory state and its durable history, kept together.
//!
//! ```text
//!  manager (the only writer)
//!    │ record(kind) ──► DayState::apply   (validates; the state changes at once)
//!    │ flush()      ──► Store::append     (group commit + fdatasync on the writer thread)
//!    │                    └─► durable watermark (watch) ──► effects may leave the process
//!    └──────────────► snapshot thread: a shadow DayState folded from the same events;
//!                     every `snapshot_every` events it waits until they are durable, encodes
//!                     the shadow and writes it to sled in chunks; the store then compacts.
//! ```
//!
//! **Invariant:** the in-memory state is exactly the fold of the events handed to the store, in
//! seq order — an event that does not apply is never logged, and every applied event is logged
//! at the next [`Journal::flush`]. Recovery ([`Journal::open`]) rebuilds the same state from the
//! newest valid snapshot plus the log after it.
//!
//! **The manager never waits on the disk or on a snapshot:** `record` and `flush` only apply and
//! queue; the fsync happens on the store's writer thread and snapshots are encoded from the
//! shadow copy on the snapshot thread, so a snapshot of a million shards costs the manager
//! nothing but handing its events over (moved, not copied).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::graph::TaskGraph;
use crate::model::BusinessDate;
use crate::state::{self, Applied, CodecError, DayEvent, DayState, EventKind};
use crate::store::{self, Durable, LogStats, Store, StoreOptions, TornTail};

/// Caller metadata of the manager's day store: its cluster id (random, set at creation).
pub(crate) const META_CLUSTER_ID: &str = "cluster_id";
/// Caller metadata written by a recovery from replicas: `(epoch, seq)` — the first epoch and
/// the last seq taken from the replica. A replica of an older epoch that holds more than `seq`
/// holds a tail this history does not have, and is started over.
pub(crate) const META_RECOVERED_FROM: &str = "recovered_from";
/// Caller metadata of the manager's day store: in which epoch its events were written, as
/// `[EpochRun]` (`cluster/history.rs`); recorded by a cluster manager at start, before it
/// writes an event, and copied from the replica by a recovery. Absent: every event of an
/// unknown epoch.
pub(crate) const META_EPOCH_RUNS: &str = "epoch_runs";

/// A hook shown every flushed batch of `(seq, encoded event)` (replication).
pub(crate) type Tap = Box<dyn Fn(&[(u64, Vec<u8>)]) + Send>;

/// Options of a [`Journal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// Options of the underlying store.
    pub store: StoreOptions,
    /// A snapshot is written after this many events since the previous one. Default 200,000
    /// (a few seconds of replay at most).
    pub snapshot_every: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { store: StoreOptions::default(), snapshot_every: 200_000 }
    }
}

impl JournalOptions {
    /// Small segments and frequent snapshots, so tests exercise both.
    pub fn for_test() -> Self {
        JournalOptions { store: StoreOptions::for_test(), snapshot_every: 1_000 }
    }
}

/// Why a journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (I/O, corruption, lock); its message names the file and the next step.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A logged event could not be decoded.
    #[error(
        "event {seq} in {dir} cannot be decoded: {source}; the store is damaged or was written by \
         a newer taskflow — run `taskflow store inspect {dir}`"
    )]
    Decode {
        /// The data directory.
        dir: PathBuf,
        /// The event's seq.
        seq: u64,
        /// Why.
        source: CodecError,
    },
    /// The snapshot could not be decoded.
    #[error(
        "the snapshot at seq {seq} in {dir} cannot be decoded: {source} — run `taskflow store \
         inspect {dir}`"
    )]
    Snapshot {
        /// The data directory.
        dir: PathBuf,
        /// The snapshot's seq.
        seq: u64,
        /// Why.
        source: CodecError,
    },
    /// A logged event does not apply to the state recovered before it.
    #[error("event {seq} in {dir} does not apply to the recovered day: {source}")]
    Replay {
        /// The data directory.
        dir: PathBuf,
        /// The event's seq.
        seq: u64,
        /// Why.
        source: state::Error,
    },
    /// The data directory holds another business date.
    #[error("{dir} holds business date {found}, not {expected}")]
    DateMismatch {
        /// The data directory.
        dir: PathBuf,
        /// The date asked for.
        expected: BusinessDate,
        /// The date found.
        found: BusinessDate,
    },
}

/// What [`Journal::open`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The seq of the snapshot recovery started from, if any.
    pub snapshot_seq: Option<u64>,
    /// How many logged events were replayed on top of it.
    pub replayed: usize,
    /// A torn, never-acknowledged tail that the store truncated.
    pub torn_tail: Option<TornTail>,
    /// Set when the newest snapshot was unusable and the previous one was used.
    pub snapshot_fallback: Option<String>,
    /// Inconsistencies that lost nothing but deserve an operator's look.
    pub warnings: Vec<String>,
}

/// One business day's state plus its durable log and snapshots. See the module docs.
pub struct Journal {
    state: DayState,
    log: DayLog,
}

/// A journal without its state: the durable log and the snapshot thread of one day. The
/// manager's pure core owns the [`DayState`] and applies every event itself; the actor hands
/// the applied events to this log ([`DayLog::push`]) and flushes them.
pub(crate) struct DayLog {
    dir: PathBuf,
    store: Arc<Store>,
    /// Applied to `state`, not yet handed to the store.
    pending: Vec<DayEvent>,
    snapshots: Option<Snapshotter>,
    last_snapshot: watch::Receiver<u64>,
    /// Replication: sees every flushed batch (see `set_tap`).
    tap: Option<Tap>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.log.dir)
            .field("date", &self.state.date())
            .field("last_seq", &self.state.last_seq())
            .field("pending", &self.log.pending.len())
            .finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal of `date` in `dir` and recovers its state: the newest
    /// valid snapshot, then every durable event after it. Blocking (it opens sled and reads the
    /// log); call it before starting the actor that will own the journal, or in `spawn_blocking`.
    pub fn open(
        dir: impl AsRef<Path>,
        date: BusinessDate,
        graph: Arc<TaskGraph>,
        opts: JournalOptions,
    ) -> Result<(Journal, Recovery), Error> {
        let dir = dir.as_ref().to_path_buf();
        let (store, recovered) = Store::open(&dir, opts.store.clone())?;
        let mut recovery = Recovery {
            snapshot_seq: recovered.snapshot.as_ref().map(|s| s.seq),
            replayed: recovered.events.len(),
            torn_tail: recovered.torn_tail,
            snapshot_fallback: recovered.snapshot_fallback,
            warnings: recovered.warnings,
        };
        let mut state = match recovered.snapshot {
            Some(snap) => DayState::decode_snapshot(&snap.bytes, graph)
                .map_err(|source| Error::Snapshot { dir: dir.clone(), seq: snap.seq, source })?,
            None => DayState::new(date, graph),
        };
        if state.date() != date {
            return Err(Error::DateMismatch { dir, expected: date, found: state.date() });
        }
        for (seq, bytes) in recovered.events {
            let event = DayEvent::decode(&bytes).map_err(|source| Error::Decode {
                dir: dir.clone(),
                seq,
                source,
            })?;
            if event.seq != seq {
                let source = CodecError::Malformed {
                    what: "event",
                    detail: format!("its body says seq {}, the log says {seq}", event.seq),
                };
                return Err(Error::Decode { dir, seq, source });
            }
            state.apply(&event).map_err(|source| Error::Replay {
                dir: dir.clone(),
                seq,
                source,
            })?;
        }
        if recovery.snapshot_seq.is_some() || recovery.replayed > 0 {
            info!(
                dir = %dir.display(),
                %date,
                snapshot_seq = ?recovery.snapshot_seq,
                replayed = recovery.replayed,
                last_seq = state.last_seq(),
                "day recovered"
            );
        }
        recovery.warnings.shrink_to_fit();
        let store = Arc::new(store);
        let snapshot_seq = recovery.snapshot_seq.unwrap_or(0);
        let (snapshots, last_snapshot) =
            Snapshotter::start(state.clone(), store.clone(), opts.snapshot_every, snapshot_seq);
        let log = DayLog {
            dir,
            store,
            pending: Vec::new(),
            snapshots: Some(snapshots),
            last_snapshot,
            tap: None,
        };
        let journal = Journal { state, log };
        Ok((journal, recovery))
    }

    /// The day's state: the fold of every recorded event (durable or not yet).
    pub fn state(&self) -> &DayState {
        &self.state
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.log.dir
    }

    /// Applies `kind` as the next event, stamped `at_ms`, and queues it for the log. On error
    /// nothing changed and nothing is queued. Never touches the disk.
    pub fn record(&mut self, kind: EventKind, at_ms: i64) -> Result<(u64, Applied), state::Error> {
        let event = DayEvent { seq: self.state.last_seq() + 1, at_ms, kind };
        event
            .check_size()
            .map_err(|len| state::Error::TooLarge { len, limit: state::MAX_EVENT_BYTES })?;
        let applied = self.state.apply(&event)?;
        let seq = event.seq;
        self.log.push(event);
        Ok((seq, applied))
    }

    /// Hands every queued event to the store as one batch (one group commit covers it) and to
    /// the snapshot thread. Returns the last seq handed over, or `None` if nothing was queued.
    /// Never waits on the disk: durability is announced by [`Journal::durable`].
    pub fn flush(&mut self) -> Result<Option<u64>, store::Error> {
        self.log.flush()
    }

    /// The durable watermark: every event with seq ≤ it survives power loss.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.log.durable()
    }

    /// The current durable watermark.
    pub fn durable_seq(&self) -> u64 {
        self.log.durable_seq()
    }

    /// The seq covered by the newest snapshot written (0 before the first).
    pub fn snapshots(&self) -> watch::Receiver<u64> {
        self.log.snapshots()
    }

    /// Asks the snapshot thread for a snapshot of everything flushed so far, as soon as it is
    /// durable (e.g. when the day closes). Returns at once; watch [`Journal::snapshots`].
    pub fn request_snapshot(&self) {
        self.log.request_snapshot()
    }

    /// Group-commit counters of the log (fsyncs, events, bytes), for metrics.
    pub fn log_stats(&self) -> LogStats {
        self.log.log_stats()
    }

    /// The epoch this day store last ran under (see [`store::Store::epoch`]).
    pub fn epoch(&self) -> Result<u64, store::Error> {
        self.log.epoch()
    }

    /// Flushes, waits (bounded by `timeout`) until everything is durable, stops the snapshot
    /// thread and closes the store. Blocking.
    pub fn close(self, timeout: Duration) -> Result<(), Error> {
        self.log.close(timeout)
    }

    /// The state and the log, apart: the manager's core owns the state, its actor the log.
    pub(crate) fn into_parts(self) -> (DayState, DayLog) {
        (self.state, self.log)
    }
}

impl DayLog {
    /// Queues an event that the caller has already applied to its state (seqs contiguous).
    pub(crate) fn push(&mut self, event: DayEvent) {
        self.pending.push(event);
    }

    /// Queues events the caller has already applied, in seq order.
    pub(crate) fn extend(&mut self, events: Vec<DayEvent>) {
        if self.pending.is_empty() {
            self.pending = events;
        } else {
            self.pending.extend(events);
        }
    }

    /// Hands every queued event to the store as one batch (one group commit covers it) and to
    /// the snapshot thread. Returns the last seq handed over, or `None` if nothing was queued.
    /// Never waits on the disk: durability is announced by [`DayLog::durable`].
    pub(crate) fn flush(&mut self) -> Result<Option<u64>, store::Error> {
        let Some(last) = self.pending.last().map(|e| e.seq) else {
            return Ok(None);
        };
        let batch: Vec<(u64, Vec<u8>)> = self.pending.iter().map(|e| (e.seq, e.encode())).collect();
        if let Some(tap) = &self.tap {
            tap(&batch);
        }
        self.store.append(batch)?;
        let events = std::mem::take(&mut self.pending);
        if let Some(s) = &self.snapshots {
            s.send(SnapshotMsg::Events(events));
        }
        Ok(Some(last))
    }

    /// The durable watermark: every event with seq ≤ it survives power loss.
    pub(crate) fn durable(&self) -> watch::Receiver<Durable> {
        self.store.durable()
    }

    /// The current durable watermark.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.store.durable_seq()
    }

    /// The seq covered by the newest snapshot written (0 before the first).
    pub(crate) fn snapshots(&self) -> watch::Receiver<u64> {
        self.last_snapshot.clone()
    }

    /// Asks the snapshot thread for a snapshot of everything flushed so far, as soon as it is
    /// durable (e.g. when the day closes). Returns at once; watch [`DayLog::snapshots`].
    pub(crate) fn request_snapshot(&self) {
        if let Some(s) = &self.snapshots {
            s.send(SnapshotMsg::Now);
        }
    }

    /// Group-commit counters of the log (fsyncs, events, bytes), for metrics.
    pub(crate) fn log_stats(&self) -> LogStats {
        self.store.stats()
    }

    // --- replication ---
    /// Shows every flushed batch to `tap` before it is handed to the store (replication keeps
    /// a bounded copy of the newest events, so it reads the live tail from memory).
    pub(crate) fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The store (replication catch-up reads the log and the snapshot from it).
    pub(crate) fn store(&self) -> Arc<Store> {
        self.store.clone()
    }
    // --- end replication ---

    /// The epoch this day store last ran under (see [`store::Store::epoch`]).
    pub(crate) fn epoch(&self) -> Result<u64, store::Error> {
        self.store.epoch()
    }

    /// Records the epoch the manager now runs under in the day store, durably (blocking).
    pub(crate) fn set_epoch(&self, epoch: u64) -> Result<(), store::Error> {
        self.store.set_epoch(epoch)
    }

    /// Flushes, waits (bounded by `timeout`) until everything is durable, stops the snapshot
    /// thread and closes the store. Blocking.
    pub(crate) fn close(mut self, timeout: Duration) -> Result<(), Error> {
        let last = self.flush()?;
        if let Some(seq) = last {
            self.store.wait_durable(seq, timeout)?;
        }
        if let Some(s) = self.snapshots.take() {
            s.stop();
        }
        match Arc::try_unwrap(self.store) {
            Ok(store) => store.close()?,
            // Unreachable once the snapshot thread has been joined; dropping still releases it.
            Err(_) => error!(dir = %self.dir.display(), "store still shared at close"),
        }
        Ok(())
    }
}

enum SnapshotMsg {
    Events(Vec<DayEvent>),
    Now,
}

/// The snapshot thread: folds a shadow copy of the day and writes snapshots from it.
struct Snapshotter {
    tx: Option<mpsc::Sender<SnapshotMsg>>,
    thread: Option<JoinHandle<()>>,
}

impl Snapshotter {
    fn start(
        mut shadow: DayState,
        store: Arc<Store>,
        every: u64,
        snapshot_seq: u64,
    ) -> (Snapshotter, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel::<SnapshotMsg>();
        let (done_tx, done_rx) = watch::channel(snapshot_seq);
        let thread = std::thread::Builder::new()
            .name("taskflow-snapshot".into())
            .spawn(move || {
                let mut since = shadow.last_seq().saturating_sub(snapshot_seq);
                let mut broken = false;
                while let Ok(first) = rx.recv() {
                    let mut now = false;
                    for msg in std::iter::once(first).chain(rx.try_iter()) {
                        match msg {
                            SnapshotMsg::Now => now = true,
                            SnapshotMsg::Events(events) => {
                                for e in &events {
                                    if broken {
                                        break;
                                    }
                                    if let Err(err) = shadow.apply(e) {
                                        // The manager applied the same event; a difference is a
                                        // bug. Stop snapshotting (the log still has everything).
                                        error!(seq = e.seq, %err, "snapshot shadow diverged; snapshots disabled");
                                        broken = true;
                                    }
                                }
                                since += events.len() as u64;
                            }
                        }
                    }
                    let seq = shadow.last_seq();
                    if broken || seq <= *done_tx.borrow() || !(now || since >= every) {
                        continue;
                    }
                    match write_snapshot(&store, &shadow) {
                        Ok(()) => {
                            since = 0;
                            done_tx.send_replace(seq);
                        }
                        Err(err) => error!(seq, %err, "snapshot failed; the log keeps every event"),
                    }
                }
            })
            .ok();
        if thread.is_none() {
            error!(
                "cannot start the snapshot thread; snapshots disabled, the log keeps every event"
            );
        }
        (Snapshotter { tx: thread.as_ref().map(|_| tx), thread }, done_rx)
    }

    fn send(&self, msg: SnapshotMsg) {
        if let Some(tx) = &self.tx {
            // A send fails only if the thread is gone, which it reports itself.
            let _ = tx.send(msg);
        }
    }

    fn stop(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the shadow's events are durable, then writes its snapshot.
fn write_snapshot(store: &Store, shadow: &DayState) -> Result<(), store::Error> {
    let seq = shadow.last_seq();
    if !store.wait_durable(seq, Duration::from_secs(60))? {
        return Err(store::Error::Invalid(format!("events through {seq} not durable after 60 s")));
    }
    let started = std::time::Instant::now();
    let bytes = shadow.encode_snapshot();
    let written = store.write_snapshot(seq, &bytes)?;
    info!(
        seq,
        bytes = bytes.len(),
        generation = written.generation,
        segments_removed = written.segments_removed,
        ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(())
}
