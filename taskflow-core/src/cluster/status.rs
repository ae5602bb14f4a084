//! What an executor process or a recovery from replicas tells its operator: a few milestones
//! (joined the manager, draining, recovering a day …) handed to a [`StatusSink`].
//!
//! The library prints nothing: the program embedding it decides. `taskflow` prints each status
//! as one line on stdout (its multi-process tests wait for those lines); the default sink
//! drops them. The texts are the [`Display`](std::fmt::Display) of [`Status`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::BusinessDate;

/// A milestone worth one line to the operator of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The executor joined the manager: a session is up and shards may come.
    Joined {
        /// The executor's name.
        executor: String,
        /// The manager's address, as configured.
        manager: String,
        /// The epoch the manager accepted it in.
        epoch: u64,
        /// Its slots.
        slots: u32,
        /// The lease the manager granted.
        lease: Duration,
    },
    /// The manager is recovering its day from replicas; the executor waits and joins again.
    ManagerRecovering {
        /// The executor's name.
        executor: String,
    },
    /// The manager accepted the executor's drain: no new shards come.
    Draining {
        /// The executor's name.
        executor: String,
    },
    /// The drained executor left the cluster (nothing of it is reassigned).
    Left {
        /// The executor's name.
        executor: String,
    },
    /// A drain completed while no manager session was up.
    DrainedOffline {
        /// The executor's name.
        executor: String,
    },
    /// The executor has no data directory, so it keeps no replica.
    NoReplica {
        /// The executor's name.
        executor: String,
    },
    /// The executor keeps replicas of the manager's day logs.
    KeepingReplicas {
        /// The executor's name.
        executor: String,
        /// Where (`<data>/replica`).
        dir: PathBuf,
    },
    /// A recovering manager listens for executors with replicas.
    RecoveryWaiting {
        /// The day being recovered.
        date: BusinessDate,
        /// How many executors with replicas it waits for.
        quorum: usize,
        /// How long it waits at most.
        wait: Duration,
        /// The address it listens on.
        addr: SocketAddr,
    },
    /// An executor joined the recovering manager (said once per executor).
    RecoveryExecutorJoined {
        /// The executor's name.
        executor: String,
        /// How many replicas it reported.
        replicas: usize,
        /// Whether it keeps replicas at all (has a data directory).
        keeps: bool,
    },
    /// The replica chosen to recover from.
    RecoveryChosen {
        /// The executor holding it.
        executor: String,
        /// The replica's cluster id.
        cluster_id: String,
        /// The epoch of its newest events.
        epoch: u64,
        /// The seq it is durable through.
        seq: u64,
    },
    /// The day's store was rebuilt from the replica.
    Recovered {
        /// The day.
        date: BusinessDate,
        /// The executor whose replica was taken.
        executor: String,
        /// The seq of the snapshot it started from (0: none).
        snapshot_seq: u64,
        /// The last event's seq.
        seq: u64,
        /// The highest epoch any executor reported; the manager's next one is above it.
        max_epoch: u64,
    },
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Joined { executor, manager, epoch, slots, lease } => write!(
                f,
                "executor {executor}: joined the manager at {manager} (epoch {epoch}, {slots} \
                 slots, lease {lease:?})"
            ),
            Status::ManagerRecovering { executor } => write!(
                f,
                "executor {executor}: the manager is recovering its day from replicas; waiting"
            ),
            Status::Draining { executor } => write!(
                f,
                "executor {executor}: draining: no new shards; waiting for running ones to finish"
            ),
            Status::Left { executor } => {
                write!(f, "executor {executor}: drained and left the cluster")
            }
            Status::DrainedOffline { executor } => write!(
                f,
                "executor {executor}: drained (no manager session; nothing running or unconfirmed)"
            ),
            Status::NoReplica { executor } => write!(
                f,
                "executor {executor}: no --data: this executor keeps no replica of the manager's \
                 events"
            ),
            Status::KeepingReplicas { executor, dir } => {
                write!(f, "executor {executor}: keeping replicas in {}", dir.display())
            }
            Status::RecoveryWaiting { date, quorum, wait, addr } => write!(
                f,
                "taskflow manager: recovering {date} from executor replicas: waiting for \
                 {quorum} executor(s) with --data (at most {wait:?}) on {addr}"
            ),
            Status::RecoveryExecutorJoined { executor, replicas, keeps } => write!(
                f,
                "taskflow manager: executor {executor} reports {replicas} replica(s){}",
                if *keeps { "" } else { " (it keeps none: no --data)" }
            ),
            Status::RecoveryChosen { executor, cluster_id, epoch, seq } => write!(
                f,
                "taskflow manager: recovering from the replica of executor {executor} (cluster \
                 {cluster_id}, epoch {epoch}, seq {seq})"
            ),
            Status::Recovered { date, executor, snapshot_seq, seq, max_epoch } => write!(
                f,
                "taskflow manager: recovered day {date} from the replica of executor \
                 {executor}: snapshot seq {snapshot_seq}, events through seq {seq}, epoch set \
                 above {max_epoch}"
            ),
        }
    }
}

/// Where [`Status`]es go: a callback, called on the thread that reached the milestone (keep it
/// short: print, or send on a channel). The default drops every status.
#[derive(Clone, Default)]
pub struct StatusSink(Option<Arc<dyn Fn(Status) + Send + Sync>>);

impl StatusSink {
    /// A sink calling `f` with every status.
    pub fn new(f: impl Fn(Status) + Send + Sync + 'static) -> Self {
        StatusSink(Some(Arc::new(f)))
    }

    /// Hands `status` to the callback, if there is one.
    pub(crate) fn emit(&self, status: Status) {
        if let Some(f) = &self.0 {
            f(status);
        }
    }
}

impl fmt::Debug for StatusSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "StatusSink(callback)" } else { "StatusSink(none)" })
    }
}

/// Two sinks are equal if both drop everything or both are the same callback.
impl PartialEq for StatusSink {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for StatusSink {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multi-process tests and operators' scripts wait for these exact texts.
    #[test]
    fn statuses_keep_their_texts() {
        let joined = Status::Joined {
            executor: "e1".into(),
            manager: "127.0.0.1:7700".into(),
            epoch: 3,
            slots: 2,
            lease: Duration::from_millis(1500),
        };
        assert_eq!(
            joined.to_string(),
            "executor e1: joined the manager at 127.0.0.1:7700 (epoch 3, 2 slots, lease 1.5s)"
        );
        let joined =
            Status::RecoveryExecutorJoined { executor: "e2".into(), replicas: 0, keeps: false };
        assert_eq!(
            joined.to_string(),
            "taskflow manager: executor e2 reports 0 replica(s) (it keeps none: no --data)"
        );
        let left = Status::Left { executor: "e1".into() };
        assert_eq!(left.to_string(), "executor e1: drained and left the cluster");
    }

    #[test]
    fn a_sink_gets_every_status_and_the_default_drops_them() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = StatusSink::new({
            let seen = seen.clone();
            move |s| seen.lock().unwrap().push(s.to_string())
        });
        sink.emit(Status::Left { executor: "e".into() });
        StatusSink::default().emit(Status::Left { executor: "f".into() });
        assert_eq!(*seen.lock().unwrap(), vec!["executor e: drained and left the cluster"]);
        assert_eq!(sink, sink.clone());
        assert_ne!(sink, StatusSink::default());
    }
}
