//! The envelope every cluster message travels in, and the rate-limited rejection log.
//!
//! ```text
//! [u16 BE protocol version][rmp_serde::to_vec_named body]
//! ```
//!
//! Decoding returns a [`Result`]: a message that is truncated, of an unknown protocol version,
//! too large or undecodable is rejected with a [`WireError`], never a panic, and the caller
//! logs it once per peer and reason ([`RejectLog`]). Sizes are checked before sending.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

/// The cluster protocol version this build speaks. Version 3: attempt keys carry the business
/// date and the cluster id, joins carry the busy slots, assignments are refused out loud.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest protocol version this build still decodes (version 2 keys carry no day, so a
/// version-2 peer could reconcile an outcome against another day's shard).
pub const MIN_PROTOCOL_VERSION: u16 = 3;

/// The versions this build speaks, for messages: `3`, or `3..=4` once there are several.
pub fn supported_versions() -> String {
    if MIN_PROTOCOL_VERSION == PROTOCOL_VERSION {
        PROTOCOL_VERSION.to_string()
    } else {
        format!("{MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}")
    }
}

/// The largest envelope sent or accepted: far below ractor_cluster's 16 MiB frame limit, whose
/// breach drops the whole session. Payloads are references, never blobs.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a message could not be encoded or was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the two-byte version header.
    #[error("a message of {0} bytes is shorter than the 2-byte envelope header")]
    Truncated(usize),
    /// A protocol version this build does not speak.
    #[error(
        "protocol version {found} is not supported: this node speaks version {}",
        supported_versions()
    )]
    Version {
        /// The version in the envelope.
        found: u16,
    },
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("a message of {size} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes")]
    TooLarge {
        /// The envelope's size.
        size: usize,
    },
    /// The body does not decode as the expected message.
    #[error("undecodable {what}: {detail}")]
    Body {
        /// What was expected.
        what: &'static str,
        /// The decoder's error.
        detail: String,
    },
    /// The body could not be encoded (a bug).
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        detail: String,
    },
}

impl WireError {
    /// A short stable reason, for rate-limited logging and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated(_) => "truncated",
            WireError::Version { .. } => "version",
            WireError::TooLarge { .. } => "too-large",
            WireError::Body { .. } => "undecodable",
            WireError::Encode { .. } => "encode",
        }
    }
}

/// Encodes `msg` in the envelope; refuses anything over [`MAX_MESSAGE_BYTES`].
pub fn encode<T: Serialize>(what: &'static str, msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = PROTOCOL_VERSION.to_be_bytes().to_vec();
    rmp_serde::encode::write_named(&mut out, msg)
        .map_err(|e| WireError::Encode { what, detail: e.to_string() })?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { size: out.len() });
    }
    Ok(out)
}

/// Encodes several messages for one peer in as few envelopes as possible: one message as
/// itself, several as `wrap(items)` (a `Batch` variant), split in halves until every envelope
/// fits in [`MAX_MESSAGE_BYTES`]. A single message too large on its own is an error in its
/// place; the others still go.
pub fn encode_batch<T: Serialize>(
    what: &'static str,
    mut items: Vec<T>,
    wrap: fn(Vec<T>) -> T,
    unwrap: fn(T) -> Vec<T>,
) -> Vec<Result<Vec<u8>, WireError>> {
    if items.len() <= 1 {
        return items.pop().map(|m| encode(what, &m)).into_iter().collect();
    }
    let batch = wrap(items);
    match encode(what, &batch) {
        Err(WireError::TooLarge { .. }) => {
            let mut first = unwrap(batch);
            let second = first.split_off(first.len() / 2);
            let mut out = encode_batch(what, first, wrap, unwrap);
            out.extend(encode_batch(what, second, wrap, unwrap));
            out
        }
        other => vec![other],
    }
}

/// Decodes an envelope into `T`, or says why it is rejected.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { size: bytes.len() });
    }
    let Some((head, body)) = bytes.split_first_chunk::<2>() else {
        return Err(WireError::Truncated(bytes.len()));
    };
    let found = u16::from_be_bytes(*head);
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&found) {
        return Err(WireError::Version { found });
    }
    rmp_serde::from_slice(body).map_err(|e| WireError::Body { what, detail: e.to_string() })
}

/// The protocol version of an envelope, if it has a header.
pub fn version_of(bytes: &[u8]) -> Option<u16> {
    bytes.split_first_chunk::<2>().map(|(h, _)| u16::from_be_bytes(*h))
}

/// Logs each (peer, reason) rejection once, then counts it silently; bounded in size.
#[derive(Debug, Default)]
pub struct RejectLog {
    seen: HashMap<(String, &'static str), u64>,
}

impl RejectLog {
    const MAX_KEYS: usize = 1024;

    /// Records a rejection; logs it if it is the first of its (peer, reason). Returns whether
    /// it was logged.
    pub fn reject(&mut self, peer: &str, err: &WireError) -> bool {
        let key = (peer.to_owned(), err.reason());
        if let Some(n) = self.seen.get_mut(&key) {
            *n += 1;
            return false;
        }
        if self.seen.len() >= Self::MAX_KEYS {
            self.seen.clear();
        }
        self.seen.insert(key, 1);
        warn!(peer, reason = err.reason(), error = %err, "cluster message rejected (logged once per peer and reason)");
        true
    }

    /// How many rejections of (peer, reason) were seen.
    pub fn count(&self, peer: &str, reason: &'static str) -> u64 {
        self.seen.get(&(peer.to_owned(), reason)).copied().unwrap_or(0)
    }
}

/// Encodes with an explicit protocol version in the header (a test hook for version skew).
pub fn encode_version<T: Serialize>(
    version: u16,
    what: &'static str,
    msg: &T,
) -> Result<Vec<u8>, WireError> {
    let mut out = encode(what, msg)?;
    out[..2].copy_from_slice(&version.to_be_bytes());
    Ok(out)
}
