//! Starting a ractor_cluster `NodeServer` bound to one address, and its session events.

use std::net::SocketAddr;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

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
/// subscribes `on_event` to its session events.
pub(crate) async fn start(
    node_name: String,
    cookie: String,
    listen: SocketAddr,
    on_event: impl Fn(NodeEvent) + Send + 'static,
) -> Result<ActorRef<NodeServerMessage>, String> {
    // ractor_cluster's listener fails in the background; check the address first so a busy
    // or foreign address is a clear error at start.
    std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let server = NodeServer::new(
        listen.port(),
        cookie,
        node_name,
        listen.ip().to_string(),
        None,
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

/// Connects to a peer; the session is usable after [`NodeEvent::Ready`].
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
