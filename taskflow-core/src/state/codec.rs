//! The snapshot format of a [`DayState`] (persisted: versioned, golden-byte tested).
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! magic        4 bytes  "TFDS"
//! format       u16      SNAPSHOT_FORMAT_VERSION (the layout below)
//! row schema   u16      SHARD_ROW_SCHEMA_VERSION (the bulk row layout)
//! meta length  u32
//! meta         MessagePack with field names (everything but the shards)
//! bulk         per registered task with shards, in graph order:
//!                key bytes   (meta.tasks[i].key_bytes bytes, UTF-8)
//!                key ends    (n × u32: key j ends at ends[j])
//!                rows        (n × 40 bytes: status u8, attempt u32, generation u32,
//!                             executor u32, steps_done u32, step_name u32,
//!                             started_ms i64, finished_ms i64, failures u16,
//!                             flags u8 (bit 0: retry after rollback); u32::MAX = none)
//! ```
//!
//! Row schema 1 (written before failure counts existed) had 37-byte rows without `failures`
//! and `flags`; it is still read, with `failures` = the attempt number (the retry budget those
//! versions counted) and no retry intent.
//!
//! Derived data (status counts, task statuses, readiness) is not stored: decoding recomputes
//! it, so a snapshot cannot disagree with itself. Checksums are the store's business; the
//! decoder still rejects truncated or malformed input with a typed error and never panics.

use std::io::Cursor;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::day::{
    Assignees, AuditEntry, DayState, Interner, KeyArena, NONE, ShardRecord, TaskState,
};
use super::event::AuditRecord;
use super::machine::ShardStatus;
use super::status::{StatusCounts, TaskStatus};
use crate::graph::{Readiness, TaskGraph, TaskIx};
use crate::model::{BusinessDate, TaskId};

/// The snapshot magic.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TFDS";
/// The snapshot layout version this build writes; it reads it and every older one. Format 2
/// added holds and force-started tasks to the meta (absent: none), so format 1 is read as is.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 2;
/// The shard row layout version this build writes and reads.
pub const SHARD_ROW_SCHEMA_VERSION: u16 = 2;
const ROW_LEN: usize = 40;
const ROW_LEN_V1: usize = 37;
const HEADER_LEN: usize = 12;

/// Why bytes could not be decoded into a snapshot or an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended early.
    #[error("truncated input: it ends inside the {what}")]
    Truncated {
        /// The part that was being read.
        what: &'static str,
    },
    /// Not a day snapshot.
    #[error("not a day snapshot: bad magic bytes")]
    BadMagic,
    /// Written by a newer (or unknown) version of taskflow.
    #[error(
        "unsupported {what} format version {found} (this build reads version {supported}); \
         upgrade taskflow to read it"
    )]
    UnsupportedVersion {
        /// What carries the version.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The bytes are not a valid encoding.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The part that is malformed.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Bytes after the end of the encoding.
    #[error("trailing bytes after the {what}")]
    TrailingBytes {
        /// The part that should have been last.
        what: &'static str,
    },
    /// The snapshot was taken with another flow graph.
    #[error("the snapshot does not match the flow: {0}")]
    GraphMismatch(String),
}

#[derive(Serialize, Deserialize)]
struct Meta {
    date: BusinessDate,
    flow_digest: String,
    opened: bool,
    closed: bool,
    last_seq: u64,
    task_ids: Vec<TaskId>,
    executors: Vec<String>,
    /// `(executor name id, epoch, instance)` per dispatch target; absent when it is the
    /// identity with epoch and instance 0 (standalone days, and snapshots written before
    /// epochs were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    assignees: Vec<(u32, u64, u64)>,
    step_names: Vec<String>,
    products: Vec<String>,
    distributors: Vec<String>,
    tasks: Vec<TaskMeta>,
    errors: Vec<(u32, u32, String)>,
    audit: Vec<AuditMeta>,
    /// Holds (format 2): task, shard (`None`: the task), who holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    holds: Vec<(u32, Option<u32>, String)>,
    /// Force-started tasks (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forced: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct TaskMeta {
    registered: bool,
    registered_at_ms: i64,
    items: Vec<[u32; 2]>,
    covered_dates: Vec<NaiveDate>,
    shards: u32,
    key_bytes: u32,
}

#[derive(Serialize, Deserialize)]
struct AuditMeta {
    seq: u64,
    at_ms: i64,
    record: AuditRecord,
}

impl DayState {
    /// Encodes the state as a snapshot (deterministic: equal states give equal bytes).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let meta = Meta {
            date: self.date,
            flow_digest: self.flow_digest.clone(),
            opened: self.opened,
            closed: self.closed,
            last_seq: self.last_seq,
            task_ids: self.graph.indices().map(|ix| self.graph.id(ix).clone()).collect(),
            executors: self.executors.names.clone(),
            assignees: if self.assignees.pairs.len() == self.executors.names.len()
                && self.assignees.pairs.iter().enumerate().all(|(i, &p)| p == (i as u32, 0, 0))
            {
                Vec::new()
            } else {
                self.assignees.pairs.clone()
            },
            step_names: self.step_names.names.clone(),
            products: self.products.names.clone(),
            distributors: self.distributors.names.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskMeta {
                    registered: t.registered,
                    registered_at_ms: t.registered_at_ms,
                    items: t.items.clone(),
                    covered_dates: t.covered_dates.clone(),
                    shards: t.shards.len() as u32,
                    key_bytes: t.keys.bytes.len() as u32,
                })
                .collect(),
            errors: self.errors.iter().map(|(&(t, s), e)| (t, s, e.clone())).collect(),
            audit: self
                .audit
                .iter()
                .map(|a| AuditMeta { seq: a.seq, at_ms: a.at_ms, record: a.record.clone() })
                .collect(),
            holds: self.holds.iter().map(|(&(t, s), by)| (t, s, by.clone())).collect(),
            forced: self.forced.iter().copied().collect(),
        };
        // Plain derived types serialize into a Vec without error; an empty meta would be
        // rejected by the decoder rather than silently accepted.
        let meta = rmp_serde::to_vec_named(&meta).unwrap_or_default();
        let bulk: usize =
            self.tasks.iter().map(|t| t.keys.bytes.len() + t.shards.len() * (4 + ROW_LEN)).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + bulk);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&SHARD_ROW_SCHEMA_VERSION.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        for t in &self.tasks {
            out.extend_from_slice(t.keys.bytes.as_bytes());
            for end in &t.keys.ends {
                out.extend_from_slice(&end.to_le_bytes());
            }
            for r in &t.shards {
                out.push(r.status as u8);
                out.extend_from_slice(&r.attempt.to_le_bytes());
                out.extend_from_slice(&r.generation.to_le_bytes());
                out.extend_from_slice(&r.executor.to_le_bytes());
                out.extend_from_slice(&r.steps_done.to_le_bytes());
                out.extend_from_slice(&r.step_name.to_le_bytes());
                out.extend_from_slice(&r.started_ms.to_le_bytes());
                out.extend_from_slice(&r.finished_ms.to_le_bytes());
                out.extend_from_slice(&r.failures.to_le_bytes());
                out.push(u8::from(r.then_retry));
            }
        }
        out
    }

    /// Decodes a snapshot taken over `graph`; recomputes counts, statuses and readiness.
    pub fn decode_snapshot(bytes: &[u8], graph: Arc<TaskGraph>) -> Result<DayState, CodecError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(4, "header")? != SNAPSHOT_MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = r.u16("header")?;
        if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(CodecError::UnsupportedVersion {
                what: "snapshot",
                found: version,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let rows = r.u16("header")?;
        if rows != SHARD_ROW_SCHEMA_VERSION && rows != 1 {
            return Err(CodecError::UnsupportedVersion {
                what: "shard row",
                found: rows,
                supported: SHARD_ROW_SCHEMA_VERSION,
            });
        }
        let meta_len = r.u32("header")? as usize;
        let meta_bytes = r.take(meta_len, "meta")?;
        let mut de = rmp_serde::Deserializer::new(Cursor::new(meta_bytes));
        let meta = Meta::deserialize(&mut de).map_err(|e| malformed("meta", e.to_string()))?;
        if de.position() as usize != meta_bytes.len() {
            return Err(CodecError::TrailingBytes { what: "meta" });
        }

        let ids: Vec<&TaskId> = graph.indices().map(|ix| graph.id(ix)).collect();
        if meta.task_ids.len() != ids.len() || meta.task_ids.iter().zip(&ids).any(|(a, b)| a != *b)
        {
            return Err(CodecError::GraphMismatch(format!(
                "the snapshot has {} tasks, the flow {}, or their ids differ",
                meta.task_ids.len(),
                ids.len()
            )));
        }
        if meta.tasks.len() != ids.len() {
            return Err(malformed("meta", "task count differs from task ids".into()));
        }
        if meta.closed && !meta.opened {
            return Err(malformed("meta", "closed but never opened".into()));
        }
        let interner = |names: Vec<String>, what: &'static str| {
            Interner::from_names(names).ok_or_else(|| malformed(what, "duplicate name".into()))
        };
        let executors = interner(meta.executors, "executor table")?;
        let assignees = if meta.assignees.is_empty() {
            (0..executors.names.len() as u32).map(|i| (i, 0, 0)).collect()
        } else {
            meta.assignees
        };
        if assignees.iter().any(|&(name, _, _)| name as usize >= executors.names.len()) {
            return Err(malformed("assignee table", "unknown executor id".into()));
        }
        let assignees = Assignees::from_pairs(assignees)
            .ok_or_else(|| malformed("assignee table", "duplicate pair".into()))?;
        let step_names = interner(meta.step_names, "step name table")?;
        let products = interner(meta.products, "product table")?;
        let distributors = interner(meta.distributors, "distributor table")?;
        let valid = |id: u32, table: &Interner| id == NONE || (id as usize) < table.names.len();

        let mut tasks = Vec::with_capacity(meta.tasks.len());
        let mut readiness = Readiness::new(&graph);
        for (i, tm) in meta.tasks.into_iter().enumerate() {
            if !tm.registered && (tm.shards != 0 || tm.key_bytes != 0 || !tm.items.is_empty()) {
                return Err(malformed("meta", format!("task {i} has shards but no registration")));
            }
            if tm.shards == NONE {
                return Err(malformed("meta", format!("task {i} has too many shards")));
            }
            if tm.items.iter().any(|&[p, d]| !valid(p, &products) || !valid(d, &distributors)) {
                return Err(malformed("meta", format!("task {i} has an unknown scope item")));
            }
            let n = tm.shards as usize;
            let keys = read_keys(&mut r, tm.key_bytes as usize, n)?;
            let mut shards = Vec::with_capacity(n.min(r.remaining() / ROW_LEN));
            for _ in 0..n {
                let row = r.row(rows)?;
                let assignee_ok = row.executor == NONE || assignees.get(row.executor).is_some();
                if !assignee_ok || !valid(row.step_name, &step_names) {
                    return Err(malformed("shard row", format!("task {i}: unknown name id")));
                }
                shards.push(row);
            }
            let counts: StatusCounts = shards.iter().map(|s| s.status).collect();
            let status = TaskStatus::derive(tm.registered, &counts);
            if status.is_done() {
                readiness.mark_done(&graph, TaskIx(i as u32));
            }
            tasks.push(TaskState {
                registered: tm.registered,
                registered_at_ms: tm.registered_at_ms,
                items: tm.items,
                covered_dates: tm.covered_dates,
                keys,
                shards,
                counts,
                status,
            });
        }
        if r.remaining() != 0 {
            return Err(CodecError::TrailingBytes { what: "snapshot" });
        }
        let mut errors = std::collections::BTreeMap::new();
        for (t, s, e) in meta.errors {
            if tasks.get(t as usize).is_none_or(|ts: &TaskState| s as usize >= ts.shards.len()) {
                return Err(malformed("meta", format!("error for unknown shard {t}/{s}")));
            }
            errors.insert((t, s), e);
        }
        let mut holds = std::collections::BTreeMap::new();
        for (t, s, by) in meta.holds {
            let Some(ts) = tasks.get(t as usize) else {
                return Err(malformed("meta", format!("hold on unknown task {t}")));
            };
            if s.is_some_and(|s| s as usize >= ts.shards.len()) {
                return Err(malformed("meta", format!("hold on unknown shard {t}/{s:?}")));
            }
            holds.insert((t, s), by);
        }
        if meta.forced.iter().any(|&t| t as usize >= tasks.len()) {
            return Err(malformed("meta", "force-start of an unknown task".into()));
        }
        Ok(DayState {
            date: meta.date,
            graph,
            flow_digest: meta.flow_digest,
            opened: meta.opened,
            closed: meta.closed,
            last_seq: meta.last_seq,
            tasks,
            readiness,
            executors,
            assignees,
            step_names,
            products,
            distributors,
            errors,
            audit: meta
                .audit
                .into_iter()
                .map(|a| AuditEntry { seq: a.seq, at_ms: a.at_ms, record: a.record })
                .collect(),
            holds,
            forced: meta.forced.into_iter().collect(),
        })
    }
}

fn malformed(what: &'static str, detail: String) -> CodecError {
    CodecError::Malformed { what, detail }
}

fn read_keys(r: &mut Reader<'_>, len: usize, n: usize) -> Result<KeyArena, CodecError> {
    let bytes = r.take(len, "shard keys")?;
    let bytes =
        std::str::from_utf8(bytes).map_err(|e| malformed("shard keys", e.to_string()))?.to_owned();
    let ends_bytes =
        r.take(n.checked_mul(4).ok_or(CodecError::Truncated { what: "key ends" })?, "key ends")?;
    let mut ends = Vec::with_capacity(n);
    let mut prev = 0u32;
    for c in ends_bytes.chunks_exact(4) {
        let end = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if end < prev || end as usize > bytes.len() || !bytes.is_char_boundary(end as usize) {
            return Err(malformed("key ends", format!("bad key end {end}")));
        }
        ends.push(end);
        prev = end;
    }
    if prev as usize != bytes.len() {
        return Err(malformed("key ends", "keys do not cover the key bytes".into()));
    }
    Ok(KeyArena { bytes, ends })
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(CodecError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn row(&mut self, schema: u16) -> Result<ShardRecord, CodecError> {
        let len = if schema == 1 { ROW_LEN_V1 } else { ROW_LEN };
        let b = self.take(len, "shard rows")?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(a)
        };
        let status = ShardStatus::from_u8(b[0])
            .ok_or_else(|| malformed("shard row", format!("unknown status {}", b[0])))?;
        Ok(ShardRecord {
            status,
            attempt: u32_at(1),
            generation: u32_at(5),
            executor: u32_at(9),
            steps_done: u32_at(13),
            step_name: u32_at(17),
            started_ms: i64_at(21),
            finished_ms: i64_at(29),
            failures: if schema == 1 {
                u16::try_from(u32_at(1)).unwrap_or(u16::MAX)
            } else {
                u16::from_le_bytes([b[37], b[38]])
            },
            then_retry: match b.get(39) {
                None | Some(0) => false,
                Some(1) => true,
                Some(f) => return Err(malformed("shard row", format!("unknown flags {f}"))),
            },
        })
    }
}
