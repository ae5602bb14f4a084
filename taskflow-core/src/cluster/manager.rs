//! The manager's side of the cluster: the inbox actor every executor talks to, the
//! [`RemoteExecutor`] proxy the manager sends assignments through, and the node server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};

use super::codec::{self, RejectLog};
use super::messages::{
    AssignMsg, CheckpointMsg, ConfirmMsg, DrainMsg, Heartbeat, Join, ReplicaAckMsg, Reply,
    ReportMsg, StopMsg, ToExecutor, ToManager, WireAttempt,
};
use super::node::{self, NodeEvent};
use super::wire::Wire;
use crate::executor::ExecutorMsg;

/// The process group of the manager's inbox.
pub(crate) const MANAGER_GROUP: &str = "taskflow.manager.v1";
/// The actor name of the manager's inbox.
pub(crate) const MANAGER_INBOX: &str = "taskflow.manager";
/// The process group of executor agents.
pub(crate) const EXECUTOR_GROUP: &str = "taskflow.executor.v1";

/// The actor name of an executor process's agent.
pub(crate) fn agent_name(executor: &str, instance: u64) -> String {
    format!("taskflow.executor.{executor}.{instance:016x}")
}

/// The guarantee `--replica-acks K` and `--replica-quorum Q` give, as one sentence (the
/// manager logs it at start; `taskflow manager` prints it). N — the executors keeping replicas
/// — is not known at start (executors join later), so the sentence bounds it: with K + Q > N a
/// recovery from Q replicas includes one of the K that acknowledged every event any client
/// saw, and the freshest replica (a longer copy of the same history) wins.
pub fn replica_ack_guarantee(acks: usize, quorum: usize) -> String {
    let (k, q) = (acks, quorum.max(1));
    if k == 0 {
        return "--replica-acks 0: effects wait only for this manager's fdatasync; a \
                    recovery from replicas can lose events a client already saw (the loss \
                    window, proto-docs/cluster.md)"
            .to_owned();
    }
    format!(
        "--replica-acks {k}: every dispatch, reply and console update waits until {k} \
             executor replica(s) hold its events durably; a recovery with --replica-quorum {q} \
             loses nothing any client saw while at most {} executors keep replicas \
             (K + Q > N; N, the executors with --data, is learnt as they join)",
        k + q - 1
    )
}

/// How the manager listens for executors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterListen {
    /// The address to bind (only this one).
    pub addr: SocketAddr,
    /// The shared secret of the handshake.
    pub cookie: String,
    /// An executor not heard from for lease + margin is lost; its shards are reassigned.
    pub lease: Duration,
    /// How often executors send heartbeats.
    pub heartbeat: Duration,
    /// TLS on the link (`--tls-cert`, `--tls-key`, `--tls-ca`); none: plain TCP.
    pub tls: Option<super::ServerTls>,
    /// Allow plain TCP on an address other than loopback (`--insecure-plain-tcp`); without
    /// it such a listener is refused (see [`ClusterListen::validate`]).
    pub insecure_plain_tcp: bool,
}

impl ClusterListen {
    /// The margin around the lease: the manager waits lease + margin, executors fence
    /// themselves at lease − margin.
    pub fn margin(&self) -> Duration {
        self.lease / 5
    }

    /// How long after the last heartbeat it received the manager declares an executor lost
    /// (at the first sweep, every heartbeat/2, after that): lease + margin.
    pub fn lost_after(&self) -> Duration {
        self.lease + self.margin()
    }

    /// Checks the fencing bound (`proto-docs/cluster.md`, "The fencing bound"): a live
    /// executor fences itself at lease − lease/5 after the send of the last heartbeat the
    /// manager acknowledged, strictly before the manager declares it lost at
    /// [`ClusterListen::lost_after`] after the last heartbeat it received; and a heartbeat
    /// plus its answer fit in the fence time twice, so a live executor never fences itself
    /// for a single slow answer. Settings that break it are refused with the reason.
    ///
    /// Also refuses plain TCP on an address other than loopback unless
    /// [`ClusterListen::insecure_plain_tcp`] is set: the cookie would travel in the clear
    /// (a challenge digest) and so would every message.
    pub fn validate(&self) -> Result<(), String> {
        check_timing(self.lease, self.heartbeat)?;
        if self.tls.is_none() && !self.addr.ip().is_loopback() && !self.insecure_plain_tcp {
            return Err(format!(
                "the cluster address {} is not a loopback address and no TLS is configured: give \
                 the manager --tls-cert and --tls-key (and --tls-ca for mutual TLS), or pass \
                 --insecure-plain-tcp to accept executors over plain TCP on a private network",
                self.addr
            ));
        }
        Ok(())
    }

    /// A plain listener on loopback with these timings (tests and embedding).
    pub fn plain(addr: SocketAddr, cookie: String, lease: Duration, heartbeat: Duration) -> Self {
        ClusterListen { addr, cookie, lease, heartbeat, tls: None, insecure_plain_tcp: false }
    }
}

/// The smallest lease: the 2 × lease/5 between the executor's fence and the manager's loss
/// must absorb the executor's scheduling delay (at least 20 ms).
pub(crate) const MIN_LEASE: Duration = Duration::from_millis(50);

/// The smallest heartbeat interval.
pub(crate) const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// When an executor fences itself: this long after sending the last heartbeat (or join) the
/// manager acknowledged, lease − lease/5 (see [`ClusterListen::validate`]).
pub(crate) fn fence_after(lease: Duration) -> Duration {
    lease - lease / 5
}

/// The timing rules of [`ClusterListen::validate`], also applied by an executor to the lease
/// and heartbeat a manager accepts it with.
pub(crate) fn check_timing(lease: Duration, heartbeat: Duration) -> Result<(), String> {
    if lease < MIN_LEASE {
        return Err(format!(
            "the lease ({} ms) must be at least {} ms: an executor fences itself at lease − \
             lease/5 and the manager declares it lost at lease + lease/5, and the 2 × lease/5 \
             between them must absorb the executor's scheduling delay",
            lease.as_millis(),
            MIN_LEASE.as_millis()
        ));
    }
    if heartbeat < MIN_HEARTBEAT {
        return Err(format!(
            "the heartbeat interval ({} ms) must be at least {} ms",
            heartbeat.as_millis(),
            MIN_HEARTBEAT.as_millis()
        ));
    }
    let fence = fence_after(lease);
    if heartbeat * 2 > fence {
        return Err(format!(
            "the heartbeat interval ({} ms) must be at most 2/5 of the lease ({} ms, so at most \
             {} ms): an executor fences itself {} ms after the last heartbeat the manager \
             acknowledged, and a heartbeat plus its answer (allowed up to one interval) must \
             fit in that twice, or a live executor fences itself for a single slow answer",
            heartbeat.as_millis(),
            lease.as_millis(),
            (fence / 2).as_millis(),
            fence.as_millis()
        ));
    }
    Ok(())
}

impl ClusterListen {
    /// How long a restarted manager waits for executors to re-report the shards they ran
    /// before it marks the rest unconfirmed: lease + margin, plus the executors' longest
    /// reconnect backoff (2 s) and a second for the handshake.
    pub fn reconcile_window(&self) -> Duration {
        self.lease + self.margin() + Duration::from_secs(3)
    }
}

/// What the inbox hands the manager, decoded.
pub(crate) enum ClusterIn {
    Join {
        join: Join,
        reply: RpcReplyPort<Vec<u8>>,
    },
    Heartbeat {
        hb: Heartbeat,
        reply: RpcReplyPort<Vec<u8>>,
    },
    Checkpoint {
        cp: CheckpointMsg,
        reply: RpcReplyPort<Vec<u8>>,
    },
    Report(ReportMsg),
    Drain {
        msg: DrainMsg,
        leave: bool,
        reply: RpcReplyPort<Vec<u8>>,
    },
    /// The reports of one `Batch` envelope, in order (handled in one manager turn).
    Reports(Vec<ReportMsg>),
    SessionClosed {
        node_id: u64,
    },
}

/// Sends a reply envelope (an encoding failure is logged; the caller times out).
pub(crate) fn send_reply(reply: RpcReplyPort<Vec<u8>>, msg: &Reply) {
    match codec::encode("reply", msg) {
        Ok(bytes) => {
            let _ = reply.send(bytes);
        }
        Err(e) => warn!(error = %e, "cannot encode a cluster reply"),
    }
}

/// Which manager's day a key belongs to: its business date and its day store's cluster id.
/// Stamped on every key the manager sends; a re-reported outcome of another is not its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DayIdentity {
    /// YYYY-MM-DD.
    pub(crate) date: String,
    /// `meta/app/cluster_id` of the day store.
    pub(crate) cluster_id: String,
}

impl DayIdentity {
    /// The wire form of `key` of this day.
    pub(crate) fn stamp(&self, key: &crate::job::AttemptKey) -> WireAttempt {
        WireAttempt::stamped(key, &self.date, &self.cluster_id)
    }
}

/// The manager's proxy of a joined executor: looks like a local executor to the manager.
#[derive(Clone)]
pub(crate) struct RemoteExecutor {
    pub(crate) agent: ActorRef<Wire>,
    pub(crate) epoch: u64,
    pub(crate) name: String,
    /// The manager's day, stamped on every key sent to the executor.
    pub(crate) day: DayIdentity,
}

impl RemoteExecutor {
    /// The ractor_cluster session (node id) the agent is reached through.
    pub(crate) fn node_id(&self) -> u64 {
        self.agent.get_id().node()
    }

    /// Tells the executor it may forget these outcomes (keys of this manager's day: stamped
    /// here).
    pub(crate) fn confirm(&self, mut keys: Vec<WireAttempt>) {
        for k in &mut keys {
            k.date.clone_from(&self.day.date);
            k.cluster_id.clone_from(&self.day.cluster_id);
        }
        let msg = ToExecutor::Confirm(ConfirmMsg { epoch: self.epoch, keys });
        match codec::encode("executor message", &msg) {
            Ok(bytes) => {
                if self.agent.cast(Wire::Cast(bytes)).is_err() {
                    info!(executor = %self.name, "executor unreachable; confirmation dropped");
                }
            }
            Err(e) => warn!(executor = %self.name, error = %e, "confirmation refused"),
        }
    }

    /// Sends the messages of one manager turn in as few envelopes as possible (a
    /// [`ToExecutor::Batch`] when there are several): one encode and one ractor_cluster cast
    /// per envelope instead of per shard.
    pub(crate) fn send_all(&self, msgs: Vec<ExecutorMsg>) {
        // The assignments of one task share their behavior, date, covered dates, params and
        // timeout: those are converted once per batch (formatting a date costs more than all
        // the rest of a shard's wire form), then cloned.
        let mut template: Option<AssignMsg> = None;
        let mut wire = Vec::with_capacity(msgs.len());
        for msg in &msgs {
            wire.push(match msg {
                ExecutorMsg::Assign(a) => {
                    let t = match template.take() {
                        Some(t) if t.key.task == a.key.task.as_str() => t,
                        _ => AssignMsg::from_assignment(self.epoch, a, &self.day.cluster_id),
                    };
                    let m = AssignMsg {
                        epoch: self.epoch,
                        key: WireAttempt::stamped(&a.key, &t.date, &self.day.cluster_id),
                        slot: a.slot,
                        behavior: t.behavior.clone(),
                        date: t.date.clone(),
                        shard_key: a.shard_key.as_str().to_owned(),
                        scope: a.scope.clone(),
                        covered_dates: t.covered_dates.clone(),
                        params: t.params.clone(),
                        completed_steps: a.completed_steps as u32,
                        timeout_ms: t.timeout_ms,
                    };
                    template = Some(t);
                    ToExecutor::Assign(m)
                }
                ExecutorMsg::Stop { slot, key } => ToExecutor::Stop(StopMsg {
                    epoch: self.epoch,
                    slot: *slot,
                    key: self.day.stamp(key),
                }),
            });
        }
        drop(msgs);
        let unwrap = |m| match m {
            ToExecutor::Batch(items) => items,
            other => vec![other],
        };
        for bytes in codec::encode_batch("executor message", wire, ToExecutor::Batch, unwrap) {
            match bytes {
                Ok(bytes) => {
                    if self.agent.cast(Wire::Cast(bytes)).is_err() {
                        info!(executor = %self.name, "executor unreachable; message dropped");
                    }
                }
                Err(e) => warn!(executor = %self.name, error = %e, "message to executor refused"),
            }
        }
    }

    /// Finds a joined executor's agent among the remote members of its group.
    pub(crate) fn find(join: &Join, epoch: u64, day: DayIdentity) -> Option<RemoteExecutor> {
        let name = agent_name(&join.executor, join.instance);
        let cell = node::remote_members(EXECUTOR_GROUP, Some(&name)).into_iter().next()?;
        Some(RemoteExecutor {
            agent: ActorRef::from(cell),
            epoch,
            name: join.executor.clone(),
            day,
        })
    }
}

/// What the listener hands the manager: a decoded executor message or session close, or a
/// replication acknowledgement (for the replicator).
pub(crate) enum Inbound {
    /// For the manager's core.
    Cluster(ClusterIn),
    /// For the replicator.
    ReplicaAck(ReplicaAckMsg),
}

/// Where the listener delivers what it decoded: the manager's mailbox, given by the manager
/// (so this module needs nothing of the manager's actor).
pub(crate) type Deliver = Arc<dyn Fn(Inbound) + Send + Sync>;

/// The manager's inbox: decodes every envelope into a `Result` and hands the manager what it
/// understood; rejects the rest (logged once per peer and reason, answered if it was a call).
pub(crate) struct Inbox;

pub(crate) struct InboxState {
    manager: Deliver,
    rejects: RejectLog,
}

impl Actor for Inbox {
    type Msg = Wire;
    type State = InboxState;
    type Arguments = Deliver;

    async fn pre_start(
        &self,
        myself: ActorRef<Wire>,
        manager: Deliver,
    ) -> Result<InboxState, ActorProcessingErr> {
        ractor::pg::join(MANAGER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(InboxState { manager, rejects: RejectLog::default() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        state: &mut InboxState,
    ) -> Result<(), ActorProcessingErr> {
        let (bytes, reply) = match msg {
            Wire::Cast(b) => (b, None),
            Wire::Call(b, r) => (b, Some(r)),
        };
        let decoded = codec::decode::<ToManager>("executor message", &bytes);
        let input = match (decoded, reply) {
            (Ok(ToManager::Join(join)), Some(reply)) => ClusterIn::Join { join, reply },
            (Ok(ToManager::Heartbeat(hb)), Some(reply)) => ClusterIn::Heartbeat { hb, reply },
            (Ok(ToManager::Checkpoint(cp)), Some(reply)) => ClusterIn::Checkpoint { cp, reply },
            (Ok(ToManager::Report(r)), None) => ClusterIn::Report(r),
            (Ok(ToManager::Drain(msg)), Some(reply)) => {
                ClusterIn::Drain { msg, leave: false, reply }
            }
            (Ok(ToManager::Leave(msg)), Some(reply)) => {
                ClusterIn::Drain { msg, leave: true, reply }
            }
            // Replication acks go to `actors::manager::replication`, not to `members`.
            (Ok(ToManager::ReplicaAck(a)), None) => {
                (state.manager)(Inbound::ReplicaAck(a));
                return Ok(());
            }
            (Ok(ToManager::Batch(items)), None) => {
                let mut reports = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        ToManager::Report(r) => reports.push(r),
                        other => {
                            let err = codec::WireError::Body {
                                what: "executor message",
                                detail: format!("{} inside a batch", variant_name(&other)),
                            };
                            state.rejects.reject(peer_of(&other), &err);
                        }
                    }
                }
                ClusterIn::Reports(reports)
            }
            (Ok(other), reply) => {
                let what = if reply.is_some() { "a call" } else { "a cast" };
                let err = codec::WireError::Body {
                    what: "executor message",
                    detail: format!("{} arrived as {what}", variant_name(&other)),
                };
                state.rejects.reject(peer_of(&other), &err);
                if let Some(reply) = reply {
                    send_reply(reply, &Reply::Rejected { reason: err.to_string() });
                }
                return Ok(());
            }
            (Err(err), reply) => {
                state.rejects.reject("unknown executor", &err);
                if let Some(reply) = reply {
                    let reason = match err {
                        codec::WireError::Version { found } => format!(
                            "protocol version mismatch: the executor speaks {found}, the manager \
                             speaks {}",
                            codec::supported_versions()
                        ),
                        other => other.to_string(),
                    };
                    send_reply(reply, &Reply::JoinRejected { reason });
                }
                return Ok(());
            }
        };
        (state.manager)(Inbound::Cluster(input));
        Ok(())
    }
}

fn variant_name(m: &ToManager) -> &'static str {
    match m {
        ToManager::Join(_) => "join",
        ToManager::Heartbeat(_) => "heartbeat",
        ToManager::Checkpoint(_) => "checkpoint",
        ToManager::Report(_) => "report",
        ToManager::Drain(_) => "drain",
        ToManager::Leave(_) => "leave",
        ToManager::ReplicaAck(_) => "replica ack",
        ToManager::ReplicaChunk(_) => "replica chunk",
        ToManager::Batch(_) => "batch",
    }
}

fn peer_of(m: &ToManager) -> &str {
    match m {
        ToManager::Join(j) => &j.executor,
        ToManager::Heartbeat(h) => &h.executor,
        ToManager::Checkpoint(c) => &c.executor,
        ToManager::Report(r) => &r.executor,
        ToManager::Drain(d) | ToManager::Leave(d) => &d.executor,
        ToManager::ReplicaAck(a) => &a.executor,
        ToManager::ReplicaChunk(c) => &c.executor,
        ToManager::Batch(items) => items.first().map_or("unknown executor", peer_of),
    }
}

/// Starts the inbox (advertised to executors) and the node server bound to `listen.addr`;
/// session closes are forwarded to the manager.
/// The manager's listener: its inbox and the node server. Stopped with [`Listener::stop`].
pub(crate) struct Listener {
    inbox: ActorRef<Wire>,
    node: ActorRef<ractor_cluster::NodeServerMessage>,
    /// With TLS: the accept loop on the cluster address.
    accept: Option<super::tls::AcceptTask>,
}

impl Listener {
    /// Stops the inbox (a globally named actor) and the node server and waits, so that the
    /// port is closed and a new runtime in this process can accept executors again.
    pub(crate) async fn stop(self) {
        let grace = Some(std::time::Duration::from_secs(5));
        if let Some(accept) = self.accept {
            accept.stop().await;
        }
        let _ = self.inbox.stop_and_wait(None, grace).await;
        let _ = self.node.stop_and_wait(None, grace).await;
    }
}

/// Starts listening for executors on `listen.addr`; decoded messages go to `manager`.
pub(crate) async fn start(listen: &ClusterListen, manager: Deliver) -> Result<Listener, String> {
    listen.validate()?;
    let (inbox, _) = Actor::spawn(Some(MANAGER_INBOX.into()), Inbox, manager.clone())
        .await
        .map_err(|e| format!("cannot start the cluster inbox: {e}"))?;
    let node = node::start_server(
        "taskflow-manager".into(),
        listen.cookie.clone(),
        listen.addr,
        listen.tls.as_ref(),
        move |e| {
            if let NodeEvent::Disconnected { node_id, .. } = e {
                manager(Inbound::Cluster(ClusterIn::SessionClosed { node_id }));
            }
        },
    )
    .await;
    match node {
        Ok((node, accept)) => Ok(Listener { inbox, node, accept }),
        Err(e) => {
            inbox.stop(None);
            Err(e)
        }
    }
}
