//! Small on-disk formats shared by the store: the value envelope, the `STORE` manifest, and
//! file-system helpers (directory fsync, atomic file replace).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// The format version of everything this build writes (envelopes, manifest, log, backups).
pub const FORMAT_VERSION: u16 = 1;

/// Magic at the start of every enveloped sled value.
const ENVELOPE_MAGIC: [u8; 4] = *b"TFSV";
/// Envelope header: magic(4) ‖ version(2) ‖ crc32(4).
const ENVELOPE_HEADER: usize = 10;

/// Wraps `payload` as `magic ‖ format_version:u16 LE ‖ crc32(payload) LE ‖ payload`.
pub(crate) fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + payload.len());
    out.extend_from_slice(&ENVELOPE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope and returns its payload; `Err(reason)` describes the damage.
pub(crate) fn open_envelope(value: &[u8]) -> std::result::Result<&[u8], String> {
    if value.len() < ENVELOPE_HEADER {
        return Err(format!("value of {} bytes is shorter than the envelope header", value.len()));
    }
    if value[..4] != ENVELOPE_MAGIC {
        return Err("bad envelope magic".into());
    }
    let version = u16::from_le_bytes([value[4], value[5]]);
    if version != FORMAT_VERSION {
        return Err(format!("envelope format version {version}, expected {FORMAT_VERSION}"));
    }
    let crc = u32::from_le_bytes([value[6], value[7], value[8], value[9]]);
    let payload = &value[ENVELOPE_HEADER..];
    if crc32fast::hash(payload) != crc {
        return Err("envelope checksum mismatch".into());
    }
    Ok(payload)
}

/// Magic of the `STORE` manifest file.
const MANIFEST_MAGIC: [u8; 8] = *b"TFSTORE\0";
/// Manifest: magic(8) ‖ version(2) ‖ created unix seconds(8) ‖ crc32 of the preceding bytes(4).
const MANIFEST_LEN: usize = 22;

/// The decoded `STORE` manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// The store format version.
    pub format_version: u16,
    /// When the store was created, in seconds since the Unix epoch.
    pub created_unix: u64,
}

pub(crate) fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(MANIFEST_LEN);
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.extend_from_slice(&m.format_version.to_le_bytes());
    out.extend_from_slice(&m.created_unix.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads and verifies the manifest at `path`.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() != MANIFEST_LEN {
        return Err(Error::corrupt(
            path,
            None,
            format!("manifest is {} bytes, expected {MANIFEST_LEN}", bytes.len()),
        ));
    }
    if bytes[..8] != MANIFEST_MAGIC {
        return Err(Error::corrupt(path, Some(0), "bad manifest magic"));
    }
    let crc = u32::from_le_bytes(bytes[18..22].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[..18]) != crc {
        return Err(Error::corrupt(path, Some(18), "manifest checksum mismatch"));
    }
    let format_version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if format_version != FORMAT_VERSION {
        return Err(Error::Version {
            path: path.to_owned(),
            found: format_version,
            supported: FORMAT_VERSION,
        });
    }
    let created_unix = u64::from_le_bytes(bytes[10..18].try_into().unwrap_or_default());
    Ok(Manifest { format_version, created_unix })
}

/// Fsyncs a directory so that entries created or removed in it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    #[cfg(feature = "test-util")]
    super::testing::did_sync(dir);
    Ok(())
}

/// Fsyncs the file at `path` (data and size), whatever wrote it: bytes another process wrote
/// and never synced may still be only in the page cache.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))?;
    #[cfg(feature = "test-util")]
    super::testing::did_sync(path);
    Ok(())
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_detects_flips() {
        let v = envelope(b"hello");
        assert_eq!(open_envelope(&v), Ok(&b"hello"[..]));
        for i in 0..v.len() {
            let mut w = v.clone();
            w[i] ^= 0x01;
            assert!(open_envelope(&w).is_err(), "flip at {i} undetected");
        }
        assert!(open_envelope(&v[..5]).is_err());
    }

    #[test]
    fn envelope_golden_bytes() {
        let v = envelope(b"ab");
        let crc = crc32fast::hash(b"ab").to_le_bytes();
        let mut want = b"TFSV\x01\x00".to_vec();
        want.extend_from_slice(&crc);
        want.extend_from_slice(b"ab");
        assert_eq!(v, want);
    }

    #[test]
    fn manifest_round_trips_and_detects_flips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("STORE");
        let m = Manifest { format_version: FORMAT_VERSION, created_unix: 1_700_000_000 };
        write_file_durably(&p, &encode_manifest(&m)).unwrap();
        assert_eq!(read_manifest(&p).unwrap(), m);
        let good = encode_manifest(&m);
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x80;
            fs::write(&p, &b).unwrap();
            assert!(read_manifest(&p).is_err(), "flip at {i} undetected");
        }
    }
}
