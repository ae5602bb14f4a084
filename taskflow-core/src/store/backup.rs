//! Offline backup, restore and inspection of a store (the `taskflow store …` commands).
//!
//! Backup file: header `magic "TFBACKUP" ‖ version u16 ‖ created u64 ‖ crc32(preceding)`, then
//! sections `kind u8 ‖ len u64 ‖ crc32(payload) u32 ‖ payload`: one `META` (rmp map of the
//! caller metadata), at most one `SNAPSHOT` (`seq u64 ‖ bytes`), any number of `LOG` sections
//! (records in the log record format, contiguous), and a final `END` (rmp summary). All
//! integers little-endian.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::format::{FORMAT_VERSION, Manifest, now_unix, read_manifest, sync_dir};
use super::log::{self, REC_HEADER, TornTail};
use super::snap::{self, GenerationReport, KEY_CREATED, KEY_FORMAT_VERSION, KEY_LOG_FLOOR};
use super::{Keep, Store, StoreOptions, init_layout, read, recover, take_lock};

const BACKUP_MAGIC: [u8; 8] = *b"TFBACKUP";
const BACKUP_HEADER: usize = 22;
const KIND_META: u8 = 1;
const KIND_SNAPSHOT: u8 = 2;
const KIND_LOG: u8 = 3;
const KIND_END: u8 = 4;
/// Upper bound on one section, so a damaged length cannot make restore allocate wildly.
const MAX_SECTION: u64 = 4 << 30;
const LOG_SECTION_BYTES: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct BackupMeta {
    store_created: u64,
    meta: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct BackupEnd {
    snapshot_seq: Option<u64>,
    first_seq: u64,
    last_seq: u64,
    events: u64,
    sections: u64,
}

fn write_section(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&[kind])?;
    w.write_all(&(payload.len() as u64).to_le_bytes())?;
    w.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    w.write_all(payload)
}

/// Writes a consistent backup of the store in `data_dir` to `dest` (one self-describing file).
///
/// The store must be closed (the function opens it, which takes the directory lock: an open store
/// gives [`Error::Locked`]). Opening runs normal recovery, so a corrupt store cannot be backed up
/// — use [`inspect`] — and a torn tail is truncated first. The backup holds the newest valid
/// snapshot, every event after it and the caller metadata. Returns the number of events.
pub fn backup(data_dir: impl AsRef<Path>, dest: impl AsRef<Path>) -> Result<u64> {
    let data_dir = data_dir.as_ref();
    if !data_dir.join("STORE").exists() {
        return Err(Error::corrupt(
            data_dir.join("STORE"),
            None,
            "not a taskflow store (STORE manifest missing)",
        ));
    }
    let dest = dest.as_ref();
    let (store, rec) = Store::open(data_dir, StoreOptions::default())?;
    let created = read_manifest(&data_dir.join("STORE"))?.created_unix;
    let tmp = dest.with_extension("partial");
    let mut w = BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let io = |e| Error::io(&tmp, e);
    let mut header = Vec::with_capacity(BACKUP_HEADER);
    header.extend_from_slice(&BACKUP_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&now_unix().to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    w.write_all(&header).map_err(io)?;
    let meta = BackupMeta { store_created: created, meta: store.meta_all()? };
    let meta = rmp_serde::to_vec_named(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    write_section(&mut w, KIND_META, &meta).map_err(io)?;
    let mut sections = 1;
    let snapshot_seq = rec.snapshot.as_ref().map(|s| s.seq);
    if let Some(s) = &rec.snapshot {
        let mut p = s.seq.to_le_bytes().to_vec();
        p.extend_from_slice(&s.bytes);
        write_section(&mut w, KIND_SNAPSHOT, &p).map_err(io)?;
        sections += 1;
    }
    let first_seq = snapshot_seq.unwrap_or(0) + 1;
    let mut buf = Vec::new();
    for (seq, payload) in &rec.events {
        log::encode_record(&mut buf, *seq, payload);
        if buf.len() >= LOG_SECTION_BYTES {
            write_section(&mut w, KIND_LOG, &buf).map_err(io)?;
            sections += 1;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        write_section(&mut w, KIND_LOG, &buf).map_err(io)?;
        sections += 1;
    }
    let end = BackupEnd {
        snapshot_seq,
        first_seq,
        last_seq: rec.next_seq - 1,
        events: rec.events.len() as u64,
        sections,
    };
    let end = rmp_serde::to_vec_named(&end).map_err(|e| Error::Invalid(e.to_string()))?;
    write_section(&mut w, KIND_END, &end).map_err(io)?;
    let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    sync_dir(dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    store.close()?;
    Ok(rec.events.len() as u64)
}

/// Reads a backup section by section, verifying each; `visit` sees `(kind, payload)`.
fn read_backup(path: &Path, mut visit: impl FnMut(u8, Vec<u8>) -> Result<()>) -> Result<BackupEnd> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(f);
    let mut off: u64 = 0;
    let corrupt =
        |off: u64, reason: String| Error::corrupt(path, Some(off), format!("backup: {reason}"));
    let mut header = [0u8; BACKUP_HEADER];
    r.read_exact(&mut header).map_err(|_| corrupt(0, "file shorter than its header".into()))?;
    if header[..8] != BACKUP_MAGIC {
        return Err(corrupt(0, "not a taskflow backup (bad magic)".into()));
    }
    if crc32fast::hash(&header[..18]).to_le_bytes() != header[18..22] {
        return Err(corrupt(0, "header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::Version {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    off += BACKUP_HEADER as u64;
    let mut sections = 0u64;
    let mut expected_seq: Option<u64> = None;
    let mut snapshot_seq = None;
    let mut events = 0u64;
    let mut seen_meta = false;
    loop {
        let mut sh = [0u8; 13];
        r.read_exact(&mut sh).map_err(|_| corrupt(off, "truncated: END section missing".into()))?;
        let kind = sh[0];
        let len = u64::from_le_bytes(sh[1..9].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(sh[9..13].try_into().unwrap_or_default());
        if len > MAX_SECTION {
            return Err(corrupt(off, format!("section length {len} is implausible")));
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).map_err(|_| corrupt(off, "truncated section".into()))?;
        if crc32fast::hash(&payload) != crc {
            return Err(corrupt(off, format!("section kind {kind} checksum mismatch")));
        }
        match kind {
            KIND_META if !seen_meta && sections == 0 => seen_meta = true,
            KIND_SNAPSHOT if snapshot_seq.is_none() && expected_seq.is_none() && seen_meta => {
                if payload.len() < 8 {
                    return Err(corrupt(off, "snapshot section too short".into()));
                }
                snapshot_seq =
                    Some(u64::from_le_bytes(payload[..8].try_into().unwrap_or_default()));
            }
            KIND_LOG if seen_meta => {
                let mut next = expected_seq.unwrap_or(snapshot_seq.unwrap_or(0) + 1);
                let mut p = 0;
                while p < payload.len() {
                    let rest = &payload[p..];
                    if rest.len() < REC_HEADER {
                        return Err(corrupt(off, "incomplete record in a log section".into()));
                    }
                    let len =
                        u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                    let rcrc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
                    let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
                    if rest.len() < REC_HEADER + len {
                        return Err(corrupt(off, "incomplete record in a log section".into()));
                    }
                    let mut h = crc32fast::Hasher::new();
                    h.update(&seq.to_le_bytes());
                    h.update(&rest[REC_HEADER..REC_HEADER + len]);
                    if h.finalize() != rcrc || seq != next {
                        return Err(corrupt(
                            off,
                            format!(
                                "log record at seq {seq} damaged or out of order (expected {next})"
                            ),
                        ));
                    }
                    next += 1;
                    events += 1;
                    p += REC_HEADER + len;
                }
                expected_seq = Some(next);
            }
            KIND_END if seen_meta => {
                let end: BackupEnd = rmp_serde::from_slice(&payload)
                    .map_err(|e| corrupt(off, format!("undecodable END section: {e}")))?;
                let last = expected_seq.unwrap_or(snapshot_seq.unwrap_or(0) + 1) - 1;
                let want = BackupEnd {
                    snapshot_seq,
                    first_seq: snapshot_seq.unwrap_or(0) + 1,
                    last_seq: last,
                    events,
                    sections,
                };
                if end != want {
                    return Err(corrupt(
                        off,
                        format!("END section {end:?} does not match the contents {want:?}"),
                    ));
                }
                let mut extra = [0u8; 1];
                if r.read(&mut extra).map_err(|e| Error::io(path, e))? != 0 {
                    return Err(corrupt(off + 13 + len, "data after the END section".into()));
                }
                return Ok(end);
            }
            other => return Err(corrupt(off, format!("unexpected section kind {other}"))),
        }
        visit(kind, payload)?;
        sections += 1;
        off += 13 + len;
    }
}

/// Restores `backup_file` into `data_dir`.
///
/// The whole backup is verified before anything is written. A non-empty `data_dir` is refused
/// ([`Error::NotEmpty`]) unless `force`; with `force` it must hold only a store's own files
/// (`STORE`, `LOCK`, `SLEDMARK`, `log/`, `sled/`), which are replaced as a whole — anything
/// else in it is refused ([`Error::Invalid`] naming it) and left alone. The store is rebuilt in a staging directory beside
/// `data_dir` (`.<name>.restoring`) and swapped in only once it is complete and durable, so an
/// interrupted restore never leaves a `data_dir` that looks healthy but lacks events: `data_dir`
/// is either untouched, absent (run restore again), or the complete restored store. A
/// `data_dir` held by a running store is refused ([`Error::Locked`]). Returns the number of
/// events restored.
pub fn restore(
    backup_file: impl AsRef<Path>,
    data_dir: impl AsRef<Path>,
    force: bool,
) -> Result<u64> {
    let backup_file = backup_file.as_ref();
    let data_dir = data_dir.as_ref();
    let end = read_backup(backup_file, |_, _| Ok(()))?;
    let _target_lock = if data_dir.is_dir() {
        let lock = take_lock(data_dir)?;
        let entries = super::dir_entries(data_dir)?;
        if !entries.is_empty() && !force {
            return Err(Error::NotEmpty { path: data_dir.to_owned() });
        }
        // `--force` replaces a store, never anything else: the swap below removes the whole
        // directory, so refuse one that holds files outside the store's own layout.
        let foreign: Vec<String> = entries
            .iter()
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| ["STORE", "SLEDMARK", "log", "sled"].contains(&n))
            })
            .map(|p| p.display().to_string())
            .collect();
        if !foreign.is_empty() {
            return Err(Error::Invalid(format!(
                "restore target {} holds files that are not part of a taskflow store ({}); \
                 --force only replaces a store (STORE, LOCK, SLEDMARK, log/, sled/): move them \
                 away or restore into another directory",
                data_dir.display(),
                foreign.join(", ")
            )));
        }
        Some(lock)
    } else {
        None
    };
    let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!(".{name}.restoring"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    restore_into(backup_file, &staging, &end)?;
    // Swap in: the target (if any) goes, the complete staging directory takes its name.
    if data_dir.exists() {
        fs::remove_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    }
    fs::rename(&staging, data_dir).map_err(|e| Error::io(data_dir, e))?;
    sync_dir(&parent)?;
    Ok(end.events)
}

/// Rebuilds the store of a verified backup in the empty directory `dir`.
fn restore_into(backup_file: &Path, dir: &Path, end: &BackupEnd) -> Result<()> {
    let malformed =
        |what: &str| Error::corrupt(backup_file, None, format!("backup: malformed {what} section"));
    let lock = take_lock(dir)?;
    // Pass 2: metadata and snapshot go into sled before the manifest seals the layout.
    let mut meta: Option<BackupMeta> = None;
    let mut snapshot: Option<(u64, Vec<u8>)> = None;
    let opts = StoreOptions::default();
    read_backup(backup_file, |kind, payload| {
        match kind {
            KIND_META => {
                meta = Some(rmp_serde::from_slice(&payload).map_err(|e| {
                    Error::corrupt(backup_file, None, format!("backup: undecodable META: {e}"))
                })?)
            }
            KIND_SNAPSHOT => {
                let seq = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(|| malformed("SNAPSHOT"))?;
                snapshot = Some((seq, payload[8..].to_vec()));
            }
            _ => {}
        }
        Ok(())
    })?;
    let meta =
        meta.ok_or_else(|| Error::corrupt(backup_file, None, "backup: META section missing"))?;
    init_layout(dir, &opts, end.first_seq, |db, sled_dir| {
        for (name, payload) in &meta.meta {
            snap::put_meta_raw(
                db,
                sled_dir,
                &format!("{}{name}", snap::APP_PREFIX),
                super::format::envelope(payload),
            )?;
        }
        if let Some((seq, bytes)) = &snapshot {
            snap::write_generation(db, sled_dir, *seq, bytes)?;
        }
        Ok(())
    })?;
    drop(snapshot);
    drop(lock);
    let (store, rec) = Store::open(dir, opts)?;
    if rec.next_seq != end.first_seq {
        return Err(Error::Invalid(format!(
            "restored store expects seq {} next, backup starts at {}",
            rec.next_seq, end.first_seq
        )));
    }
    read_backup(backup_file, |kind, payload| {
        if kind != KIND_LOG {
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut p = 0;
        while p < payload.len() {
            let field = |at: usize, n: usize| payload.get(p + at..p + at + n);
            let len = field(0, 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| malformed("LOG"))? as usize;
            let seq = field(8, 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| malformed("LOG"))?;
            let body = field(REC_HEADER, len).ok_or_else(|| malformed("LOG"))?;
            batch.push((seq, body.to_vec()));
            p += REC_HEADER + len;
        }
        store.append(batch)
    })?;
    if !store.wait_durable(end.last_seq, Duration::from_secs(600))? {
        return Err(Error::Invalid("restore: log writer did not finish within 10 minutes".into()));
    }
    store.close()
}

/// The health of a store as judged by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Opens cleanly (possibly after truncating a torn, never-acknowledged tail).
    Ok,
    /// Opens with every acknowledged event, but something deserves a look (e.g. no fallback).
    OkWithWarnings(String),
    /// Opens, but only by falling back to the previous snapshot generation; says why.
    RecoverableWithFallback(String),
    /// Will not open; says why.
    Corrupt(String),
    /// Another process holds the store; only the log was examined.
    Locked,
    /// The directory holds no store.
    NotAStore,
}

/// One log segment as seen by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// First seq (from the name).
    pub first_seq: u64,
    /// Last valid seq, if it holds records.
    pub last_seq: Option<u64>,
    /// File size in bytes.
    pub len: u64,
    /// `Ok` or the damage found.
    pub status: std::result::Result<(), String>,
}

/// The result of [`inspect`]; `Display` renders it for operators.
#[derive(Debug, Clone)]
pub struct Report {
    /// The data directory.
    pub dir: PathBuf,
    /// The `STORE` manifest, or why it is unreadable.
    pub manifest: std::result::Result<Manifest, String>,
    /// Metadata `(name, value)` rendered as text.
    pub meta: Vec<(String, String)>,
    /// Snapshot generations in sled.
    pub generations: Vec<GenerationReport>,
    /// Log segments.
    pub segments: Vec<SegmentReport>,
    /// A torn tail that opening would truncate.
    pub torn_tail: Option<TornTail>,
    /// Every problem found, one line each.
    pub problems: Vec<String>,
    /// The overall judgement.
    pub verdict: Verdict,
}

/// Examines a store without writing to it; works on a damaged store. Nothing in the directory
/// changes: the log is only read (a torn tail is reported, not truncated), and sled — which
/// writes its files whenever it opens, even to read — is opened on a temporary copy of
/// `sled/`, as [`read_only`](super::read_only) does. Holds a shared lock while it reads;
/// returns [`Verdict::Locked`] while another process has the store open for writing.
pub fn inspect(data_dir: impl AsRef<Path>) -> Report {
    let dir = data_dir.as_ref().to_owned();
    let mut report = Report {
        dir: dir.clone(),
        manifest: Err("not read".into()),
        meta: Vec::new(),
        generations: Vec::new(),
        segments: Vec::new(),
        torn_tail: None,
        problems: Vec::new(),
        verdict: Verdict::Ok,
    };
    if !dir.join("STORE").exists() && !dir.join("log").exists() && !dir.join("sled").exists() {
        report.manifest = Err("missing".into());
        if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
            report.problems.push(format!(
                "{} is an empty directory: no store was ever created in it (nothing was recorded)",
                dir.display()
            ));
        }
        report.verdict = Verdict::NotAStore;
        return report;
    }
    report.manifest = read_manifest(&dir.join("STORE")).map_err(|e| e.to_string());
    if let Err(e) = &report.manifest {
        report.problems.push(e.clone());
    }
    inspect_log(&dir.join("log"), &mut report);
    let lock = match read::share_lock(&dir) {
        Ok(lock) => lock,
        Err(Error::Locked { .. }) => {
            report.verdict = Verdict::Locked;
            return report;
        }
        Err(e) => {
            report.problems.push(e.to_string());
            None
        }
    };
    let sled_dir = snap::sled_dir(&dir);
    if !sled_dir.is_dir() {
        report.problems.push(format!("{}: sled directory missing", sled_dir.display()));
        report.verdict =
            Verdict::Corrupt(format!("{}: sled directory missing", sled_dir.display()));
        return report;
    }
    // sled 0.34 writes its files when it opens (even to read) and when it closes: read a copy.
    let copy = match read::TempCopy::of(&sled_dir) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            report.verdict = Verdict::Corrupt(e.to_string());
            return report;
        }
    };
    let db = match snap::open_sled(&copy.path, 8 << 20) {
        Ok(db) => db,
        Err(e) => {
            let e = copy.real_path_in(e, &sled_dir).to_string();
            report.problems.push(e.clone());
            report.verdict = Verdict::Corrupt(e);
            return report;
        }
    };
    for (label, key) in [
        ("format_version", KEY_FORMAT_VERSION),
        ("created", KEY_CREATED),
        ("log_floor", KEY_LOG_FLOOR),
    ] {
        match snap::get_value::<u64>(&db, &sled_dir, key.as_bytes()) {
            Ok(v) => {
                report.meta.push((label.into(), v.map_or("(absent)".into(), |v| v.to_string())))
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for item in db.scan_prefix(snap::APP_PREFIX.as_bytes()) {
        let Ok((k, v)) = item else { continue };
        let name = String::from_utf8_lossy(&k[snap::APP_PREFIX.len()..]).into_owned();
        let value = match snap::decode_value::<rmpv_like::Value>(&v) {
            Ok(v) => v.0,
            Err(r) => {
                report.problems.push(format!("metadata {name}: {r}"));
                format!("DAMAGED ({r})")
            }
        };
        report.meta.push((name, value));
    }
    let (_, gens, problems) = snap::inspect_generations(&db, &sled_dir);
    report.generations = gens;
    report.problems.extend(problems);
    for g in &report.generations {
        if let Err(r) = &g.status {
            report.problems.push(format!("snapshot generation {} ({}): {r}", g.generation, g.role));
        }
    }
    report.verdict = if report.manifest.is_err() {
        Verdict::Corrupt(report.problems[0].clone())
    } else {
        match recover(&dir, &db, false, Keep::Nothing) {
            Ok(rec) => match rec.chosen.fallback {
                Some(why) => Verdict::RecoverableWithFallback(why),
                None if !rec.warnings.is_empty() => {
                    report.problems.extend(rec.warnings.iter().cloned());
                    Verdict::OkWithWarnings(rec.warnings.join("; "))
                }
                None => Verdict::Ok,
            },
            Err(e) => {
                let msg = copy.real_path_in(e, &sled_dir).to_string();
                if !report.problems.contains(&msg) {
                    report.problems.push(msg.clone());
                }
                Verdict::Corrupt(msg)
            }
        }
    };
    drop(db);
    drop(copy);
    drop(lock);
    report
}

fn inspect_log(log_dir: &Path, report: &mut Report) {
    if !log_dir.is_dir() {
        report.problems.push(format!("{}: log directory missing", log_dir.display()));
        return;
    }
    let listed = match log::list_segments(log_dir) {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(e.to_string());
            return;
        }
    };
    if listed.is_empty() {
        report.problems.push(format!("{}: no log segments", log_dir.display()));
    }
    let n = listed.len();
    let mut next: Option<u64> = None;
    for (i, (first_seq, path)) in listed.into_iter().enumerate() {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.problems.push(Error::io(&path, e).to_string());
                continue;
            }
        };
        let mut seg = SegmentReport {
            path: path.clone(),
            first_seq,
            last_seq: None,
            len: bytes.len() as u64,
            status: Ok(()),
        };
        if let Some(exp) = next
            && exp != first_seq
        {
            let msg = format!(
                "{}: starts at seq {first_seq}, previous segment ends before {exp} (gap)",
                path.display()
            );
            report.problems.push(msg.clone());
            seg.status = Err(msg);
        }
        match log::scan_segment(&path, &bytes, first_seq, i + 1 == n) {
            Ok(scan) => {
                seg.last_seq = scan.records.last().map(|(s, _)| *s);
                next = Some(scan.next_seq);
                report.torn_tail = scan.torn.or(report.torn_tail.take());
            }
            Err(e) => {
                report.problems.push(e.to_string());
                seg.status = Err(e.to_string());
                next = None;
            }
        }
        report.segments.push(seg);
    }
}

/// Renders any rmp value as text for the report without knowing its type.
mod rmpv_like {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    pub(super) struct Value(pub(super) String);

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Value;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any value")
                }
                fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                    Ok(Value(format!("{v:?}")))
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
                    Ok(Value(format!("<{} bytes>", v.len())))
                }
                fn visit_unit<E>(self) -> Result<Value, E> {
                    Ok(Value("nil".into()))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                    let mut n = 0;
                    while a.next_element::<IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    Ok(Value(format!("[{n} items]")))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                    let mut n = 0;
                    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    Ok(Value(format!("{{{n} fields}}")))
                }
            }
            d.deserialize_any(V)
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store {}", self.dir.display())?;
        match &self.manifest {
            Ok(m) => writeln!(
                f,
                "  manifest: format v{} created {} (unix s)",
                m.format_version, m.created_unix
            )?,
            Err(e) => writeln!(f, "  manifest: UNREADABLE: {e}")?,
        }
        writeln!(f, "  this build reads format v{FORMAT_VERSION}")?;
        for (k, v) in &self.meta {
            writeln!(f, "  meta {k} = {v}")?;
        }
        writeln!(f, "  snapshot generations: {}", self.generations.len())?;
        for g in &self.generations {
            let seq = g.seq.map_or("?".into(), |s| s.to_string());
            let len = g.len.map_or("?".into(), |s| s.to_string());
            let status = match &g.status {
                Ok(()) => "valid".to_string(),
                Err(r) => format!("INVALID: {r}"),
            };
            writeln!(f, "    gen {} [{}] seq {seq}, {len} bytes: {status}", g.generation, g.role)?;
        }
        writeln!(f, "  log segments: {}", self.segments.len())?;
        for s in &self.segments {
            let range = s.last_seq.map_or("empty".into(), |l| format!("seq {}..={l}", s.first_seq));
            let status = match &s.status {
                Ok(()) => "ok".to_string(),
                Err(r) => format!("DAMAGED: {r}"),
            };
            writeln!(f, "    {} {range}, {} bytes: {status}", s.path.display(), s.len)?;
        }
        if let Some(t) = &self.torn_tail {
            writeln!(
                f,
                "  torn tail: {} at offset {} ({} bytes, {}); never acknowledged, so nothing is lost: left in place here, the next open for writing truncates it",
                t.path.display(),
                t.offset,
                t.dropped_bytes,
                t.reason
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        let dir = self.dir.display();
        match &self.verdict {
            Verdict::Ok => write!(f, "VERDICT: ok"),
            Verdict::OkWithWarnings(why) => write!(
                f,
                "VERDICT: ok-with-warnings: {why}; take a backup (`taskflow store backup {dir} FILE`) and check what touched the store"
            ),
            Verdict::RecoverableWithFallback(why) => write!(
                f,
                "VERDICT: recoverable-with-fallback: {why}; the store opens from the previous snapshot plus the log; take a backup (`taskflow store backup {dir} FILE`) and investigate the disk"
            ),
            Verdict::Corrupt(why) => write!(
                f,
                "VERDICT: corrupt: {why}; next step: move {dir} aside and restore a backup with `taskflow store restore FILE {dir}`, or re-run the business date"
            ),
            Verdict::Locked => write!(
                f,
                "VERDICT: locked: another process has the store open; stop it, or inspect a backup instead"
            ),
            Verdict::NotAStore => write!(
                f,
                "VERDICT: not-a-store: {dir} is neither a taskflow store (no STORE file, log/ or sled/) nor a data directory (no days/ inside); next step: if this is a business day that never ran, remove the directory; if its data was lost, recover the day from replicas (`taskflow manager --recover-from-replicas`) or restore a backup (`taskflow store restore FILE {dir}`)"
            ),
        }
    }
}
