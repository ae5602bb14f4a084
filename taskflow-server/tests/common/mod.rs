//! Shared by the `http_*` tests: a real runtime on a temp dir, the real server on
//! `127.0.0.1:0`, a minimal HTTP/1.1 client and a WebSocket client. Every wait is bounded.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::model::BusinessDate;
use taskflow_core::state::TaskStatus;
use taskflow_core::{ManagerHandle, Notice, Runtime, RuntimeOptions, Topic};
use taskflow_examples::fund_clearing::{self, FundOptions};
use taskflow_server::{AppState, Auth, ConsoleOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub const DATE: &str = "2026-09-30";
pub const TOKEN: &str = "test-token-0123456789";
/// The bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub manager: ManagerHandle,
    runtime: Option<Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts a runtime on the bundled example (fast behaviors, `failures` injected) and the
/// console on `127.0.0.1:0`.
pub async fn start(protect_viewing: bool, failures: &str) -> Server {
    start_in(tempfile::tempdir().unwrap(), DATE, protect_viewing, failures).await
}

/// The bundled example's behaviors (fast, `failures` injected) in a registry.
pub fn registry(failures: &str) -> BehaviorRegistry {
    let mut registry = BehaviorRegistry::with_builtins();
    let mut fund = FundOptions::for_test();
    if !failures.is_empty() {
        fund.failures = failures.parse().unwrap();
    }
    fund_clearing::register_with(&mut registry, fund).unwrap();
    registry
}

/// As [`start`], running business date `date` in the data directory `dir`.
pub async fn start_in(
    dir: tempfile::TempDir,
    date: &str,
    protect_viewing: bool,
    failures: &str,
) -> Server {
    let flow = Arc::new(fund_clearing::flow().unwrap());
    let registry = registry(failures);
    let behaviors = registry.names().into_iter().map(str::to_owned).collect();
    let steps = taskflow_server::behavior_steps(&registry);
    let date: BusinessDate = date.parse().unwrap();
    let opts = RuntimeOptions::for_test(dir.path(), date);
    let log_lines_per_shard = opts.log_lines_per_shard;
    let (runtime, manager) = Runtime::start(flow.clone(), registry, opts).await.unwrap();
    let auth = Auth { token: TOKEN.into(), principal: "alice".into(), protect_viewing };
    let data_dir = dir.path().to_owned();
    let options =
        ConsoleOptions { auth, behaviors, data_dir, log_lines_per_shard, steps, alerts: None };
    let state = AppState::start(manager.clone(), options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(taskflow_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        manager,
        runtime: Some(runtime),
        stop: Some(stop),
        served: Some(served),
        _dir: dir,
    }
}

impl Server {
    /// Graceful shutdown: the server (closing WebSockets), then the runtime.
    pub async fn stop(self) {
        self.stop_keeping_dir().await;
    }

    /// As [`Server::stop`], handing back the data directory (removed when it is dropped).
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        let served = self.served.take().unwrap();
        tokio::time::timeout(WAIT, served).await.expect("server stops").unwrap().unwrap();
        self.runtime.take().unwrap().shutdown().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dir, dir)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        request(self.addr, "GET", path, None, "").await
    }

    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        request(self.addr, "GET", path, token, "").await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let (status, _, body) = raw(self.addr, "GET", path, None, "").await;
        (status, body)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        request(self.addr, "POST", path, token, body).await
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }
}

pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let (status, _, text) = raw(addr, method, path, token, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path} → {status}: not JSON ({e}): {text}"));
    (status, json)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): status, head, body.
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let io = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(WAIT, io).await.expect("HTTP answer in time");
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Waits until `task` reaches `status` (subscribe first, then check the board).
pub async fn wait_task(manager: &ManagerHandle, task: &str, status: TaskStatus) {
    let mut sub = manager
        .subscribe(vec![Topic::Task(taskflow_core::model::TaskId::new(task))])
        .await
        .unwrap();
    let now = manager.board().await.unwrap();
    if now.task(task).unwrap().status == status {
        return;
    }
    tokio::time::timeout(WAIT, async {
        while let Some(n) = sub.next().await {
            match n {
                Notice::TaskStatus { status: s, .. } if s == status => return,
                Notice::Lagged { .. }
                    if manager.board().await.unwrap().task(task).unwrap().status == status =>
                {
                    return;
                }
                _ => {}
            }
        }
        panic!("the runtime stopped before `{task}` became {status}");
    })
    .await
    .unwrap_or_else(|_| panic!("`{task}` did not become {status} in {WAIT:?}"));
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket connects in time")
        .expect("WebSocket connects");
    ws
}

/// The next text frame as JSON.
pub async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("the server closed the socket: {c:?}"),
            _ => {}
        }
    }
}

pub async fn ws_send(ws: &mut Ws, text: &str) {
    tokio::time::timeout(WAIT, ws.send(Message::text(text))).await.expect("send in time").unwrap();
}

/// A board without the forecast's fields: they change with each forecast, which moves no
/// seq, so the seq watermark does not cover them (`proto-docs/http-api.md`).
pub fn without_forecast(board: &Value) -> Value {
    let mut b = board.clone();
    if let Some(o) = b.as_object_mut() {
        for k in ["predicted_end", "at_risk", "forecast_at"] {
            o.remove(k);
        }
    }
    if let Some(tasks) = b["tasks"].as_array_mut() {
        for t in tasks.iter_mut().filter_map(Value::as_object_mut) {
            for k in ["predicted_start", "predicted_end", "at_risk"] {
                t.remove(k);
            }
        }
    }
    b
}

/// A client-side board kept from frames, as the console keeps it.
#[derive(Debug, Default)]
pub struct View {
    pub seq: u64,
    pub board: Option<Value>,
    pub snapshots: usize,
}

impl View {
    pub fn apply(&mut self, f: &Value) {
        let seq = f["seq"].as_u64();
        if let Some(s) = seq {
            assert!(
                f["type"] == "snapshot" || s >= self.seq || f["type"] == "audit",
                "frame seq went back: {s} after {}: {f}",
                self.seq
            );
        }
        match f["type"].as_str().unwrap() {
            "snapshot" => {
                self.board = Some(f["board"].clone());
                self.seq = seq.unwrap();
                self.snapshots += 1;
                return;
            }
            "task" => {
                let board = self.board.as_mut().expect("a snapshot before task frames");
                let tasks = board["tasks"].as_array_mut().unwrap();
                let row = tasks.iter_mut().find(|t| t["id"] == f["task"]["id"]).unwrap();
                *row = f["task"].clone();
            }
            "day" => {
                let board = self.board.as_mut().unwrap();
                board["closed"] = f["closed"].clone();
            }
            _ => {}
        }
        if let Some(s) = seq {
            self.seq = self.seq.max(s);
            if let Some(b) = self.board.as_mut() {
                b["seq"] = self.seq.into();
            }
        }
    }

    pub fn closed(&self) -> bool {
        self.board.as_ref().is_some_and(|b| b["closed"] == true)
    }
}

/// A `taskflow` process with its console, killed on drop.
pub struct Console {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (a `taskflow standalone|manager` with `--http 127.0.0.1:0`), its stdout piped,
/// and waits (bounded) for the console URL it prints.
pub fn spawn_console(mut cmd: std::process::Command) -> Console {
    use std::io::{BufRead, BufReader};
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the taskflow binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("console: http://") {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("the console URL is printed");
    Console { child, addr: addr.replace("localhost", "127.0.0.1").parse().expect("host:port") }
}
