//! Test hooks (feature `test-util`) that speak raw envelopes over real ractor_cluster sessions:
//! [`RawPeer`] joins a manager with the right cookie and sends it garbage, envelopes of unknown
//! versions and oversize messages, to prove that the manager rejects them clearly and lives
//! on; [`FakeManager`] is joined by real executor processes and sends them messages in orders
//! a real manager produces only under load (an `Assign` before the answer to the `Join`);
//! [`FakeExecutor`] joins a real manager process the way an executor does (its agent is
//! advertised under an executor's name), so a test can answer assignments as an executor
//! would only in rare orders (a refusal, a re-join naming busy slots, a checkpoint sent twice).
//!
//! The smallest honest surface: the same node setup and addressing the real sides use (so the
//! bytes travel exactly as theirs would), with no encoding of their own.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use ractor_cluster::NodeServerMessage;
use tokio::sync::mpsc;

use super::manager::{EXECUTOR_GROUP, MANAGER_GROUP, MANAGER_INBOX, agent_name};
use super::node::{self, NodeEvent};
use super::wire::Wire;

/// A raw cluster peer connected to a manager's inbox. Dropping it closes the session.
pub struct RawPeer {
    node: ActorRef<NodeServerMessage>,
    inbox: ActorRef<Wire>,
}

impl RawPeer {
    /// Connects to the manager at `addr` with `cookie` and waits (bounded by `within`) until
    /// the session is ready and the manager's inbox is known. `name` must be unique per
    /// process (it names the local node).
    pub async fn connect(
        addr: SocketAddr,
        cookie: &str,
        name: &str,
        within: Duration,
    ) -> Result<RawPeer, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let node = node::start(format!("taskflow-raw-peer:{name}"), cookie.to_owned(), listen, {
            move |e| {
                let _ = tx.send(e);
            }
        })
        .await?;
        let peer = async {
            node::connect(&node, &addr.to_string()).await?;
            let node_id = loop {
                match rx.recv().await {
                    Some(NodeEvent::Ready { node_id }) => break node_id,
                    Some(NodeEvent::Disconnected { .. }) => {
                        return Err("the manager closed the session (wrong cookie?)".to_owned());
                    }
                    Some(NodeEvent::Authenticated) => {}
                    None => return Err("the node stopped".to_owned()),
                }
            };
            node::remote_members(MANAGER_GROUP, Some(MANAGER_INBOX))
                .into_iter()
                .find(|c| c.get_id().node() == node_id)
                .map(ActorRef::<Wire>::from)
                .ok_or_else(|| "the peer advertises no taskflow manager inbox".to_owned())
        };
        match tokio::time::timeout(within, peer).await {
            Ok(Ok(inbox)) => Ok(RawPeer { node, inbox }),
            Ok(Err(e)) => {
                node.stop(None);
                Err(e)
            }
            Err(_) => {
                node.stop(None);
                Err(format!("no ready session with {addr} within {within:?}"))
            }
        }
    }

    /// Sends `bytes` to the manager's inbox as a cast (`Wire::Cast`).
    pub fn cast_raw(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.inbox.cast(Wire::Cast(bytes)).map_err(|e| format!("cast failed: {e}"))
    }

    /// Sends `bytes` as a call (`Wire::Call`) and returns the raw reply envelope.
    pub async fn call_raw(&self, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        match self.inbox.call(|r| Wire::Call(bytes, r), Some(timeout)).await {
            Ok(CallResult::Success(b)) => Ok(b),
            Ok(CallResult::Timeout) => Err(format!("no reply within {timeout:?}")),
            Ok(CallResult::SenderError) => Err("the reply port was dropped".to_owned()),
            Err(e) => Err(format!("call failed: {e}")),
        }
    }

    /// Whether the session still carries messages (the inbox's remote proxy is alive).
    pub fn is_connected(&self) -> bool {
        matches!(self.inbox.get_status(), ractor::ActorStatus::Running)
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.node.stop(None);
    }
}

/// A message a [`FakeManager`] received: an envelope, and for a call the port to answer on.
pub struct Incoming {
    /// The envelope as it arrived.
    pub bytes: Vec<u8>,
    /// The reply port of a call (`None` for a cast).
    pub reply: Option<ractor::RpcReplyPort<Vec<u8>>>,
}

impl Incoming {
    /// Answers a call with a raw envelope (a cast is not answered).
    pub fn answer(self, bytes: Vec<u8>) {
        if let Some(reply) = self.reply {
            let _ = reply.send(bytes);
        }
    }
}

/// A stand-in for the manager that real executor processes join: it listens on an address
/// and advertises an inbox under the manager's name and group, hands every message to the
/// test, and lets the test cast raw envelopes to an executor's agent — in any order, e.g. an
/// `Assign` before the answer to the `Join` that made it possible. Dropping it stops it.
pub struct FakeManager {
    node: ActorRef<NodeServerMessage>,
    inbox: ActorRef<Wire>,
}

struct FakeInbox;

impl ractor::Actor for FakeInbox {
    type Msg = Wire;
    type State = mpsc::UnboundedSender<Incoming>;
    type Arguments = mpsc::UnboundedSender<Incoming>;

    async fn pre_start(
        &self,
        myself: ActorRef<Wire>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        ractor::pg::join(MANAGER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        tx: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let incoming = match msg {
            Wire::Cast(bytes) => Incoming { bytes, reply: None },
            Wire::Call(bytes, reply) => Incoming { bytes, reply: Some(reply) },
        };
        let _ = tx.send(incoming);
        Ok(())
    }
}

impl FakeManager {
    /// Listens on `listen` with `cookie`; every message to the inbox comes out of the
    /// returned receiver. One per process (the inbox's name is process-global).
    pub async fn start(
        listen: SocketAddr,
        cookie: &str,
    ) -> Result<(FakeManager, mpsc::UnboundedReceiver<Incoming>), String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (inbox, _) = ractor::Actor::spawn(Some(MANAGER_INBOX.into()), FakeInbox, tx)
            .await
            .map_err(|e| format!("cannot start the fake inbox: {e}"))?;
        match node::start("taskflow-fake-manager".into(), cookie.to_owned(), listen, |_| {}).await {
            Ok(node) => Ok((FakeManager { node, inbox }, rx)),
            Err(e) => {
                inbox.stop(None);
                Err(e)
            }
        }
    }

    /// Casts `bytes` to the agent of the executor process `executor`/`instance` (as its
    /// `Join` named them), once that agent is advertised on a session.
    pub fn cast_to_executor(
        &self,
        executor: &str,
        instance: u64,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        let name = super::manager::agent_name(executor, instance);
        let agent = node::remote_members(super::manager::EXECUTOR_GROUP, Some(&name))
            .into_iter()
            .next()
            .map(ActorRef::<Wire>::from)
            .ok_or_else(|| format!("no agent {name} is advertised"))?;
        agent.cast(Wire::Cast(bytes)).map_err(|e| format!("cast failed: {e}"))
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.node.stop(None);
        self.inbox.stop(None);
    }
}

/// A stand-in for an executor process: its agent is advertised under the name a real executor
/// `name`/`instance` would have, so a real manager that accepts its `Join` sends it
/// assignments; everything cast to the agent comes out of the receiver. The test speaks raw
/// envelopes (join, heartbeat, reports) through [`FakeExecutor::call`] and
/// [`FakeExecutor::cast`]. [`FakeExecutor::reconnect`] opens a new session (a new node, as a
/// real executor does) with the same agent. One per process per name. Dropping it stops it.
pub struct FakeExecutor {
    node: ActorRef<NodeServerMessage>,
    inbox: ActorRef<Wire>,
    agent: ActorRef<Wire>,
    name: String,
    instance: u64,
    conn: u32,
}

struct FakeAgent;

impl ractor::Actor for FakeAgent {
    type Msg = Wire;
    type State = mpsc::UnboundedSender<Vec<u8>>;
    type Arguments = mpsc::UnboundedSender<Vec<u8>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Wire>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        ractor::pg::join(EXECUTOR_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        tx: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let Wire::Cast(bytes) = msg {
            let _ = tx.send(bytes);
        }
        Ok(())
    }
}

impl FakeExecutor {
    /// Starts the agent of `name`/`instance` and connects to the manager at `addr` (bounded
    /// by `within`). Every envelope the manager casts to the agent comes out of the receiver.
    pub async fn connect(
        addr: SocketAddr,
        cookie: &str,
        name: &str,
        instance: u64,
        within: Duration,
    ) -> Result<(FakeExecutor, mpsc::UnboundedReceiver<Vec<u8>>), String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (agent, _) = ractor::Actor::spawn(Some(agent_name(name, instance)), FakeAgent, tx)
            .await
            .map_err(|e| format!("cannot start the fake agent: {e}"))?;
        match session(addr, cookie, name, instance, 1, within).await {
            Ok((node, inbox)) => Ok((
                FakeExecutor { node, inbox, agent, name: name.to_owned(), instance, conn: 1 },
                rx,
            )),
            Err(e) => {
                agent.stop(None);
                Err(e)
            }
        }
    }

    /// Closes the session and opens a new one to `addr` (the agent stays).
    pub async fn reconnect(
        &mut self,
        addr: SocketAddr,
        cookie: &str,
        within: Duration,
    ) -> Result<(), String> {
        self.node.stop(None);
        self.conn += 1;
        let (node, inbox) =
            session(addr, cookie, &self.name, self.instance, self.conn, within).await?;
        self.node = node;
        self.inbox = inbox;
        Ok(())
    }

    /// Sends a call to the manager's inbox and returns the raw reply envelope.
    pub async fn call(&self, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        match self.inbox.call(|r| Wire::Call(bytes, r), Some(timeout)).await {
            Ok(CallResult::Success(b)) => Ok(b),
            Ok(CallResult::Timeout) => Err(format!("no reply within {timeout:?}")),
            Ok(CallResult::SenderError) => Err("the reply port was dropped".to_owned()),
            Err(e) => Err(format!("call failed: {e}")),
        }
    }

    /// Sends a cast to the manager's inbox.
    pub fn cast(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.inbox.cast(Wire::Cast(bytes)).map_err(|e| format!("cast failed: {e}"))
    }
}

impl Drop for FakeExecutor {
    fn drop(&mut self) {
        self.node.stop(None);
        self.agent.stop(None);
    }
}

/// Connects a fake executor's connection `conn` to the manager, retrying (every 100 ms) until
/// `within` has passed: a manager process prints that it accepts executors just before it
/// binds.
async fn session(
    addr: SocketAddr,
    cookie: &str,
    name: &str,
    instance: u64,
    conn: u32,
    within: Duration,
) -> Result<(ActorRef<NodeServerMessage>, ActorRef<Wire>), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match session_once(addr, cookie, name, instance, conn, left).await {
            Ok(x) => return Ok(x),
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline => {
                return Err(e);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Starts a node for connection `conn` of a fake executor and connects it to the manager.
async fn session_once(
    addr: SocketAddr,
    cookie: &str,
    name: &str,
    instance: u64,
    conn: u32,
    within: Duration,
) -> Result<(ActorRef<NodeServerMessage>, ActorRef<Wire>), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let node_name = format!("taskflow-executor:{name}:{instance:016x}:{conn}");
    let node = node::start(node_name, cookie.to_owned(), listen, move |e| {
        let _ = tx.send(e);
    })
    .await?;
    let ready = async {
        node::connect(&node, &addr.to_string()).await?;
        let node_id = loop {
            match rx.recv().await {
                Some(NodeEvent::Ready { node_id }) => break node_id,
                Some(NodeEvent::Disconnected { .. }) => {
                    return Err("the manager closed the session (wrong cookie?)".to_owned());
                }
                Some(NodeEvent::Authenticated) => {}
                None => return Err("the node stopped".to_owned()),
            }
        };
        node::remote_members(MANAGER_GROUP, Some(MANAGER_INBOX))
            .into_iter()
            .find(|c| c.get_id().node() == node_id)
            .map(ActorRef::<Wire>::from)
            .ok_or_else(|| "the peer advertises no taskflow manager inbox".to_owned())
    };
    match tokio::time::timeout(within, ready).await {
        Ok(Ok(inbox)) => Ok((node, inbox)),
        Ok(Err(e)) => {
            node.stop(None);
            Err(e)
        }
        Err(_) => {
            node.stop(None);
            Err(format!("no ready session with {addr} within {within:?}"))
        }
    }
}
