//! Distributed executors over ractor_cluster: the only module that knows ractor_cluster.
//!
//! ```text
//! manager process                               executor process
//!  Manager ─ RemoteExecutor(proxy) ──Wire::Cast(Assign|Stop)──►  Agent ─ Executor ─ SlotRunner×N
//!     ▲                                                              │
//!     └──── Inbox ◄──Wire::Call(Join|Heartbeat|Checkpoint) / Wire::Cast(Report)──┘
//! ```
//!
//! Every message is one envelope ([`codec`]): `[u16 version][rmp named body]`, decoded in the
//! handler into a `Result`. Casts to one peer are coalesced into one `Batch` envelope: the
//! manager's per release, the executor's per wake-up of its sender (no timer). See
//! `proto-docs/cluster.md`.

pub mod codec;
pub(crate) mod executor;
mod held;
pub(crate) mod manager;
// TODO(protocol change): `WireAttempt`'s docs link to the private `actors::AttemptKey`; name it
// without a link in `messages.rs` and remove this allow (kept out of that file, which is being
// edited for the protocol change).
#[allow(rustdoc::private_intra_doc_links)]
pub mod messages;
mod node;
mod status;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tls;
pub mod wire;
// --- replication: executors keep copies of the manager's day log; recovery from them ---
pub(crate) mod history;
pub mod recovery;
pub(crate) mod replica;
pub use recovery::{RecoverOptions, RecoveryError, RecoveryOutcome, recover_from_replicas};
// --- end replication ---

pub use executor::{ExecutorConfig, ExecutorError, run_executor};
pub use manager::{ClusterListen, replica_ack_guarantee};
pub use status::{Status, StatusSink};
pub use tls::{ClientTls, EXPIRY_WARNING_DAYS, HANDSHAKE_TIMEOUT, ServerTls, TlsError};

#[cfg(test)]
mod tests;
