//! Starting a ractor_cluster `NodeServer` bound to one address (with TLS, behind the
//! bounded-handshake accept loop of `tls.rs`), connecting to a peer, and session events.

use std::net::SocketAddr;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};

use super::tls::{AcceptTask, ClientTls, ConnectFail, Probe, ServerTls};

/// A session event of the node server.
#[derive(Debug, Clone)]
pub(crate) enum NodeEvent {
    /// The handshake succeeded (the cookie matched).
    Authenticated,
    /// The session exchanged its actors and groups: messages may flow.
    Ready {
        /// The session's local node id.
        node_id: u64,
    },
    /// The session closed (any reason, including a failed handshake).
    Disconnected {
        /// The session's local node id.
        node_id: u64,
    },
}

struct Subscriber<F>(F);

impl<F: Fn(NodeEvent) + Send + 'static> NodeEventSubscription for Subscriber<F> {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        (self.0)(NodeEvent::Disconnected { node_id: ses.node_id });
    }

    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {
        (self.0)(NodeEvent::Authenticated);
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        (self.0)(NodeEvent::Ready { node_id: ses.node_id });
    }
}

/// Starts a node server listening ONLY on `listen` (never `[::]`), in isolated mode, and
/// subscribes `on_event` to its session events. Plain TCP; for a manager that may use TLS see
/// [`start_server`].
pub(crate) async fn start(
    node_name: String,
    cookie: String,
    listen: SocketAddr,
    on_event: impl Fn(NodeEvent) + Send + 'static,
) -> Result<ActorRef<NodeServerMessage>, String> {
    // ractor_cluster's listener fails in the background; check the address first so a busy
    // or foreign address is a clear error at start.
    std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    spawn(node_name, cookie, listen, None, on_event).await
}

/// A manager's node server on `listen`: as [`start`] without TLS; with TLS, ractor_cluster's
/// own listener (which would run each TLS accept inline, without a timeout) is bound to an
/// ephemeral loopback port, TLS-only, and the returned [`AcceptTask`] accepts on `listen`,
/// each handshake bounded (`tls.rs`). Stop the task with the node.
pub(crate) async fn start_server(
    node_name: String,
    cookie: String,
    listen: SocketAddr,
    tls: Option<&ServerTls>,
    on_event: impl Fn(NodeEvent) + Send + 'static,
) -> Result<(ActorRef<NodeServerMessage>, Option<AcceptTask>), String> {
    let Some(tls) = tls else {
        return Ok((start(node_name, cookie, listen, on_event).await?, None));
    };
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let internal = SocketAddr::from(([127, 0, 0, 1], 0));
    let node = spawn(node_name, cookie, internal, Some(tls), on_event).await?;
    match AcceptTask::spawn(listener, tls.clone(), node.clone()) {
        Ok(task) => Ok((node, Some(task))),
        Err(e) => {
            node.stop(None);
            Err(e)
        }
    }
}

async fn spawn(
    node_name: String,
    cookie: String,
    listen: SocketAddr,
    tls: Option<&ServerTls>,
    on_event: impl Fn(NodeEvent) + Send + 'static,
) -> Result<ActorRef<NodeServerMessage>, String> {
    let encryption = tls.map(|t| IncomingEncryptionMode::Tls(t.acceptor().clone()));
    let server = NodeServer::new(
        listen.port(),
        cookie,
        node_name,
        listen.ip().to_string(),
        encryption,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip());
    let (node, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| format!("cannot start the cluster node: {e}"))?;
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "taskflow".into(),
        subscription: Box::new(Subscriber(on_event)),
    })
    .map_err(|e| format!("cannot subscribe to cluster events: {e}"))?;
    Ok(node)
}

/// Connects to a peer, over TLS if `tls` is given; the session is usable after
/// [`NodeEvent::Ready`]. The [`Probe`] tells, if the session then closes before it is
/// authenticated, whether TLS was the reason.
pub(crate) async fn connect_tls(
    node: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&ClientTls>,
) -> Result<Probe, ConnectFail> {
    super::tls::connect(node, addr, tls).await
}

/// Connects to a peer over plain TCP; the session is usable after [`NodeEvent::Ready`].
#[cfg(any(test, feature = "test-util"))]
pub(crate) async fn connect(node: &ActorRef<NodeServerMessage>, addr: &str) -> Result<(), String> {
    ractor_cluster::client_connect(node, addr).await.map_err(|e| match e {
        ractor_cluster::ClientConnectErr::Socket(e) => format!("cannot connect to {addr}: {e}"),
        other => format!("cannot connect to {addr}: {other}"),
    })
}

/// The remote members of a process group whose actor name is `name`, newest session first.
pub(crate) fn remote_members(group: &str, name: Option<&str>) -> Vec<ractor::ActorCell> {
    let mut cells: Vec<_> = ractor::pg::get_members(&group.to_owned())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .filter(|c| name.is_none_or(|n| c.get_name().as_deref() == Some(n)))
        .collect();
    cells.sort_by_key(|c| std::cmp::Reverse(c.get_id().node()));
    cells
}
