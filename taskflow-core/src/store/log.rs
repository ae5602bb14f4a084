//! The append-only event log: segment format, recovery scan, and the group-commit writer thread.
//!
//! Segment file `log/<first_seq:020>.seg`:
//! `magic "TFLOGSEG" ‖ version u16 ‖ reserved u16 ‖ first_seq u64 ‖ crc32(preceding 20 bytes)`,
//! then records `len u32 ‖ crc32(seq ‖ payload) u32 ‖ seq u64 ‖ crc32(preceding 16 bytes) u32 ‖
//! payload`, all little-endian. The extra header checksum lets recovery tell a flipped length
//! field (corruption) from a record that is merely incomplete (a torn, never-acknowledged tail).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, warn};

use super::error::{Error, Result};
use super::format::{FORMAT_VERSION, sync_dir, sync_file};

const SEG_MAGIC: [u8; 8] = *b"TFLOGSEG";
/// Segment header length.
pub(crate) const SEG_HEADER: usize = 24;
/// Record header length.
pub(crate) const REC_HEADER: usize = 20;
/// The largest payload a record may carry; a larger length field on disk is corruption.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// The durable watermark published by the log writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// Every event with a seq ≤ this is fdatasync'd and will be returned by the next open.
    pub seq: u64,
    /// Set once the writer hit an error and stopped: `seq` will never move again.
    pub failure: Option<String>,
}

/// Counters of the log writer, cumulative since open (for the metrics endpoint and benches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// `fdatasync` calls on segment files.
    pub fsyncs: u64,
    /// Events made durable.
    pub events: u64,
    /// Bytes written to segment files (records and headers).
    pub bytes: u64,
    /// Write batches (drains of the hand-over queue).
    pub batches: u64,
}

/// A torn tail found (and, when opening for writing, truncated) by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the valid data ends.
    pub offset: u64,
    /// How many bytes after `offset` were dropped.
    pub dropped_bytes: u64,
    /// What the tail looked like (incomplete record, zero-filled region, torn header).
    pub reason: String,
}

pub(crate) fn segment_path(log_dir: &Path, first_seq: u64) -> PathBuf {
    log_dir.join(format!("{first_seq:020}.seg"))
}

pub(crate) fn encode_segment_header(first_seq: u64) -> [u8; SEG_HEADER] {
    let mut h = [0u8; SEG_HEADER];
    h[..8].copy_from_slice(&SEG_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    let crc = h.finalize();
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let hcrc = crc32fast::hash(&buf[start..start + 16]);
    buf.extend_from_slice(&hcrc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Segment files in `log_dir`, sorted by first seq. Unrelated files are ignored.
pub(crate) fn list_segments(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(log_dir).map_err(|e| Error::io(log_dir, e))? {
        let entry = entry.map_err(|e| Error::io(log_dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".seg") else { continue };
        match stem.parse::<u64>() {
            Ok(seq) if stem.len() == 20 && seq > 0 => out.push((seq, path)),
            _ => {
                return Err(Error::corrupt(&path, None, "segment file name is not a 20-digit seq"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The result of checking one segment's bytes.
#[derive(Debug)]
pub(crate) struct Scan {
    /// `(seq, payload byte range)` of every valid record.
    pub(crate) records: Vec<(u64, Range<usize>)>,
    /// The seq the next record would carry.
    pub(crate) next_seq: u64,
    /// Length of the valid prefix of the file.
    pub(crate) valid_len: u64,
    /// A torn tail (only ever in the last segment).
    pub(crate) torn: Option<TornTail>,
    /// The header itself was torn: the file holds nothing and should be removed.
    pub(crate) torn_header: bool,
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Checks a segment. `is_last` allows a torn tail; anywhere else damage is `Corrupt`.
pub(crate) fn scan_segment(
    path: &Path,
    bytes: &[u8],
    name_seq: u64,
    is_last: bool,
) -> Result<Scan> {
    let corrupt = |off: usize, reason: String| Error::corrupt(path, Some(off as u64), reason);
    let header = encode_segment_header(name_seq);
    if bytes.len() < SEG_HEADER || all_zero(&bytes[..SEG_HEADER]) {
        let prefix_of_header = bytes.len() < SEG_HEADER && bytes == &header[..bytes.len()];
        if is_last && (prefix_of_header || all_zero(bytes)) {
            return Ok(Scan {
                records: Vec::new(),
                next_seq: name_seq,
                valid_len: 0,
                torn: Some(TornTail {
                    path: path.to_owned(),
                    offset: 0,
                    dropped_bytes: bytes.len() as u64,
                    reason: "segment header never completed (new segment torn by a crash)".into(),
                }),
                torn_header: true,
            });
        }
        return Err(corrupt(0, format!("segment header damaged ({} bytes in file)", bytes.len())));
    }
    if bytes[..8] != SEG_MAGIC {
        return Err(corrupt(0, "bad segment magic".into()));
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[..20]) != crc {
        return Err(corrupt(0, "segment header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::Version {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let first_seq = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    if first_seq != name_seq {
        return Err(corrupt(12, format!("header first seq {first_seq} does not match file name")));
    }
    let mut records = Vec::new();
    let mut expected = first_seq;
    let mut off = SEG_HEADER;
    let mut torn = None;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let tear = |reason: &str| TornTail {
            path: path.to_owned(),
            offset: off as u64,
            dropped_bytes: rest.len() as u64,
            reason: reason.into(),
        };
        if all_zero(rest) {
            if !is_last {
                return Err(corrupt(off, "zero-filled region inside a non-final segment".into()));
            }
            torn = Some(tear("zero-filled region after the last complete record"));
            break;
        }
        if rest.len() < REC_HEADER {
            if !is_last {
                return Err(corrupt(off, "incomplete record inside a non-final segment".into()));
            }
            torn = Some(tear("incomplete record header"));
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        let hcrc = u32::from_le_bytes(rest[16..20].try_into().unwrap_or_default());
        if crc32fast::hash(&rest[..16]) != hcrc {
            // A header cut by power loss ends in zeros up to EOF; anything else is damage.
            let zero_tail_from = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if is_last && zero_tail_from < REC_HEADER {
                torn = Some(tear("record header torn (zero-filled)"));
                break;
            }
            return Err(corrupt(off, "record header checksum mismatch".into()));
        }
        if len > MAX_PAYLOAD {
            return Err(corrupt(off, format!("record length {len} exceeds the maximum")));
        }
        if rest.len() < REC_HEADER + len {
            if !is_last {
                return Err(corrupt(off, "incomplete record inside a non-final segment".into()));
            }
            torn = Some(tear("incomplete record (payload cut short)"));
            break;
        }
        let payload = &rest[REC_HEADER..REC_HEADER + len];
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_le_bytes());
        h.update(payload);
        if h.finalize() != crc {
            // The header reached the disk but (part of) the payload did not: what a write cut
            // by power loss leaves reads as zeros. Only the last record of the last segment
            // can be such a tear; a mismatch anywhere else, or a payload that does not end in
            // zeros (a flipped byte), is damage.
            let end = off + REC_HEADER + len;
            if is_last && payload.last() == Some(&0) && all_zero(&bytes[end..]) {
                torn = Some(tear("record payload never written (zero-filled)"));
                break;
            }
            return Err(corrupt(off, format!("record seq {seq}: payload checksum mismatch")));
        }
        if seq != expected {
            return Err(corrupt(
                off,
                format!("non-contiguous seq: expected {expected}, found {seq}"),
            ));
        }
        let start = off + REC_HEADER;
        records.push((seq, start..start + len));
        expected += 1;
        off += REC_HEADER + len;
    }
    let valid_len = torn.as_ref().map_or(bytes.len() as u64, |t| t.offset);
    Ok(Scan { records, next_seq: expected, valid_len, torn, torn_header: false })
}

/// One segment known to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// The seq of its first record (also in its name and header).
    pub first_seq: u64,
    /// Its size in bytes at recovery time.
    pub len: u64,
    /// Number of records at recovery time.
    pub records: u64,
}

/// What recovery found in the log directory.
#[derive(Debug)]
pub(crate) struct LogRecovery {
    pub(crate) segments: Vec<SegmentInfo>,
    /// The first seq the log holds (the first segment's first seq).
    pub(crate) first_seq: u64,
    /// The seq the next append must carry.
    pub(crate) next_seq: u64,
    /// Records with a seq greater than the `keep_after` argument.
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    pub(crate) torn: Option<TornTail>,
}

/// Checks every segment, keeping the records after `keep_after`. With `repair` (a writable
/// open), a torn tail is truncated (or a torn new segment removed), and every segment kept and
/// the directory are fsync'd before the records count as durable; without it nothing is
/// modified or synced.
pub(crate) fn recover(log_dir: &Path, keep_after: u64, repair: bool) -> Result<LogRecovery> {
    let listed = list_segments(log_dir)?;
    if listed.is_empty() {
        return Err(Error::corrupt(log_dir, None, "log directory holds no segment files"));
    }
    let mut segments = Vec::new();
    let mut records = Vec::new();
    let mut torn = None;
    let mut next: Option<u64> = None;
    let n = listed.len();
    for (i, (name_seq, path)) in listed.into_iter().enumerate() {
        if let Some(expected) = next
            && name_seq != expected
        {
            return Err(Error::corrupt(
                &path,
                None,
                format!(
                    "segment starts at seq {name_seq} but the previous one ends before {expected} (a segment is missing or damaged)"
                ),
            ));
        }
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let scan = scan_segment(&path, &bytes, name_seq, i + 1 == n)?;
        for (seq, range) in &scan.records {
            if *seq > keep_after {
                records.push((*seq, bytes[range.clone()].to_vec()));
            }
        }
        if let Some(t) = &scan.torn {
            if repair {
                warn!(file = %t.path.display(), offset = t.offset, dropped_bytes = t.dropped_bytes, reason = %t.reason,
                    "event log has a torn tail (never acknowledged); truncating it");
                if scan.torn_header {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    sync_dir(log_dir)?;
                } else {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io(&path, e))?;
                    f.set_len(scan.valid_len)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| Error::io(&path, e))?;
                }
            } else {
                warn!(file = %t.path.display(), offset = t.offset, dropped_bytes = t.dropped_bytes, reason = %t.reason,
                    "event log has a torn tail (never acknowledged); reading the events before it, leaving it in place");
            }
            torn = Some(t.clone());
        }
        next = Some(scan.next_seq);
        if !scan.torn_header {
            segments.push(SegmentInfo {
                path,
                first_seq: name_seq,
                len: scan.valid_len,
                records: scan.records.len() as u64,
            });
        }
    }
    if segments.is_empty() {
        return Err(Error::corrupt(log_dir, None, "log directory holds no complete segment"));
    }
    if repair {
        // What was found may be only in the page cache: a process killed between its write
        // and its fdatasync leaves exactly that, and a power loss now would take it back.
        // Make it durable before it is served, replicated or built on.
        for s in &segments {
            sync_file(&s.path)?;
        }
        sync_dir(log_dir)?;
    }
    let first_seq = segments[0].first_seq;
    Ok(LogRecovery { segments, first_seq, next_seq: next.unwrap_or(first_seq), records, torn })
}

/// Creates a new segment file holding only its header, fsyncs it and the directory.
pub(crate) fn create_segment(log_dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = segment_path(log_dir, first_seq);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(&encode_segment_header(first_seq))
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(&path, e))?;
    sync_dir(log_dir)?;
    Ok((f, path))
}

// ---------------------------------------------------------------------------------------------
// The group-commit writer.

struct Queue {
    pending: Vec<(u64, Vec<u8>)>,
    /// The seq the next handed-over event must carry.
    next_accept: u64,
    shutdown: bool,
    failed: Option<String>,
}

pub(crate) struct Shared {
    log_dir: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    durable: Mutex<Durable>,
    durable_cv: Condvar,
    durable_seq: AtomicU64,
    watch_tx: watch::Sender<Durable>,
    fsyncs: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    segments: Mutex<Vec<SegmentInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data is a plain
    // queue/watermark that stays consistent, so carry on rather than cascade the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle to the log: hands batches to the writer thread and reads the log back.
pub(crate) struct Log {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// Starts the writer on the last recovered segment. `next_seq` is the next seq to accept.
    pub(crate) fn start(
        log_dir: PathBuf,
        segments: Vec<SegmentInfo>,
        next_seq: u64,
        segment_bytes: u64,
    ) -> Result<Log> {
        let last =
            segments.last().cloned().ok_or_else(|| Error::corrupt(&log_dir, None, "no segment"))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(|e| Error::io(&last.path, e))?;
        let durable = Durable { seq: next_seq - 1, failure: None };
        let (watch_tx, _) = watch::channel(durable.clone());
        let shared = Arc::new(Shared {
            log_dir,
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                next_accept: next_seq,
                shutdown: false,
                failed: None,
            }),
            wake: Condvar::new(),
            durable: Mutex::new(durable),
            durable_cv: Condvar::new(),
            durable_seq: AtomicU64::new(next_seq - 1),
            watch_tx,
            fsyncs: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            segments: Mutex::new(segments),
        });
        let writer = Writer {
            shared: shared.clone(),
            file,
            seg_len: last.len,
            seg_records: last.records,
            segment_bytes,
            buf: Vec::with_capacity(1 << 20),
        };
        let thread = std::thread::Builder::new()
            .name("taskflow-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&shared.log_dir, e))?;
        Ok(Log { shared, thread: Some(thread) })
    }

    pub(crate) fn append(&self, batch: Vec<(u64, Vec<u8>)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut q = lock(&self.shared.queue);
        if let Some(reason) = &q.failed {
            return Err(Error::WriterFailed {
                path: self.shared.log_dir.clone(),
                reason: reason.clone(),
            });
        }
        if q.shutdown {
            return Err(Error::Closed { path: self.shared.log_dir.clone() });
        }
        let mut expected = q.next_accept;
        for (seq, payload) in &batch {
            if *seq != expected {
                return Err(Error::Gap { expected, got: *seq });
            }
            if payload.len() > MAX_PAYLOAD {
                return Err(Error::Invalid(format!(
                    "event seq {seq} payload of {} bytes exceeds {MAX_PAYLOAD}",
                    payload.len()
                )));
            }
            expected += 1;
        }
        q.next_accept = expected;
        let was_empty = q.pending.is_empty();
        if was_empty {
            q.pending = batch;
        } else {
            q.pending.extend(batch);
        }
        drop(q);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.shared.queue).next_accept
    }

    pub(crate) fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    pub(crate) fn durable(&self) -> watch::Receiver<Durable> {
        self.shared.watch_tx.subscribe()
    }

    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.shared.queue).failed.clone()
    }

    /// Blocks until `seq` is durable, the writer fails, or `timeout` passes.
    pub(crate) fn wait_durable(&self, seq: u64, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut d = lock(&self.shared.durable);
        loop {
            if d.seq >= seq {
                return Ok(true);
            }
            if let Some(reason) = &d.failure {
                return Err(Error::WriterFailed {
                    path: self.shared.log_dir.clone(),
                    reason: reason.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            d = self
                .shared
                .durable_cv
                .wait_timeout(d, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    pub(crate) fn stats(&self) -> LogStats {
        let s = &self.shared;
        LogStats {
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn segments(&self) -> Vec<SegmentInfo> {
        lock(&self.shared.segments).clone()
    }

    /// Deletes whole segments whose records all have seq ≤ `seq`; never the active segment.
    pub(crate) fn compact_through(&self, seq: u64) -> Result<usize> {
        let mut segs = lock(&self.shared.segments);
        let mut removed = 0;
        while segs.len() > 1 && segs[1].first_seq <= seq.saturating_add(1) {
            let s = segs.remove(0);
            fs::remove_file(&s.path).map_err(|e| Error::io(&s.path, e))?;
            removed += 1;
        }
        drop(segs);
        if removed > 0 {
            sync_dir(&self.shared.log_dir)?;
        }
        Ok(removed)
    }

    /// Reads durable records with seq ≥ `from` (up to the watermark at the time of the call).
    pub(crate) fn read_from(&self, from: u64) -> LogReader {
        let upto = self.durable_seq();
        let segs = self.segments();
        LogReader::new(segs, from, upto)
    }

    /// Stops accepting, lets the writer drain and fsync what was handed over, joins it.
    pub(crate) fn shutdown(&mut self) -> Result<u64> {
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.failure() {
            Some(reason) => Err(Error::WriterFailed { path: self.shared.log_dir.clone(), reason }),
            None => Ok(self.durable_seq()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    seg_len: u64,
    seg_records: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let batch = {
                let mut q = lock(&self.shared.queue);
                while q.pending.is_empty() && !q.shutdown {
                    q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            match self.write_batch(&batch) {
                Ok(last) => self.publish(last, None),
                Err(e) => {
                    let reason = e.to_string();
                    error!(error = %reason, "event log writer failed; no further events will be acknowledged");
                    lock(&self.shared.queue).failed = Some(reason.clone());
                    let seq = self.shared.durable_seq.load(Ordering::Acquire);
                    self.publish(seq, Some(reason));
                    return;
                }
            }
        }
    }

    fn publish(&self, seq: u64, failure: Option<String>) {
        let d = Durable { seq, failure };
        self.shared.durable_seq.store(seq, Ordering::Release);
        *lock(&self.shared.durable) = d.clone();
        self.shared.durable_cv.notify_all();
        self.shared.watch_tx.send_replace(d);
    }

    fn current_path(&self) -> PathBuf {
        lock(&self.shared.segments).last().map(|s| s.path.clone()).unwrap_or_default()
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.file.write_all(&self.buf).and_then(|()| {
            #[cfg(feature = "test-util")]
            super::testing::after_write();
            self.file.sync_data()
        });
        res.map_err(|e| Error::io(self.current_path(), e))?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.seg_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn write_batch(&mut self, batch: &[(u64, Vec<u8>)]) -> Result<u64> {
        let mut last = 0;
        for (seq, payload) in batch {
            let size = (REC_HEADER + payload.len()) as u64;
            let in_segment = self.seg_records > 0;
            if in_segment && self.seg_len + self.buf.len() as u64 + size > self.segment_bytes {
                self.flush_buf()?;
                let (file, path) = create_segment(&self.shared.log_dir, *seq)?;
                self.shared.bytes.fetch_add(SEG_HEADER as u64, Ordering::Relaxed);
                self.file = file;
                self.seg_len = SEG_HEADER as u64;
                self.seg_records = 0;
                lock(&self.shared.segments).push(SegmentInfo {
                    path,
                    first_seq: *seq,
                    len: SEG_HEADER as u64,
                    records: 0,
                });
            }
            encode_record(&mut self.buf, *seq, payload);
            self.seg_records += 1;
            last = *seq;
        }
        self.flush_buf()?;
        self.shared.events.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        Ok(last)
    }
}

/// Iterator over durable log records, `Item = Result<(seq, payload)>`; see [`super::Store::read_from`].
pub struct LogReader {
    segments: std::vec::IntoIter<SegmentInfo>,
    from: u64,
    upto: u64,
    current: std::vec::IntoIter<(u64, Vec<u8>)>,
    done: bool,
}

impl LogReader {
    fn new(segments: Vec<SegmentInfo>, from: u64, upto: u64) -> Self {
        // Skip segments that end before `from`: a segment ends where the next one starts.
        let mut start = 0;
        for (i, w) in segments.windows(2).enumerate() {
            if w[1].first_seq <= from {
                start = i + 1;
            }
        }
        let segments: Vec<_> = segments.into_iter().skip(start).collect();
        LogReader {
            segments: segments.into_iter(),
            from,
            upto,
            current: Vec::new().into_iter(),
            done: false,
        }
    }

    fn load_next(&mut self) -> Result<bool> {
        let Some(seg) = self.segments.next() else { return Ok(false) };
        let bytes = fs::read(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
        // The active segment may hold a partly written batch beyond the watermark; treat it as
        // "last" so that is not an error, and stop at `upto` anyway.
        let scan = scan_segment(&seg.path, &bytes, seg.first_seq, true)?;
        let recs: Vec<_> = scan
            .records
            .into_iter()
            .filter(|(s, _)| *s >= self.from && *s <= self.upto)
            .map(|(s, r)| (s, bytes[r].to_vec()))
            .collect();
        self.current = recs.into_iter();
        Ok(true)
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(r) = self.current.next() {
                return Some(Ok(r));
            }
            match self.load_next() {
                Ok(true) => continue,
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
