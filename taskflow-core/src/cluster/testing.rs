//! Test hook (feature `test-util`): a peer that joins a manager's cluster with the right cookie
//! and sends it raw bytes — garbage, envelopes of unknown versions, oversize messages — over
//! a real ractor_cluster session, to prove that the manager rejects them clearly and lives on.
//!
//! It is the smallest honest surface: the same node setup and addressing an executor uses
//! (so the bytes travel exactly as an executor's would), with no encoding of its own.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use ractor_cluster::NodeServerMessage;
use tokio::sync::mpsc;

use super::manager::{MANAGER_GROUP, MANAGER_INBOX};
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
