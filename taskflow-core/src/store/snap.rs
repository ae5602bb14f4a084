//! The sled side of the store: opening sled safely, power-loss durable syncs, enveloped metadata
//! and chunked snapshot generations.
//!
//! Keys (integers big-endian): `meta/store/<name>` (store-internal), `meta/app/<name>`
//! (callers' metadata), `snap/<gen u64>/chunk/<u32>`, `snap/<gen u64>/manifest`, `snap/current`.
//! Every value is an envelope (see `format::envelope`); structured values are rmp maps
//! (`to_vec_named`) so fields can be added later.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::error::{Error, Result};
use super::format::{envelope, open_envelope, sync_dir};

/// Snapshot chunk size. Far below the ~128 KiB at which sled 0.34 turns a value into a blob file
/// (with severe space amplification); small enough that a leaf node holding several chunks
/// rarely becomes a blob either (16 KiB chunks measured 75× smaller than one 200 KiB value).
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

pub(crate) const KEY_FORMAT_VERSION: &str = "meta/store/format_version";
pub(crate) const KEY_CREATED: &str = "meta/store/created";
/// The highest seq known to have been durable at the last clean close or snapshot: the log must
/// reach at least this far, or acknowledged events were lost.
pub(crate) const KEY_LOG_FLOOR: &str = "meta/store/log_floor";
pub(crate) const APP_PREFIX: &str = "meta/app/";
/// `BTreeMap<key, crc32 of the stored envelope>` of every metadata key: sled 0.34 can silently
/// return "absent" for a key whose page it failed to read, so presence is checked against this.
const KEY_INDEX: &str = "meta/store/index";
static META_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
const KEY_CURRENT: &[u8] = b"snap/current";

/// Which generations are kept: the newest and the one to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapPointer {
    pub(crate) current: u64,
    pub(crate) previous: Option<u64>,
}

/// Describes one snapshot generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapManifest {
    pub(crate) generation: u64,
    pub(crate) seq: u64,
    pub(crate) chunks: u32,
    pub(crate) total_len: u64,
    pub(crate) crc32: u32,
}

fn gen_prefix(generation: u64) -> Vec<u8> {
    let mut k = b"snap/".to_vec();
    k.extend_from_slice(&generation.to_be_bytes());
    k.push(b'/');
    k
}

fn manifest_key(generation: u64) -> Vec<u8> {
    let mut k = gen_prefix(generation);
    k.extend_from_slice(b"manifest");
    k
}

fn chunk_key(generation: u64, idx: u32) -> Vec<u8> {
    let mut k = gen_prefix(generation);
    k.extend_from_slice(b"chunk/");
    k.extend_from_slice(&idx.to_be_bytes());
    k
}

/// How long sled's own lock may lag behind the store's: sled 0.34's background threads hold
/// `sled/db` open for a moment after its last handle is dropped.
const SLED_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (bounded) until nothing holds sled's lock file `dir/db`: true once it is free (or
/// does not exist), false if it is still held after [`SLED_RELEASE_WAIT`].
pub(crate) fn wait_sled_released(dir: &Path) -> bool {
    let path = dir.join("db");
    let deadline = std::time::Instant::now() + SLED_RELEASE_WAIT;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let free = match File::open(&path) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Opens sled on its own thread under `catch_unwind`: sled 0.34 asserts on some corruption at
/// open time, and a panic must become `Error::Corrupt`, not bring the process down. The caller
/// holds the store's `LOCK`, so a sled lock still held is our own closed handle's lag: it is
/// waited out (bounded) before the directory counts as locked.
pub(crate) fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    match open_sled_once(dir, cache_bytes) {
        Err(Error::Locked { .. }) if wait_sled_released(dir) => open_sled_once(dir, cache_bytes),
        other => other,
    }
}

fn open_sled_once(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let path = dir.to_owned();
    let handle = std::thread::Builder::new()
        .name("taskflow-sled-open".into())
        .spawn(move || {
            catch_unwind(AssertUnwindSafe(|| {
                sled::Config::new().path(&path).cache_capacity(cache_bytes).open()
            }))
        })
        .map_err(|e| Error::io(dir, e))?;
    match handle.join() {
        Ok(Ok(Ok(db))) => Ok(db),
        Ok(Ok(Err(sled::Error::Io(e)))) if is_lock_refusal(&e) => {
            Err(Error::Locked { path: dir.join("db") })
        }
        Ok(Ok(Err(e))) => Err(Error::corrupt(dir, None, format!("sled failed to open: {e}"))),
        Ok(Err(panic)) | Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::corrupt(dir, None, format!("sled panicked while opening: {msg}")))
        }
    }
}

/// Whether sled refused to open because another handle holds its lock: sled 0.34 reports it
/// as an `Other` I/O error "could not acquire lock on …" wrapping the `WouldBlock`.
fn is_lock_refusal(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.to_string().starts_with("could not acquire lock")
}

/// Makes everything written to sled so far power-loss durable: `flush()` (which only issues
/// `sync_file_range` in sled 0.34.7), then `fsync` of every file in sled's directory and of the
/// directory itself.
pub(crate) fn sync_sled(db: &sled::Db, dir: &Path) -> Result<()> {
    db.flush().map_err(|e| sled_err(dir, e))?;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            // A snapshot file sled is rotating may vanish between listing and opening.
            match File::open(&path) {
                Ok(f) => f.sync_all().map_err(|e| Error::io(&path, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    sync_dir(dir)
}

pub(crate) fn sled_err(dir: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(source) => Error::Io { path: dir.to_owned(), source },
        other => Error::corrupt(dir, None, format!("sled: {other}")),
    }
}

/// Reads an enveloped rmp value; damage is `Corrupt` naming the key.
pub(crate) fn get_value<T: DeserializeOwned>(
    db: &sled::Db,
    dir: &Path,
    key: &[u8],
) -> Result<Option<T>> {
    let Some(raw) = db.get(key).map_err(|e| sled_err(dir, e))? else { return Ok(None) };
    decode_value(&raw).map(Some).map_err(|reason| {
        Error::corrupt(dir, None, format!("key {}: {reason}", String::from_utf8_lossy(key)))
    })
}

pub(crate) fn decode_value<T: DeserializeOwned>(raw: &[u8]) -> std::result::Result<T, String> {
    let payload = open_envelope(raw)?;
    rmp_serde::from_slice(payload).map_err(|e| format!("undecodable value: {e}"))
}

pub(crate) fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value)
        .map(|p| envelope(&p))
        .map_err(|e| Error::Invalid(format!("value cannot be encoded: {e}")))
}

pub(crate) fn put_value<T: Serialize>(
    db: &sled::Db,
    dir: &Path,
    key: &[u8],
    value: &T,
) -> Result<()> {
    db.insert(key, encode_value(value)?).map_err(|e| sled_err(dir, e))?;
    Ok(())
}

/// Writes a metadata value (already enveloped) and its index entry atomically. Not durable
/// until [`sync_sled`].
pub(crate) fn put_meta_raw(db: &sled::Db, dir: &Path, key: &str, enveloped: Vec<u8>) -> Result<()> {
    let _guard = META_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut index: BTreeMap<String, u32> =
        get_value(db, dir, KEY_INDEX.as_bytes())?.unwrap_or_default();
    index.insert(key.to_owned(), crc32fast::hash(&enveloped));
    let mut batch = sled::Batch::default();
    batch.insert(key.as_bytes(), enveloped);
    batch.insert(KEY_INDEX.as_bytes(), encode_value(&index)?);
    db.apply_batch(batch).map_err(|e| sled_err(dir, e))
}

/// Writes a metadata value; see [`put_meta_raw`].
pub(crate) fn put_meta<T: Serialize>(
    db: &sled::Db,
    dir: &Path,
    key: &str,
    value: &T,
) -> Result<()> {
    put_meta_raw(db, dir, key, encode_value(value)?)
}

const KEY_COMMIT: &str = "meta/store/commit";
/// Store-owned file beside `sled/` holding the last sled commit number (enveloped rmp u64).
pub(crate) const MARK_FILE: &str = "SLEDMARK";

/// Commits sled durably and records the commit number outside sled. sled 0.34 recovers a
/// damaged log by silently stopping at the damage, i.e. it can roll back to an older state;
/// comparing its commit number with `SLEDMARK` on open detects that.
pub(crate) fn commit(db: &sled::Db, sled_dir: &Path) -> Result<()> {
    let n = get_value::<u64>(db, sled_dir, KEY_COMMIT.as_bytes())?.unwrap_or(0) + 1;
    put_meta(db, sled_dir, KEY_COMMIT, &n)?;
    sync_sled(db, sled_dir)?;
    let data_dir = sled_dir.parent().unwrap_or(Path::new("."));
    super::format::write_file_durably(&data_dir.join(MARK_FILE), &encode_value(&n)?)
}

/// Checks sled's commit number against `SLEDMARK` (sled may be ahead after a crash in between).
pub(crate) fn verify_commit(db: &sled::Db, sled_dir: &Path) -> Result<()> {
    let data_dir = sled_dir.parent().unwrap_or(Path::new("."));
    let mark_path = data_dir.join(MARK_FILE);
    let raw = fs::read(&mark_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::corrupt(&mark_path, None, "file missing"),
        _ => Error::io(&mark_path, e),
    })?;
    let mark: u64 = decode_value(&raw).map_err(|r| Error::corrupt(&mark_path, None, r))?;
    let in_sled = get_value::<u64>(db, sled_dir, KEY_COMMIT.as_bytes())?.unwrap_or(0);
    if in_sled < mark {
        return Err(Error::corrupt(
            sled_dir,
            None,
            format!(
                "sled rolled back to commit {in_sled}, but commit {mark} was durable ({MARK_FILE}): sled lost data"
            ),
        ));
    }
    Ok(())
}

/// Checks that every metadata key in the index is present and unchanged.
pub(crate) fn verify_meta(db: &sled::Db, dir: &Path) -> Result<()> {
    let Some(index) = get_value::<BTreeMap<String, u32>>(db, dir, KEY_INDEX.as_bytes())? else {
        return Err(Error::corrupt(dir, None, "the metadata index is missing: sled lost keys"));
    };
    for (key, crc) in index {
        match db.get(key.as_bytes()).map_err(|e| sled_err(dir, e))? {
            None => {
                return Err(Error::corrupt(
                    dir,
                    None,
                    format!("metadata key {key} vanished from sled"),
                ));
            }
            Some(v) if crc32fast::hash(&v) != crc => {
                return Err(Error::corrupt(
                    dir,
                    None,
                    format!("metadata key {key} does not match its index checksum"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(crate) fn read_pointer(db: &sled::Db, dir: &Path) -> Result<Option<SnapPointer>> {
    get_value(db, dir, KEY_CURRENT)
}

/// Loads and fully verifies one generation; `Err(reason)` if anything is missing or damaged.
pub(crate) fn load_generation(
    db: &sled::Db,
    generation: u64,
) -> std::result::Result<(SnapManifest, Vec<u8>), String> {
    let raw = db
        .get(manifest_key(generation))
        .map_err(|e| format!("sled read failed: {e}"))?
        .ok_or("manifest missing")?;
    let m: SnapManifest = decode_value(&raw).map_err(|r| format!("manifest: {r}"))?;
    if m.generation != generation {
        return Err(format!("manifest names generation {}", m.generation));
    }
    if m.total_len > u64::from(m.chunks) * CHUNK_BYTES as u64 {
        return Err("manifest length inconsistent with its chunk count".into());
    }
    let mut bytes = Vec::with_capacity(m.total_len as usize);
    for idx in 0..m.chunks {
        let raw = db
            .get(chunk_key(generation, idx))
            .map_err(|e| format!("sled read failed: {e}"))?
            .ok_or_else(|| format!("chunk {idx} missing"))?;
        let payload = open_envelope(&raw).map_err(|r| format!("chunk {idx}: {r}"))?;
        bytes.extend_from_slice(payload);
    }
    if bytes.len() as u64 != m.total_len {
        return Err(format!("chunks hold {} bytes, manifest says {}", bytes.len(), m.total_len));
    }
    if crc32fast::hash(&bytes) != m.crc32 {
        return Err("whole-snapshot checksum mismatch".into());
    }
    Ok((m, bytes))
}

/// Generations that have any key in sled, ascending.
pub(crate) fn list_generations(db: &sled::Db, dir: &Path) -> Result<Vec<u64>> {
    let mut gens = Vec::new();
    for item in db.scan_prefix(b"snap/") {
        let (k, _) = item.map_err(|e| sled_err(dir, e))?;
        if k.len() >= 14 && k[13] == b'/' {
            let generation = u64::from_be_bytes(k[5..13].try_into().unwrap_or_default());
            if gens.last() != Some(&generation) {
                gens.push(generation);
            }
        }
    }
    gens.dedup();
    Ok(gens)
}

fn remove_generation(db: &sled::Db, dir: &Path, generation: u64) -> Result<()> {
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix(gen_prefix(generation)) {
        let (k, _) = item.map_err(|e| sled_err(dir, e))?;
        batch.remove(k);
    }
    db.apply_batch(batch).map_err(|e| sled_err(dir, e))
}

/// The snapshot recovery starts from.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) manifest: Option<SnapManifest>,
    pub(crate) bytes: Vec<u8>,
    /// Set when the newest generation was unusable and the previous one was chosen.
    pub(crate) fallback: Option<String>,
    /// The seq of the older kept generation when it is valid (the compaction bound).
    pub(crate) older_seq: Option<u64>,
}

/// Picks the newest valid generation, falling back to the previous one (reported loudly).
pub(crate) fn choose(db: &sled::Db, dir: &Path) -> Result<Chosen> {
    let Some(ptr) = read_pointer(db, dir)? else {
        // Generations without a pointer are what a crash during the first snapshot leaves
        // (its chunks and manifest durable, the pointer not yet written): never committed, so
        // never used, and the log was never compacted for them — `recover` checks that the
        // log still starts at seq 1 (else the pointer was lost, and the store is corrupt).
        // The next snapshot write removes them.
        let orphans = list_generations(db, dir)?;
        let fallback = (!orphans.is_empty()).then(|| {
            let w = format!(
                "snapshot generation(s) {orphans:?} were written but never committed (a crash \
                 during the first snapshot); they are ignored and the log is replayed from its \
                 start"
            );
            tracing::warn!(dir = %dir.display(), "{w}");
            w
        });
        return Ok(Chosen { manifest: None, bytes: Vec::new(), fallback, older_seq: None });
    };
    let newest_err = match load_generation(db, ptr.current) {
        Ok((m, bytes)) => {
            let older_seq =
                ptr.previous.and_then(|g| load_generation(db, g).ok()).map(|(m, _)| m.seq);
            return Ok(Chosen { manifest: Some(m), bytes, fallback: None, older_seq });
        }
        Err(reason) => reason,
    };
    let Some(prev) = ptr.previous else {
        return Err(Error::corrupt(
            dir,
            None,
            format!(
                "newest snapshot generation {} is unusable ({newest_err}) and there is no previous generation",
                ptr.current
            ),
        ));
    };
    match load_generation(db, prev) {
        Ok((m, bytes)) => {
            let fallback = format!(
                "newest snapshot generation {} is unusable ({newest_err}); fell back to generation {prev} (seq {}) and will replay the log from there",
                ptr.current, m.seq
            );
            tracing::warn!(dir = %dir.display(), "{fallback}");
            Ok(Chosen {
                manifest: Some(m),
                bytes,
                fallback: Some(fallback),
                older_seq: Some(m.seq),
            })
        }
        Err(prev_err) => Err(Error::corrupt(
            dir,
            None,
            format!(
                "both snapshot generations are unusable: {} ({newest_err}), {prev} ({prev_err})",
                ptr.current
            ),
        )),
    }
}

/// Writes a new generation and moves `snap/current` to it, keeping the newest *valid* older
/// generation as the fallback. Returns `(new manifest, fallback manifest)`. Durable on return.
pub(crate) fn write_generation(
    db: &sled::Db,
    dir: &Path,
    seq: u64,
    bytes: &[u8],
) -> Result<(SnapManifest, Option<SnapManifest>)> {
    let ptr = read_pointer(db, dir)?;
    let existing = list_generations(db, dir)?;
    let generation =
        existing.iter().copied().chain(ptr.map(|p| p.current)).max().map_or(1, |g| g + 1);
    let fallback = ptr.and_then(|p| {
        [Some(p.current), p.previous]
            .into_iter()
            .flatten()
            .find_map(|g| load_generation(db, g).ok().map(|(m, _)| m))
    });
    let chunks: Vec<&[u8]> =
        if bytes.is_empty() { Vec::new() } else { bytes.chunks(CHUNK_BYTES).collect() };
    let manifest = SnapManifest {
        generation,
        seq,
        chunks: u32::try_from(chunks.len())
            .map_err(|_| Error::Invalid("snapshot too large".into()))?,
        total_len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    };
    // Chunks and manifest first, made durable, and only then the pointer: a crash in between
    // leaves an orphan generation that the next write replaces.
    let mut batch = sled::Batch::default();
    for (idx, chunk) in chunks.iter().enumerate() {
        batch.insert(chunk_key(generation, idx as u32), envelope(chunk));
    }
    batch.insert(manifest_key(generation), encode_value(&manifest)?);
    db.apply_batch(batch).map_err(|e| sled_err(dir, e))?;
    sync_sled(db, dir)?;
    let pointer = SnapPointer { current: generation, previous: fallback.map(|m| m.generation) };
    put_value(db, dir, KEY_CURRENT, &pointer)?;
    sync_sled(db, dir)?;
    for g in existing {
        if g != generation && Some(g) != pointer.previous {
            remove_generation(db, dir, g)?;
        }
    }
    commit(db, dir)?;
    Ok((manifest, fallback))
}

/// One generation as seen by `inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationReport {
    /// Generation number.
    pub generation: u64,
    /// `current`, `previous` or `orphan` (left by an interrupted write; harmless).
    pub role: &'static str,
    /// The seq the snapshot covers, if its manifest is readable.
    pub seq: Option<u64>,
    /// Snapshot length in bytes, if its manifest is readable.
    pub len: Option<u64>,
    /// `Ok` or why it is unusable.
    pub status: std::result::Result<(), String>,
}

pub(crate) fn inspect_generations(
    db: &sled::Db,
    dir: &Path,
) -> (Option<SnapPointer>, Vec<GenerationReport>, Vec<String>) {
    let mut problems = Vec::new();
    let ptr = match read_pointer(db, dir) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let gens = list_generations(db, dir).unwrap_or_else(|e| {
        problems.push(e.to_string());
        Vec::new()
    });
    let mut all: Vec<u64> = gens;
    if let Some(p) = ptr {
        all.extend([Some(p.current), p.previous].into_iter().flatten());
    }
    all.sort_unstable();
    all.dedup();
    let reports = all
        .into_iter()
        .map(|g| {
            let role = match ptr {
                Some(p) if p.current == g => "current",
                Some(p) if p.previous == Some(g) => "previous",
                _ => "orphan",
            };
            let (seq, len, status) = match load_generation(db, g) {
                Ok((m, _)) => (Some(m.seq), Some(m.total_len), Ok(())),
                Err(r) => {
                    let m: Option<SnapManifest> = db
                        .get(manifest_key(g))
                        .ok()
                        .flatten()
                        .and_then(|raw| decode_value(&raw).ok());
                    (m.map(|m| m.seq), m.map(|m| m.total_len), Err(r))
                }
            };
            GenerationReport { generation: g, role, seq, len, status }
        })
        .collect();
    (ptr, reports, problems)
}

/// Path helper so messages name sled's directory consistently.
pub(crate) fn sled_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sled_held_by_another_handle_is_locked_not_corrupt() {
        // sled's refusal used to read as corruption, so the lag of a just-closed handle was
        // never waited out (store_read and store_corruption failed at random).
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sled");
        let held = open_sled_once(&dir, 1 << 20).unwrap();
        match open_sled_once(&dir, 1 << 20) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.join("db")),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        assert!(wait_sled_released(&dir), "sled lets go of its lock once closed");
        assert!(open_sled(&dir, 1 << 20).is_ok());
    }
}
