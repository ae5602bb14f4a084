//! The executor's replicas of the manager's day logs (`taskflow executor --data DIR`).
//!
//! ```text
//! Agent ──Replicate / ReplicaPull──► ReplicaActor ── ReplicaSet ── Store  DIR/replica/<date>/<cluster id>/
//!                                        └──ReplicaAck / ReplicaChunk──► manager inbox
//! ```
//!
//! A replica is an ordinary [`Store`] (the same log segments, snapshot generations and
//! metadata), so a manager could open it as its own day store. It is applied **strictly in
//! seq order**: a part that does not continue it exactly is not applied, and the ack asks the
//! manager to resend from the replica's next seq (or to start over). Acks carry the replica's
//! *durable* seq (after the store's fdatasync), so the manager knows exactly what a recovery
//! from this replica would keep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::codec::{RejectLog, WireError};
use super::history;
use super::messages::{
    Bytes, ChunkBody, EpochRun, PullPart, ReplicaAckMsg, ReplicaBody, ReplicaNeed, ReplicaPosition,
    ReplicaPullMsg, ReplicateMsg, ToManager,
};
use super::status::Status;
use crate::model::BusinessDate;
use crate::store::{self, LogReader, Store, StoreOptions};

/// Metadata names in a replica store.
const META_CLUSTER_ID: &str = "cluster_id";
const META_DATE: &str = "replica_date";
const META_EPOCH: &str = "replica_epoch";
/// The epochs its events were written in (`[EpochRun]`, format 2; absent: unknown).
const META_RUNS: &str = "replica_runs";
/// The replica format: 2 (absent: 1, which recorded only `replica_epoch`).
const META_FORMAT: &str = "replica_format";
const FORMAT: u16 = 2;
/// At most this many replicas are reported in `Join` (newest dates first).
const MAX_REPORTED: usize = 16;

/// A part of the stream that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// What to ask the manager for.
    pub(crate) need: ReplicaNeed,
    /// Whether the manager should hear about it now (gaps, resets, snapshot credits); event
    /// appends are acknowledged when they become durable.
    pub(crate) ack_now: bool,
}

struct OpenReplica {
    cluster_id: String,
    date: String,
    epoch: u64,
    /// The epochs its events were written in.
    runs: Vec<EpochRun>,
    /// A new copy being built beside the old one (in the staging directory), swapped in
    /// once it is durable through this seq; until then the old copy is what is reported.
    staged: Option<u64>,
    store: Arc<Store>,
    /// Bumped at every open, so durable notices of a replaced store are ignored.
    generation: u64,
}

struct PendingSnapshot {
    cluster_id: String,
    date: String,
    epoch: u64,
    runs: Vec<EpochRun>,
    upto: u64,
    base_seq: u64,
    len: u64,
    crc: u32,
    buf: Vec<u8>,
}

/// Snapshot bytes and an open log reader kept between the pulls of a recovering manager.
struct PullCache {
    key: (String, String),
    snapshot: Option<(u64, u32, Arc<Vec<u8>>)>,
    reader: Option<(u64, LogReader)>,
}

/// Every replica under `DIR/replica`, at most one open at a time.
pub(crate) struct ReplicaSet {
    root: PathBuf,
    opts: StoreOptions,
    known: BTreeMap<(String, String), ReplicaPosition>,
    open: Option<OpenReplica>,
    pending: Option<PendingSnapshot>,
    pull: Option<PullCache>,
    generation: u64,
    /// Retention: replicas of at most this many dates are kept (the newest; see
    /// [`ReplicaSet::prune_dates`]).
    retain_days: u32,
}

/// A cluster id usable as a directory name (peer-controlled: checked before any use).
pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_date(s: &str) -> bool {
    s.parse::<BusinessDate>().is_ok_and(|d| d.to_string() == s)
}

impl ReplicaSet {
    /// Opens the replica root `data/replica` and lists the replicas it holds.
    pub(crate) fn open(data: &Path, opts: StoreOptions) -> Result<ReplicaSet, String> {
        let root = data.join("replica");
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create the replica directory {}: {e}", root.display()))?;
        let mut set = ReplicaSet {
            root,
            opts,
            known: BTreeMap::new(),
            open: None,
            pending: None,
            pull: None,
            generation: 0,
            retain_days: crate::model::DEFAULT_RETAIN_DAYS,
        };
        set.scan();
        Ok(set)
    }

    /// Keeps replicas of at most `n` dates (≥ 1) from now on (`--retain-days`).
    pub(crate) fn set_retain_days(&mut self, n: u32) {
        self.retain_days = n.max(1);
    }

    /// Retention of the executor's per-day replicas: when a replica of a new date appears,
    /// the dates beyond the newest `retain_days` dates held are removed (`replica/<date>/`
    /// whole; never the date being written or staged). The executor has no calendar: it
    /// counts the dates it holds, each a business day a manager opened, so it keeps at least
    /// what a manager with the same `retain_days` keeps. A failure is logged, never fatal.
    fn prune_dates(&mut self) {
        let mut dates: Vec<String> = self.known.keys().map(|(d, _)| d.clone()).collect();
        dates.extend(self.open.as_ref().map(|o| o.date.clone()));
        dates.sort_unstable_by(|a, b| b.cmp(a));
        dates.dedup();
        let busy = |d: &str| {
            self.open.as_ref().is_some_and(|o| o.date == d)
                || self.pending.as_ref().is_some_and(|p| p.date == d)
        };
        let doomed: Vec<String> = dates
            .into_iter()
            .skip(self.retain_days as usize)
            .filter(|d| valid_date(d) && !busy(d))
            .collect();
        for date in doomed {
            let dir = self.root.join(&date);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    info!(%date, dir = %dir.display(), retain_days = self.retain_days, "retention: replica of an old business day removed");
                    self.known.retain(|(d, _), _| *d != date);
                }
                Err(e) => {
                    warn!(%date, dir = %dir.display(), error = %e, "retention: cannot remove an old replica; it is kept")
                }
            }
        }
    }

    fn dir_of(&self, date: &str, cluster_id: &str) -> PathBuf {
        self.root.join(date).join(cluster_id)
    }

    /// Where a replacement copy is built (a name no cluster id can have).
    fn staging_of(&self, date: &str, cluster_id: &str) -> PathBuf {
        self.root.join(date).join(format!(".{cluster_id}.staging"))
    }

    /// Where the old copy waits during a swap.
    fn old_of(&self, date: &str, cluster_id: &str) -> PathBuf {
        self.root.join(date).join(format!(".{cluster_id}.old"))
    }

    /// Finishes what a crash interrupted in one date directory: a staging copy is dropped
    /// (the old copy is complete); an old copy moved aside goes back if the swap did not
    /// finish, and is removed if it did.
    fn tidy(&self, date_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(date_dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix('.') else { continue };
            if let Some(id) = rest.strip_suffix(".staging").filter(|id| valid_id(id)) {
                warn!(dir = %e.path().display(), "removing an unfinished replacement of replica {id}");
                let _ = std::fs::remove_dir_all(e.path());
            } else if let Some(id) = rest.strip_suffix(".old").filter(|id| valid_id(id)) {
                let real = date_dir.join(id);
                if real.join("STORE").exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                } else {
                    warn!(dir = %real.display(), "a replica swap was interrupted; the old copy is put back");
                    let _ = std::fs::remove_dir_all(&real);
                    let _ = std::fs::rename(e.path(), &real);
                }
            }
        }
    }

    /// Reads the position of every replica on disk (opening each store once).
    fn scan(&mut self) {
        let Ok(dates) = std::fs::read_dir(&self.root) else { return };
        for d in dates.flatten() {
            let date = d.file_name().to_string_lossy().into_owned();
            if !valid_date(&date) {
                continue;
            }
            self.tidy(&d.path());
            let Ok(ids) = std::fs::read_dir(d.path()) else { continue };
            for c in ids.flatten() {
                let cluster_id = c.file_name().to_string_lossy().into_owned();
                if !valid_id(&cluster_id) || !c.path().join("STORE").exists() {
                    continue;
                }
                match Store::open(c.path(), self.opts.clone()) {
                    Ok((s, _)) => {
                        let epoch = s.meta_get::<u64>(META_EPOCH).ok().flatten().unwrap_or(0);
                        let runs = s.meta_get(META_RUNS).ok().flatten().unwrap_or_default();
                        let pos = ReplicaPosition {
                            cluster_id: cluster_id.clone(),
                            date: date.clone(),
                            epoch,
                            seq: s.durable_seq().max(s.next_seq().saturating_sub(1)),
                            runs,
                        };
                        self.known.insert((date.clone(), cluster_id), pos);
                    }
                    Err(e) => {
                        warn!(dir = %c.path().display(), error = %e, "replica unusable; ignored")
                    }
                }
            }
        }
    }

    /// The replicas held, newest dates first (for `Join`).
    pub(crate) fn positions(&self) -> Vec<ReplicaPosition> {
        let mut out: Vec<ReplicaPosition> = self.known.values().cloned().collect();
        if let Some(o) = self.open.as_ref().filter(|o| o.staged.is_none()) {
            let seq = o.store.durable_seq();
            for p in &mut out {
                if p.cluster_id == o.cluster_id && p.date == o.date {
                    p.seq = seq;
                    p.epoch = o.epoch;
                    p.runs = history::through(&o.runs, seq);
                }
            }
        }
        out.sort_by(|a, b| b.date.cmp(&a.date).then(b.freshness().cmp(&a.freshness())));
        out.truncate(MAX_REPORTED);
        out
    }

    /// The open replica's store and its open generation (for durable notices).
    pub(crate) fn open_store(&self) -> Option<(Arc<Store>, u64)> {
        self.open.as_ref().map(|o| (o.store.clone(), o.generation))
    }

    /// The ack for the current state of (cluster id, date).
    pub(crate) fn ack(
        &self,
        executor: &str,
        instance: u64,
        cluster_id: &str,
        date: &str,
        need: ReplicaNeed,
    ) -> ReplicaAckMsg {
        let (durable_seq, next_seq, staged) = match &self.open {
            Some(o) if o.cluster_id == cluster_id && o.date == date => {
                (o.store.durable_seq(), o.store.next_seq(), o.staged.is_some())
            }
            _ => (0, 0, false),
        };
        let snapshot_received = match &self.pending {
            Some(p) if p.cluster_id == cluster_id && p.date == date => p.buf.len() as u64,
            _ => 0,
        };
        ReplicaAckMsg {
            executor: executor.to_owned(),
            instance,
            cluster_id: cluster_id.to_owned(),
            date: date.to_owned(),
            durable_seq,
            next_seq,
            snapshot_received,
            need,
            staged,
        }
    }

    /// Makes (cluster id, date) the open replica if it exists on disk.
    fn ensure_open(&mut self, cluster_id: &str, date: &str) -> Result<bool, String> {
        if self.open.as_ref().is_some_and(|o| o.cluster_id == cluster_id && o.date == date) {
            return Ok(true);
        }
        let dir = self.dir_of(date, cluster_id);
        if !dir.join("STORE").exists() {
            return Ok(false);
        }
        self.close_open();
        let (store, _) = Store::open(&dir, self.opts.clone()).map_err(|e| e.to_string())?;
        let epoch = store.meta_get::<u64>(META_EPOCH).map_err(|e| e.to_string())?.unwrap_or(0);
        let runs = store.meta_get(META_RUNS).map_err(|e| e.to_string())?.unwrap_or_default();
        self.generation += 1;
        self.open = Some(OpenReplica {
            cluster_id: cluster_id.to_owned(),
            date: date.to_owned(),
            epoch,
            runs,
            staged: None,
            store: Arc::new(store),
            generation: self.generation,
        });
        Ok(true)
    }

    fn close_open(&mut self) {
        if let Some(o) = self.open.take() {
            self.pull = None;
            if o.staged.is_some() {
                // An unfinished replacement: the old copy stays what this executor holds.
                let staging = self.staging_of(&o.date, &o.cluster_id);
                drop(o);
                if let Err(e) = std::fs::remove_dir_all(&staging) {
                    warn!(dir = %staging.display(), error = %e, "cannot remove an unfinished replica copy");
                }
                return;
            }
            let seq = o.store.durable_seq();
            if let Some(p) = self.known.get_mut(&(o.date.clone(), o.cluster_id.clone())) {
                p.seq = seq;
                p.epoch = o.epoch;
                p.runs = history::through(&o.runs, seq);
            }
            // The last reference closes the store (its Drop closes it cleanly).
            drop(o);
        }
    }

    /// Swaps a staged replacement in once it is durable through its bound: the old copy is
    /// moved aside, the new one renamed into place, the directory fsynced, the old one
    /// removed (a crash in between is finished by [`ReplicaSet::tidy`]). Returns whether it
    /// swapped.
    pub(crate) fn maybe_swap(&mut self) -> Result<bool, String> {
        let ready = self
            .open
            .as_ref()
            .is_some_and(|o| o.staged.is_some_and(|until| o.store.durable_seq() >= until));
        if !ready {
            return Ok(false);
        }
        let Some(o) = self.open.take() else { return Ok(false) };
        self.pull = None;
        let (cluster_id, date, epoch, runs) = (o.cluster_id, o.date, o.epoch, o.runs);
        let store = match Arc::try_unwrap(o.store) {
            Ok(store) => store,
            Err(shared) => {
                // Someone still reads it: try again at the next durable notice.
                self.open = Some(OpenReplica {
                    cluster_id,
                    date,
                    epoch,
                    runs,
                    staged: o.staged,
                    store: shared,
                    generation: o.generation,
                });
                return Ok(false);
            }
        };
        let seq = store.durable_seq();
        store.close().map_err(|e| e.to_string())?;
        let (real, staging, old) = (
            self.dir_of(&date, &cluster_id),
            self.staging_of(&date, &cluster_id),
            self.old_of(&date, &cluster_id),
        );
        let io =
            |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
        if real.exists() {
            std::fs::rename(&real, &old).map_err(|e| io("move aside", &real, e))?;
        }
        std::fs::rename(&staging, &real).map_err(|e| io("move into place", &staging, e))?;
        if let Some(parent) = real.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync", parent, e))?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io("remove", &old, e))?;
        }
        info!(%cluster_id, %date, seq, "replica replaced by its new copy");
        self.known.insert(
            (date.clone(), cluster_id.clone()),
            ReplicaPosition {
                cluster_id: cluster_id.clone(),
                date: date.clone(),
                epoch,
                seq,
                runs: history::through(&runs, seq),
            },
        );
        self.ensure_open(&cluster_id, &date)?;
        self.prune_dates();
        Ok(true)
    }

    /// Applies one part of the stream. Never panics on peer data; an error is a message for
    /// the log (the ack then asks for a reset).
    pub(crate) fn apply(&mut self, msg: ReplicateMsg) -> Result<Applied, String> {
        if !valid_id(&msg.cluster_id) || !valid_date(&msg.date) {
            return Err(format!(
                "bad cluster id {:?} or date {:?} in a replication message",
                msg.cluster_id, msg.date
            ));
        }
        match msg.body {
            ReplicaBody::Begin { base_seq, snapshot_len, snapshot_crc, runs, upto } => self.begin(
                &msg.cluster_id,
                &msg.date,
                msg.epoch,
                (base_seq, snapshot_len, snapshot_crc),
                runs,
                upto,
            ),
            ReplicaBody::SnapshotChunk { base_seq, offset, bytes } => {
                self.chunk(&msg.cluster_id, &msg.date, base_seq, offset, bytes)
            }
            ReplicaBody::Events { first_seq, events, written_in } => {
                self.events(&msg.cluster_id, &msg.date, msg.epoch, first_seq, events, written_in)
            }
        }
    }

    fn begin(
        &mut self,
        cluster_id: &str,
        date: &str,
        epoch: u64,
        (base_seq, len, crc): (u64, u64, u32),
        runs: Vec<EpochRun>,
        upto: u64,
    ) -> Result<Applied, String> {
        if len > (1 << 32) || (len == 0 && base_seq != 0) {
            return Err(format!("implausible replica start: base seq {base_seq}, {len} bytes"));
        }
        let held_epoch = self
            .positions()
            .into_iter()
            .find_map(|p| (p.cluster_id == cluster_id && p.date == date).then_some(p.epoch));
        if let Some(held) = held_epoch.filter(|&h| h > epoch) {
            return Err(format!(
                "a start-over from epoch {epoch} refused: the replica is at epoch {held}"
            ));
        }
        // Start over: a new copy is built beside the old one, which stays until the new one
        // is durable through `max(base_seq, upto)`.
        if self.open.as_ref().is_some_and(|o| o.cluster_id == cluster_id && o.date == date) {
            self.close_open();
        }
        self.pending = Some(PendingSnapshot {
            cluster_id: cluster_id.to_owned(),
            date: date.to_owned(),
            epoch,
            runs: history::through(&runs, base_seq),
            upto,
            base_seq,
            len,
            crc,
            buf: Vec::new(),
        });
        if len == 0 {
            self.install()?;
        }
        Ok(Applied { need: ReplicaNeed::Nothing, ack_now: true })
    }

    fn chunk(
        &mut self,
        cluster_id: &str,
        date: &str,
        base_seq: u64,
        offset: u64,
        bytes: Bytes,
    ) -> Result<Applied, String> {
        let Some(p) = self
            .pending
            .as_mut()
            .filter(|p| p.cluster_id == cluster_id && p.date == date && p.base_seq == base_seq)
        else {
            // A chunk of a start-over we do not know (lost Begin): start over again.
            return Ok(Applied { need: ReplicaNeed::Reset, ack_now: true });
        };
        if offset != p.buf.len() as u64 || offset + bytes.0.len() as u64 > p.len {
            // Out of order or too long: not applied; the ack says how much arrived.
            return Ok(Applied { need: ReplicaNeed::ResendFrom, ack_now: true });
        }
        p.buf.extend_from_slice(&bytes.0);
        if p.buf.len() as u64 == p.len {
            if crc32fast::hash(&p.buf) != p.crc {
                self.pending = None;
                return Err("the replicated snapshot does not match its checksum".into());
            }
            self.install()?;
        }
        Ok(Applied { need: ReplicaNeed::Nothing, ack_now: true })
    }

    /// Creates the new copy from the complete pending snapshot, in the staging directory; it
    /// replaces the old copy (if any) once durable through its bound ([`Self::maybe_swap`]).
    fn install(&mut self) -> Result<(), String> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        self.close_open();
        let dir = self.staging_of(&p.date, &p.cluster_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
        let snapshot = (p.len > 0).then_some(p.buf.as_slice());
        store::create_seeded(&dir, &self.opts, p.base_seq, snapshot).map_err(|e| e.to_string())?;
        let (store, _) = Store::open(&dir, self.opts.clone()).map_err(|e| e.to_string())?;
        for r in [
            store.meta_put(META_CLUSTER_ID, &p.cluster_id),
            store.meta_put(META_DATE, &p.date),
            store.meta_put(META_EPOCH, &p.epoch),
            store.meta_put(META_RUNS, &p.runs),
            store.meta_put(META_FORMAT, &FORMAT),
        ] {
            r.map_err(|e| e.to_string())?;
        }
        self.generation += 1;
        info!(cluster_id = %p.cluster_id, date = %p.date, base_seq = p.base_seq, "replica started over");
        // With no old copy there is nothing to keep: it goes into place at once.
        let old = self.dir_of(&p.date, &p.cluster_id).join("STORE").exists();
        let until = if old { p.base_seq.max(p.upto) } else { p.base_seq };
        self.open = Some(OpenReplica {
            cluster_id: p.cluster_id,
            date: p.date,
            epoch: p.epoch,
            runs: p.runs,
            staged: Some(until),
            store: Arc::new(store),
            generation: self.generation,
        });
        self.maybe_swap()?;
        Ok(())
    }

    fn events(
        &mut self,
        cluster_id: &str,
        date: &str,
        epoch: u64,
        first_seq: u64,
        events: Vec<Bytes>,
        written_in: u64,
    ) -> Result<Applied, String> {
        if !self.ensure_open(cluster_id, date)? {
            return Ok(Applied { need: ReplicaNeed::Reset, ack_now: true });
        }
        let Some(o) = self.open.as_mut() else {
            return Ok(Applied { need: ReplicaNeed::Reset, ack_now: true });
        };
        if epoch < o.epoch {
            // A stale manager (an older epoch) must not extend a newer history.
            return Err(format!(
                "events of epoch {epoch} refused: the replica is at epoch {}",
                o.epoch
            ));
        }
        let next = o.store.next_seq();
        if first_seq > next || first_seq == 0 {
            return Ok(Applied { need: ReplicaNeed::ResendFrom, ack_now: true });
        }
        let skip = (next - first_seq) as usize;
        if skip >= events.len() {
            // Everything already held (a resend): nothing to do.
            return Ok(Applied { need: ReplicaNeed::Nothing, ack_now: false });
        }
        let last_known = o.runs.iter().rev().map(|r| r.epoch).find(|&e| e != 0).unwrap_or(0);
        if written_in != 0 && (written_in < last_known || written_in > epoch) {
            // Epochs never go down along one log, and no manager sends what a later one wrote.
            return Err(format!(
                "events written in epoch {written_in} refused at seq {next}: the replica's \
                 newest events were written in epoch {last_known}, the sender is at epoch {epoch}"
            ));
        }
        if epoch > o.epoch {
            // Recorded (durably) before the new epoch's events, so the replica's epoch never
            // understates what it holds.
            o.store.meta_put(META_EPOCH, &epoch).map_err(|e| e.to_string())?;
            o.epoch = epoch;
        }
        let mut runs = o.runs.clone();
        if history::push_run(&mut runs, next, written_in) {
            // Durable before the events, so a held event's epoch is never misstated (a run
            // starting past the last held event says nothing).
            o.store.meta_put(META_FORMAT, &FORMAT).map_err(|e| e.to_string())?;
            o.store.meta_put(META_RUNS, &runs).map_err(|e| e.to_string())?;
            o.runs = runs;
        }
        let batch: Vec<(u64, Vec<u8>)> =
            events.into_iter().skip(skip).zip(next..).map(|(b, s)| (s, b.0)).collect();
        o.store.append(batch).map_err(|e| e.to_string())?;
        Ok(Applied { need: ReplicaNeed::Nothing, ack_now: false })
    }

    /// Answers a recovering manager's pull.
    pub(crate) fn serve(&mut self, pull: &ReplicaPullMsg) -> ChunkBody {
        match self.serve_inner(pull) {
            Ok(b) => b,
            Err(reason) => ChunkBody::Error { reason },
        }
    }

    fn serve_inner(&mut self, pull: &ReplicaPullMsg) -> Result<ChunkBody, String> {
        if !valid_id(&pull.cluster_id) || !valid_date(&pull.date) {
            return Err("bad cluster id or date".into());
        }
        if self.open.as_ref().is_some_and(|o| {
            o.staged.is_some() && o.cluster_id == pull.cluster_id && o.date == pull.date
        }) {
            // Serve the complete old copy (the one reported), not an unfinished new one.
            self.close_open();
        }
        if !self.ensure_open(&pull.cluster_id, &pull.date)? {
            return Err(format!("no replica of {} / {}", pull.date, pull.cluster_id));
        }
        let Some(o) = self.open.as_ref() else { return Err("no replica open".into()) };
        let key = (pull.cluster_id.clone(), pull.date.clone());
        if self.pull.as_ref().is_none_or(|c| c.key != key) {
            self.pull = Some(PullCache { key, snapshot: None, reader: None });
        }
        let Some(cache) = self.pull.as_mut() else { return Err("no pull state".into()) };
        match pull.part {
            PullPart::Snapshot { offset, max_bytes } => {
                if cache.snapshot.is_none() {
                    let snap = o.store.current_snapshot().map_err(|e| e.to_string())?;
                    cache.snapshot = Some(match snap {
                        Some(s) => (s.seq, crc32fast::hash(&s.bytes), Arc::new(s.bytes)),
                        None => (0, 0, Arc::new(Vec::new())),
                    });
                }
                let Some((base_seq, crc, bytes)) = cache.snapshot.as_ref() else {
                    return Err("no snapshot state".into());
                };
                let start = (offset as usize).min(bytes.len());
                let end =
                    start.saturating_add(max_bytes.clamp(1, 1 << 20) as usize).min(bytes.len());
                Ok(ChunkBody::Snapshot {
                    base_seq: *base_seq,
                    total_len: bytes.len() as u64,
                    crc: *crc,
                    offset: start as u64,
                    bytes: Bytes(bytes[start..end].to_vec()),
                })
            }
            PullPart::Events { from_seq, max_bytes } => {
                let mut reader = match cache.reader.take() {
                    Some((next, r)) if next == from_seq => r,
                    _ => o.store.read_from(from_seq),
                };
                // Stops once the budget is reached (the last event may overshoot it; events
                // are small, far below the 4 MiB envelope cap).
                let budget = max_bytes.clamp(1, 2 << 20) as usize;
                let (mut events, mut size) = (Vec::new(), 0usize);
                while size < budget {
                    match reader.next() {
                        Some(Ok((seq, p))) => {
                            if seq != from_seq + events.len() as u64 {
                                return Err(format!("the replica's log skips to seq {seq}"));
                            }
                            size += p.len();
                            events.push(Bytes(p));
                        }
                        Some(Err(e)) => return Err(e.to_string()),
                        None => break,
                    }
                }
                let next = from_seq + events.len() as u64;
                if size >= budget {
                    cache.reader = Some((next, reader));
                }
                Ok(ChunkBody::Events { first_seq: from_seq, events })
            }
        }
    }
}

/// Starts the replica keeper of an executor with `--data` (says once that it keeps none
/// otherwise). `send` reaches the current manager; `positions` is kept current for `Join`.
pub(crate) async fn start(
    cfg: &super::ExecutorConfig,
    instance: u64,
    send: ToManagerFn,
    positions: Arc<Mutex<Vec<ReplicaPosition>>>,
) -> Result<Option<ActorRef<ReplicaMsg>>, String> {
    let Some(data) = &cfg.data else {
        cfg.status.emit(Status::NoReplica { executor: cfg.name.clone() });
        return Ok(None);
    };
    let mut set = ReplicaSet::open(data, StoreOptions::default())?;
    set.set_retain_days(cfg.retain_days);
    let args = ReplicaArgs { set, executor: cfg.name.clone(), instance, send, positions };
    let (actor, _) = Actor::spawn(None, ReplicaActor, args)
        .await
        .map_err(|e| format!("cannot start the replica keeper: {e}"))?;
    cfg.status
        .emit(Status::KeepingReplicas { executor: cfg.name.clone(), dir: data.join("replica") });
    Ok(Some(actor))
}

/// Messages of the [`ReplicaActor`].
pub(crate) enum ReplicaMsg {
    /// A stream part from the manager.
    Stream(ReplicateMsg),
    /// A recovering manager's pull.
    Pull(ReplicaPullMsg),
    /// The open replica's durable watermark moved.
    Durable { generation: u64 },
}

impl ractor::Message for ReplicaMsg {}

/// Sends a message to the current manager (or drops it if there is no session).
pub(crate) type ToManagerFn = Arc<dyn Fn(ToManager) + Send + Sync>;

/// The executor's replica keeper.
pub(crate) struct ReplicaActor;

pub(crate) struct ReplicaArgs {
    pub(crate) set: ReplicaSet,
    pub(crate) executor: String,
    pub(crate) instance: u64,
    pub(crate) send: ToManagerFn,
    /// The positions for `Join`, kept current.
    pub(crate) positions: Arc<Mutex<Vec<ReplicaPosition>>>,
}

pub(crate) struct ReplicaState {
    args: ReplicaArgs,
    watched: u64,
    last_acked: (u64, u64),
    rejects: RejectLog,
}

impl ReplicaState {
    fn publish_positions(&self) {
        *self.args.positions.lock().unwrap_or_else(|p| p.into_inner()) = self.args.set.positions();
    }

    fn ack(&mut self, cluster_id: &str, date: &str, need: ReplicaNeed) {
        let ack =
            self.args.set.ack(&self.args.executor, self.args.instance, cluster_id, date, need);
        self.last_acked = (self.args.set.generation, ack.durable_seq);
        (self.args.send)(ToManager::ReplicaAck(ack));
    }

    /// Swaps a staged replacement in if it is durable through its bound (see
    /// [`ReplicaSet::maybe_swap`]); a failure is logged and the old copy stays.
    fn swap(&mut self) -> bool {
        match self.args.set.maybe_swap() {
            Ok(swapped) => swapped,
            Err(e) => {
                warn!(error = %e, "cannot swap in the new copy of a replica; the old copy stays");
                false
            }
        }
    }

    /// Starts forwarding the open store's durable watermark to the actor (once per store).
    fn watch(&mut self, myself: &ActorRef<ReplicaMsg>) {
        let Some((store, generation)) = self.args.set.open_store() else { return };
        if self.watched == generation {
            return;
        }
        self.watched = generation;
        let mut rx = store.durable();
        drop(store);
        let me = myself.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if me.cast(ReplicaMsg::Durable { generation }).is_err() {
                    break;
                }
            }
        });
    }
}

impl Actor for ReplicaActor {
    type Msg = ReplicaMsg;
    type State = ReplicaState;
    type Arguments = ReplicaArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReplicaMsg>,
        args: ReplicaArgs,
    ) -> Result<ReplicaState, ActorProcessingErr> {
        let st =
            ReplicaState { args, watched: 0, last_acked: (0, 0), rejects: RejectLog::default() };
        st.publish_positions();
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicaMsg>,
        msg: ReplicaMsg,
        st: &mut ReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicaMsg::Stream(m) => {
                let (cluster_id, date) = (m.cluster_id.clone(), m.date.clone());
                match st.args.set.apply(m) {
                    Ok(applied) => {
                        if applied.ack_now {
                            st.ack(&cluster_id, &date, applied.need);
                        }
                        st.swap();
                    }
                    Err(detail) => {
                        st.rejects
                            .reject("manager", &WireError::Body { what: "replication", detail });
                        st.ack(&cluster_id, &date, ReplicaNeed::Reset);
                    }
                }
                st.watch(&myself);
                st.publish_positions();
            }
            ReplicaMsg::Durable { generation } => {
                if generation != st.args.set.generation {
                    return Ok(());
                }
                if st.swap() {
                    st.watch(&myself);
                    st.publish_positions();
                    return Ok(());
                }
                let Some((cluster_id, date)) =
                    st.args.set.open.as_ref().map(|o| (o.cluster_id.clone(), o.date.clone()))
                else {
                    return Ok(());
                };
                let durable = st.args.set.open_store().map_or(0, |(s, _)| s.durable_seq());
                if st.last_acked != (generation, durable) {
                    st.ack(&cluster_id, &date, ReplicaNeed::Nothing);
                    st.publish_positions();
                }
            }
            ReplicaMsg::Pull(p) => {
                tracing::debug!(request = p.request, part = ?p.part, "replica pull");
                let body = st.args.set.serve(&p);
                if let ChunkBody::Error { reason } = &body {
                    warn!(%reason, "cannot serve a replica pull");
                }
                let position = st
                    .args
                    .set
                    .positions()
                    .into_iter()
                    .find(|x| x.cluster_id == p.cluster_id && x.date == p.date);
                let chunk = super::messages::ReplicaChunkMsg {
                    executor: st.args.executor.clone(),
                    request: p.request,
                    position,
                    body,
                };
                (st.args.send)(ToManager::ReplicaChunk(chunk));
                st.watch(&myself);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
