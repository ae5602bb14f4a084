//! `GET /ws[?since=SEQ]`: one task per client, forwarding the hub's frames it subscribed to
//! and answering its frames (`ping`, `subscribe`, `unsubscribe`).
//!
//! The client's buffer is its cursor in the hub's bounded broadcast ring: a client that falls
//! more than that behind gets a fresh snapshot. A client whose socket accepts nothing for
//! [`WRITE_TIMEOUT`] is disconnected; either way, the hub and the manager never wait for it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use taskflow_core::model::TaskId;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::api::query_pairs;
use super::error::ApiError;
use super::hub::{ClientGuard, Frame, Hub};

/// How long one frame may wait for the client's socket before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Tasks one client may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 1000;

/// The upgrade: checks viewing rights and `since`, then hands the socket to [`client`].
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    let token = pairs.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str());
    if let Err(e) = app.auth().viewer(&headers, token) {
        return e.into_response();
    }
    let since = match pairs.iter().find(|(k, _)| k == "since") {
        None => None,
        Some((_, v)) => match v.parse::<u64>() {
            Ok(s) => Some(s),
            Err(_) => {
                return ApiError::bad_request(format!(
                    "query parameter `since` must be a sequence number, not {v:?}"
                ))
                .into_response();
            }
        },
    };
    let hub = app.hub().clone();
    ws.on_upgrade(move |socket| client(socket, hub, since, peer))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Ping,
    Subscribe { tasks: Vec<String> },
    Unsubscribe { tasks: Vec<String> },
}

async fn client(mut socket: WebSocket, hub: Arc<Hub>, since: Option<u64>, peer: SocketAddr) {
    let _guard = ClientGuard::new(&hub);
    let attached = hub.attach(since);
    let (mut rx, mut closing) = (attached.rx, attached.closing);
    let mut subs: HashSet<TaskId> = HashSet::new();
    let mut floor = 0u64; // frames at or below this seq are already in a snapshot sent
    let mut ok = true;
    for f in attached.initial {
        ok = ok && send(&mut socket, &f).await;
    }
    while ok {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(f) => {
                    if f.seq.is_some_and(|s| s <= floor) && f.task.is_none() {
                        continue;
                    }
                    if f.task.as_ref().is_some_and(|t| !subs.contains(t)) {
                        continue;
                    }
                    ok = send(&mut socket, &f).await;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(%peer, missed, "websocket client fell behind; sending a snapshot");
                    let snap = hub.snapshot();
                    floor = snap.seq.unwrap_or(0);
                    ok = send(&mut socket, &snap).await;
                }
                Err(RecvError::Closed) => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(text))) => {
                    let reply = answer(&hub, &mut subs, text.as_str());
                    ok = send(&mut socket, &reply).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    let reply = error_frame("binary frames are not understood; send JSON text");
                    ok = send(&mut socket, &reply).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // ping/pong are answered by the library
            },
            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
    for t in &subs {
        hub.unsubscribe(t);
    }
}

/// The answer to one client frame.
fn answer(hub: &Hub, subs: &mut HashSet<TaskId>, text: &str) -> Frame {
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(f) => f,
        Err(e) => {
            return error_frame(&format!(
                "cannot understand the frame ({e}); expected {{\"type\": \"ping\" | \"subscribe\" \
                 | \"unsubscribe\", ...}}"
            ));
        }
    };
    match frame {
        ClientFrame::Ping => Frame::new(None, None, &serde_json::json!({"type": "pong"})),
        ClientFrame::Subscribe { tasks } => {
            if let Some(t) = tasks.iter().find(|t| !hub.has_task(t)) {
                return error_frame(&format!("cannot subscribe: the flow has no task `{t}`"));
            }
            for t in tasks {
                let id = TaskId::new(&t);
                if subs.len() < MAX_SUBSCRIPTIONS && subs.insert(id.clone()) {
                    hub.subscribe(&id);
                }
            }
            subscribed(hub, subs)
        }
        ClientFrame::Unsubscribe { tasks } => {
            for t in tasks {
                let id = TaskId::new(&t);
                if subs.remove(&id) {
                    hub.unsubscribe(&id);
                }
            }
            subscribed(hub, subs)
        }
    }
}

fn subscribed(hub: &Hub, subs: &HashSet<TaskId>) -> Frame {
    let mut tasks: Vec<&str> = subs.iter().map(|t| t.as_str()).collect();
    tasks.sort_unstable();
    let seq = hub.seq();
    Frame::new(None, None, &serde_json::json!({"type": "subscribed", "tasks": tasks, "seq": seq}))
}

fn error_frame(message: &str) -> Frame {
    Frame::new(None, None, &serde_json::json!({"type": "error", "message": message}))
}

/// Sends one frame; false when the client is gone or did not take it in time.
async fn send(socket: &mut WebSocket, f: &Frame) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(f.text.clone()))).await,
        Ok(Ok(()))
    )
}
