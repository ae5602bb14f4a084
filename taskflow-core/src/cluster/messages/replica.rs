//! Replication messages: the manager streams its durable events to executors that keep a
//! replica, and a recovering manager pulls a replica back. See `proto-docs/cluster.md`,
//! "Replication" and "Recovery from replicas".

use serde::{Deserialize, Serialize};

/// Where an executor's replica of one day's log stands (reported in [`super::Join`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaPosition {
    /// The id of the manager store the replica copies (random per day store, created with it).
    pub cluster_id: String,
    /// The business date, YYYY-MM-DD.
    pub date: String,
    /// The highest epoch of a manager that sent the replica anything (a fencing floor, not
    /// the epoch its events were written in: see `runs`).
    pub epoch: u64,
    /// Every event with seq ≤ this is durable in the replica.
    pub seq: u64,
    /// In which manager epoch the held events were written, as runs (ascending `first_seq`;
    /// seqs before the first run, and runs of epoch 0, are of an unknown epoch). Empty from
    /// an executor older than replica format 2: every event of an unknown epoch.
    #[serde(default)]
    pub runs: Vec<EpochRun>,
}

impl ReplicaPosition {
    /// The epoch in which the last held event was written (0: unknown).
    pub fn last_epoch(&self) -> u64 {
        crate::cluster::history::epoch_at(&self.runs, self.seq)
    }

    /// The recovery order within one history: freshest = greatest (epoch of the last held
    /// event, seq), as Raft compares logs. An unknown epoch ranks oldest.
    pub fn freshness(&self) -> (u64, u64) {
        (self.last_epoch(), self.seq)
    }
}

/// A run of a day log's events written under one manager epoch: the events from `first_seq`
/// up to the next run's `first_seq` (exclusive) were written by the manager of `epoch`
/// (0: unknown — written without `--cluster` or by a version that did not record it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EpochRun {
    /// The first seq of the run.
    pub first_seq: u64,
    /// The epoch its events were written in.
    pub epoch: u64,
}

/// Manager → executor (cast): part of the replication stream of one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicateMsg {
    /// The sending manager's epoch (the replica records it with the events).
    pub epoch: u64,
    /// The manager store's cluster id.
    pub cluster_id: String,
    /// The business date, YYYY-MM-DD.
    pub date: String,
    /// What this part carries.
    pub body: ReplicaBody,
}

/// A part of the replication stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicaBody {
    /// Start the replica of (cluster id, date) over: it will hold the manager's snapshot at
    /// `base_seq` (`snapshot_len` bytes in `SnapshotChunk`s; none when 0) and then the events
    /// from `base_seq + 1`.
    Begin {
        /// The seq the snapshot covers (0: no snapshot, events start at 1).
        base_seq: u64,
        /// Total snapshot bytes.
        snapshot_len: u64,
        /// CRC-32 of the whole snapshot.
        snapshot_crc: u32,
        /// The epochs the events through `base_seq` were written in (the manager's runs up
        /// to there). Empty from an older manager: unknown.
        #[serde(default)]
        runs: Vec<EpochRun>,
        /// The manager's durable seq when it sent this: the replica keeps its old copy of
        /// (cluster id, date) until the new one is durable through `max(base_seq, upto)`,
        /// then swaps them. 0 from an older manager: swap once the snapshot is installed.
        #[serde(default)]
        upto: u64,
    },
    /// Snapshot bytes `offset..offset + bytes.len()` of the `Begin` with this `base_seq`.
    SnapshotChunk {
        /// The `Begin`'s base seq.
        base_seq: u64,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Durable events with contiguous seqs from `first_seq`, each exactly the manager store's
    /// record payload (an encoded day event).
    Events {
        /// The seq of `events[0]`.
        first_seq: u64,
        /// The payloads.
        events: Vec<Bytes>,
        /// The epoch every one of these events was written in (a message never spans two
        /// runs). 0 from an older manager: unknown.
        #[serde(default)]
        written_in: u64,
    },
}

/// Executor → manager (cast): the replica's position after a stream part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaAckMsg {
    /// The executor's name.
    pub executor: String,
    /// Its process id ([`super::Join::instance`]).
    pub instance: u64,
    /// The cluster id of the replica.
    pub cluster_id: String,
    /// The business date.
    pub date: String,
    /// Every event ≤ this is durable in the replica (0 while there is none).
    pub durable_seq: u64,
    /// The seq the replica needs next.
    pub next_seq: u64,
    /// Snapshot bytes received of the current `Begin` (credits for the chunks).
    #[serde(default)]
    pub snapshot_received: u64,
    /// What the replica needs from the manager.
    pub need: ReplicaNeed,
    /// The acknowledged copy is a replacement still being built beside the old one (after a
    /// `Begin`): a recovery would read the old copy, so this ack does not count towards the
    /// manager's `--replica-acks` (absent from older executors: false).
    #[serde(default)]
    pub staged: bool,
}

/// What an ack asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaNeed {
    /// Nothing: keep streaming.
    Nothing,
    /// A part did not continue the replica (a gap): resend from `next_seq`.
    ResendFrom,
    /// The replica cannot continue (none, unusable, or a broken snapshot): start it over.
    Reset,
}

/// Manager → executor (cast): a recovering manager asks for part of a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaPullMsg {
    /// Echoed in the answer.
    pub request: u64,
    /// The replica's cluster id.
    pub cluster_id: String,
    /// The business date.
    pub date: String,
    /// What is wanted.
    pub part: PullPart,
}

/// The part a [`ReplicaPullMsg`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPart {
    /// Snapshot bytes from `offset` (at most `max_bytes`).
    Snapshot {
        /// Where to start.
        offset: u64,
        /// The most bytes wanted.
        max_bytes: u64,
    },
    /// Events from `from_seq` (at most `max_bytes` of payload, at least one event).
    Events {
        /// The first seq wanted.
        from_seq: u64,
        /// The most payload bytes wanted.
        max_bytes: u64,
    },
}

/// Executor → manager (cast): the answer to a [`ReplicaPullMsg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaChunkMsg {
    /// The executor's name.
    pub executor: String,
    /// The request answered.
    pub request: u64,
    /// The replica's position when answering.
    pub position: Option<ReplicaPosition>,
    /// The data, or why there is none.
    pub body: ChunkBody,
}

/// What a [`ReplicaChunkMsg`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChunkBody {
    /// Snapshot bytes; `base_seq` 0 and `total_len` 0 when the replica has no snapshot.
    Snapshot {
        /// The seq the snapshot covers.
        base_seq: u64,
        /// Total length.
        total_len: u64,
        /// CRC-32 of the whole snapshot.
        crc: u32,
        /// Where these bytes start.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Events from `first_seq` (empty: none after it).
    Events {
        /// The seq of `events[0]`.
        first_seq: u64,
        /// The payloads.
        events: Vec<Bytes>,
    },
    /// The replica cannot answer.
    Error {
        /// Why.
        reason: String,
    },
}

/// Opaque bytes, encoded as MessagePack `bin` (a plain `Vec<u8>` would be an array of
/// integers, up to twice the size).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({})", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
