//! Past business days, read-only: a day's state and its logged events, read from its store
//! without write access (the console's past days, `taskflow store events`).
//!
//! A [`PastDay`] is folded exactly as the journal recovers a day — the newest valid snapshot,
//! then every logged event after it, each checked — but from [`store::read_only`], so reading
//! never changes the directory: no torn-tail truncation, no sled write, no record of a clean
//! close. A store that another process has open is refused ([`store::Error::Locked`]), as its
//! state is still changing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::graph::TaskGraph;
use crate::journal::Error;
use crate::model::BusinessDate;
use crate::state::{CodecError, DayEvent, DayState};
use crate::store::{self, ReadEvents, TornTail};

/// One business day's state, read from its store without writing to it.
#[derive(Debug, Clone)]
pub struct PastDay {
    state: DayState,
    snapshot_seq: Option<u64>,
    torn_tail: Option<TornTail>,
    warnings: Vec<String>,
}

impl PastDay {
    /// Reads the store in `dir` (a day's directory, `<data>/days/<YYYY-MM-DD>/`) and folds the
    /// day `date` over `graph`, the flow's task graph. Errors name the directory and the next
    /// step: a damaged store, an event that does not decode or apply, another date.
    pub fn open(
        dir: impl AsRef<Path>,
        date: BusinessDate,
        graph: Arc<TaskGraph>,
    ) -> Result<PastDay, Error> {
        let dir = dir.as_ref();
        let read = store::read_only(dir, ReadEvents::AfterSnapshot)?;
        let snapshot_seq = read.snapshot.as_ref().map(|s| s.seq);
        let mut state = match read.snapshot {
            Some(snap) => DayState::decode_snapshot(&snap.bytes, graph)
                .map_err(|source| Error::Snapshot { dir: dir.to_owned(), seq: snap.seq, source })?,
            None => DayState::new(date, graph),
        };
        if state.date() != date {
            return Err(Error::DateMismatch {
                dir: dir.to_owned(),
                expected: date,
                found: state.date(),
            });
        }
        for (seq, bytes) in &read.events {
            let event = decode(dir, *seq, bytes)?;
            state.apply(&event).map_err(|source| Error::Replay {
                dir: dir.to_owned(),
                seq: *seq,
                source,
            })?;
        }
        let mut warnings = read.warnings;
        warnings.extend(read.snapshot_fallback);
        Ok(PastDay { state, snapshot_seq, torn_tail: read.torn_tail, warnings })
    }

    /// The day's state: the fold of every durable event.
    pub fn state(&self) -> &DayState {
        &self.state
    }

    /// The state, owned.
    pub fn into_state(self) -> DayState {
        self.state
    }

    /// The seq of the snapshot the fold started from, if any.
    pub fn snapshot_seq(&self) -> Option<u64> {
        self.snapshot_seq
    }

    /// A torn, never-acknowledged tail of the log (left in place; the next writer truncates
    /// it).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// Inconsistencies that lost nothing but deserve an operator's look (a snapshot fallback
    /// among them).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// The events a day's log still holds, read without writing to the store.
#[derive(Debug, Clone)]
pub struct PastLog {
    /// The events, oldest first, from the first one the log holds.
    pub events: Vec<DayEvent>,
    /// The seq the next event would carry (one past the last durable one).
    pub next_seq: u64,
    /// The seq of the newest valid snapshot, if any: a log starting after seq 1 was compacted
    /// into a snapshot.
    pub snapshot_seq: Option<u64>,
    /// A torn, never-acknowledged tail of the log (left in place).
    pub torn_tail: Option<TornTail>,
}

impl PastLog {
    /// Reads every event the store in `dir` still holds (see [`PastDay::open`] for the
    /// checks). No flow is needed: events are decoded, not applied.
    pub fn read(dir: impl AsRef<Path>) -> Result<PastLog, Error> {
        let dir = dir.as_ref();
        let read = store::read_only(dir, ReadEvents::All)?;
        let events = read
            .events
            .iter()
            .map(|(seq, bytes)| decode(dir, *seq, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PastLog {
            events,
            next_seq: read.next_seq,
            snapshot_seq: read.snapshot.map(|s| s.seq),
            torn_tail: read.torn_tail,
        })
    }
}

/// Decodes the event logged as `seq`, checking that its body says the same seq.
fn decode(dir: &Path, seq: u64, bytes: &[u8]) -> Result<DayEvent, Error> {
    let err = |source| Error::Decode { dir: PathBuf::from(dir), seq, source };
    let event = DayEvent::decode(bytes).map_err(err)?;
    if event.seq != seq {
        return Err(err(CodecError::Malformed {
            what: "event",
            detail: format!("its body says seq {}, the log says {seq}", event.seq),
        }));
    }
    Ok(event)
}
