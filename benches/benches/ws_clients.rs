//! Issue 5's benchmark: 50 WebSocket clients on the real server while the runtime does
//! ≥ 10,000 shard transitions/s. Every client must end with the exact final board, and the
//! p99 change-to-client latency must be ≤ 50 ms.
//!
//! Run: `cargo bench -p taskflow-benches --bench ws_clients` (release).
//!
//! Setup, all in one process: [`Runtime::start`] on a temp dir (real journal, group commit +
//! fdatasync, default `JournalOptions`) and `taskflow_server::serve` on `127.0.0.1:0`. The flow
//! is a manual `start` task (one shard) and `TF_TASKS` (default 4) auto tasks depending on it,
//! each with `TF_SHARDS` (default 25,000) one-step no-op shards. `TF_CLIENTS` (default 50)
//! clients connect with tokio-tungstenite and receive their snapshot; then `start` is executed
//! over HTTP (with the token) and the day runs to its end.
//!
//! **Transitions/s**: the bench's own subscription to the runtime counts the durable `shard`
//! events (register → pending → running → succeeded …; step checkpoints are counted apart)
//! between the first and the last event after `execute`, by their server-side timestamps.
//!
//! **Change-to-client latency**, per (client, event): from the event's server-side time — its
//! `at_ms`, stamped by the manager when it *recorded* the event, before the event is durable —
//! to the instant the client *received* (before parsing) the first frame whose `seq` watermark
//! covers the event. So it includes the group commit's fdatasync, the hub's coalescing, the
//! board it takes, serialisation, the socket and the client's own scheduling. Both ends read
//! the same wall clock (`SystemTime`, one process); `at_ms` is whole milliseconds (truncated),
//! so each sample overstates the latency by up to 1 ms, never understates it. Every event of
//! the run is a sample for every client (checkpoints included: the watermark covers them too).
//!
//! **Exact final board**: each client folds the frames (snapshot, `task` rows, `day`) into a
//! board as the console does; at the end every client's board, `seq` included, must equal
//! `GET /api/days/current`.
//!
//! Settings from the environment: `TF_CLIENTS`, `TF_TASKS`, `TF_SHARDS`, `TF_SLOTS` (slots of
//! the one executor, default 128), `TF_WORKERS` (tokio workers, default 2 = the machine's
//! vCPUs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::Value;
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::state::EventKind;
use taskflow_core::{DayOutcome, JournalOptions, Notice, Runtime, RuntimeOptions, Topic};
use taskflow_server::{AppState, Auth, ConsoleOptions, behavior_steps};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use taskflow_benches::{CALENDAR, DISTRIBUTORS, PRODUCTS};

const TOKEN: &str = "bench-token-0123456789";
const LIMIT: Duration = Duration::from_secs(600);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn flow(tasks: usize, shards: u32) -> Arc<Flow> {
    let mut text = String::from(
        "[flow]\nname = \"bench\"\ntime_zone = \"Asia/Shanghai\"\n\n[[task]]\nid = \"start\"\n\
         name = \"start\"\nlevel = \"system\"\nbehavior = \"noop\"\ntrigger = \"manual\"\n\n",
    );
    for i in 0..tasks {
        text.push_str(&format!(
            "[[task]]\nid = \"work{i}\"\nname = \"work {i}\"\nlevel = \"system\"\n\
             behavior = \"noop\"\ndepends_on = [\"start\"]\nshard_by = \"behavior\"\n\
             params = {{ shards = \"{shards}\" }}\n\n"
        ));
    }
    Arc::new(Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid bench flow"))
}

/// Wall-clock now in ms since the epoch, with µs resolution.
fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64() * 1e3
}

/// What one client saw: its folded board and, per frame that moved its watermark, the seq and
/// when it arrived.
#[derive(Default)]
struct ClientLog {
    board: Option<Value>,
    seq: u64,
    marks: Vec<(u64, f64)>,
    frames: u64,
    snapshots: u64,
}

impl ClientLog {
    fn apply(&mut self, f: &Value, at: f64) {
        let seq = f["seq"].as_u64();
        match f["type"].as_str().unwrap_or("") {
            "snapshot" => {
                self.board = Some(f["board"].clone());
                self.snapshots += 1;
                self.seq = 0;
            }
            "task" => {
                let tasks = self.board.as_mut().and_then(|b| b["tasks"].as_array_mut());
                if let Some(row) =
                    tasks.and_then(|t| t.iter_mut().find(|t| t["id"] == f["task"]["id"]))
                {
                    *row = f["task"].clone();
                }
            }
            "day" => {
                if let Some(b) = self.board.as_mut() {
                    b["closed"] = f["closed"].clone();
                }
            }
            _ => {}
        }
        if let Some(s) = seq.filter(|s| *s > self.seq) {
            self.seq = s;
            self.marks.push((s, at));
            if let Some(b) = self.board.as_mut() {
                b["seq"] = s.into();
            }
        }
    }
}

/// One client: connects, reports its first snapshot on `ready`, then folds every frame until
/// its watermark reaches `until` (sent once the day is done) or the socket closes.
async fn client(
    url: String,
    ready: tokio::sync::mpsc::Sender<()>,
    mut until: tokio::sync::watch::Receiver<Option<u64>>,
) -> ClientLog {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("WebSocket connects");
    let mut log = ClientLog::default();
    let mut ready = Some(ready);
    loop {
        if until.borrow().is_some_and(|u| log.seq >= u) {
            break;
        }
        tokio::select! {
            m = ws.next() => {
                let at = now_ms();
                let Some(Ok(m)) = m else { break };
                let Message::Text(t) = m else { continue };
                let f: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                log.frames += 1;
                log.apply(&f, at);
                if f["type"] == "snapshot"
                    && let Some(r) = ready.take()
                {
                    let _ = r.send(()).await;
                }
            }
            _ = until.changed() => {}
        }
    }
    log
}

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, body.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run() {
    let clients: usize = env_num("TF_CLIENTS", 50);
    let tasks: usize = env_num("TF_TASKS", 4);
    let shards: u32 = env_num("TF_SHARDS", 25_000);
    let slots: u32 = env_num("TF_SLOTS", 128);
    let flow = flow(tasks, shards);
    let dir = tempfile::tempdir().expect("temp dir");
    // The built-in `noop` splits into `params.shards` shards.
    let registry = BehaviorRegistry::with_builtins();
    let behaviors: Vec<String> = registry.names().into_iter().map(str::to_owned).collect();
    let steps = behavior_steps(&registry);
    let opts = RuntimeOptions {
        data_dir: dir.path().to_path_buf(),
        date: Some(BusinessDate::from_ymd(2026, 11, 24).expect("valid date")),
        executors: 1,
        slots_per_executor: slots,
        journal: JournalOptions::default(),
        // The bench's own subscription must not lag: it is the record of event times.
        subscriber_buffer: 1 << 22,
        ..RuntimeOptions::default()
    };
    let log_lines_per_shard = opts.log_lines_per_shard;
    let (runtime, manager) = Runtime::start(flow.clone(), registry, opts).await.expect("starts");

    let auth = Auth { token: TOKEN.into(), principal: "bench".into(), protect_viewing: false };
    let options = ConsoleOptions {
        auth,
        behaviors,
        data_dir: dir.path().to_path_buf(),
        log_lines_per_shard,
        steps,
        alerts: None,
    };
    let state = AppState::start(manager.clone(), options).await.expect("console starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(taskflow_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    // The record of every event's server-side time, from before anything runs.
    let mut sub = manager.subscribe(vec![Topic::Day]).await.expect("subscribe");
    let recorder = tokio::spawn(async move {
        let mut events: Vec<(u64, i64, bool)> = Vec::new();
        let mut lagged = false;
        while let Some(n) = sub.next().await {
            match n {
                Notice::Event { seq, at_ms, kind } => {
                    let shard = matches!(kind, EventKind::Shard { .. });
                    let closed = matches!(kind, EventKind::DayClosed);
                    events.push((seq, at_ms, shard));
                    if closed {
                        break;
                    }
                }
                Notice::Lagged { .. } => lagged = true,
                _ => {}
            }
        }
        (events, lagged)
    });

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(clients);
    let (until_tx, until_rx) = tokio::sync::watch::channel(None);
    let url = format!("ws://{addr}/ws");
    let handles: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(url.clone(), ready_tx.clone(), until_rx.clone())))
        .collect();
    for _ in 0..clients {
        ready_rx.recv().await.expect("every client gets its snapshot");
    }
    println!(
        "{clients} clients connected; {tasks} tasks × {shards} no-op shards, 1 executor × \
         {slots} slots"
    );

    // Only the day's work is measured: the events after the board every client started from.
    let base_seq = manager.board().await.expect("board").seq;
    let t0 = Instant::now();
    let (code, body) = http(addr, "POST", "/api/days/current/tasks/start/execute").await;
    assert_eq!(code, 200, "execute start: {body}");
    let outcome = manager.wait_until_done(LIMIT).await.expect("the day settles");
    let elapsed = t0.elapsed();
    let DayOutcome::Completed(done) = outcome else { panic!("the day did not complete") };
    let final_seq = done.seq;
    until_tx.send_replace(Some(final_seq));
    let mut logs = Vec::new();
    for h in handles {
        logs.push(tokio::time::timeout(LIMIT, h).await.expect("clients finish").expect("client"));
    }
    let (code, body) = http(addr, "GET", "/api/days/current").await;
    assert_eq!(code, 200, "{body}");
    let board: Value = serde_json::from_str(&body).expect("board JSON");
    assert_eq!(board["seq"].as_u64(), Some(final_seq), "the API's board is the final one");
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.seq, final_seq, "client {i} ends at the final seq");
        assert_eq!(l.board.as_ref(), Some(&board), "client {i}'s board equals the API's");
    }
    println!("every client ended with the exact final board (seq {final_seq})");

    let (events, lagged) = recorder.await.expect("recorder");
    assert!(!lagged, "the bench's event record lagged: enlarge subscriber_buffer");
    let events: Vec<_> = events.into_iter().filter(|e| e.0 > base_seq).collect();
    let first = events.first().map_or(0, |e| e.1);
    let last = events.last().map_or(0, |e| e.1);
    let span_s = ((last - first) as f64 / 1e3).max(1e-3);
    let transitions = events.iter().filter(|e| e.2).count();
    println!(
        "day: {} events ({transitions} shard transitions) in {:.2} s by their timestamps \
         ({:.2} s wall, execute → done) = {:.0} transitions/s, {:.0} events/s",
        events.len(),
        span_s,
        elapsed.as_secs_f64(),
        transitions as f64 / span_s,
        events.len() as f64 / span_s
    );

    // Per (client, event): first watermark ≥ its seq.
    let at: BTreeMap<u64, i64> = events.iter().map(|e| (e.0, e.1)).collect();
    let mut lat: Vec<f64> = Vec::with_capacity(events.len() * clients);
    let (mut frames, mut snapshots, mut marks) = (0u64, 0u64, 0usize);
    for l in &logs {
        frames += l.frames;
        snapshots += l.snapshots;
        marks += l.marks.len();
        let mut m = l.marks.iter().peekable();
        for (&seq, &at_ms) in &at {
            while m.peek().is_some_and(|(s, _)| *s < seq) {
                m.next();
            }
            let Some((_, recv)) = m.peek() else { break };
            lat.push(recv - at_ms as f64);
        }
    }
    lat.sort_by(f64::total_cmp);
    let p99 = percentile(&lat, 0.99);
    println!(
        "change-to-client latency over {} samples ({clients} clients × {} events): p50 {:.1} ms, \
         p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 ≤ 50 ms: {})",
        lat.len(),
        at.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        p99,
        lat.last().copied().unwrap_or(f64::NAN),
        if p99 <= 50.0 { "met" } else { "MISSED" }
    );
    println!(
        "frames per client: {:.0} ({:.0} watermark moves, {:.1} snapshots incl. the first)",
        frames as f64 / clients as f64,
        marks as f64 / clients as f64,
        snapshots as f64 / clients as f64
    );
    assert!(transitions as f64 / span_s >= 10_000.0, "below 10,000 transitions/s");

    let _ = stop.send(());
    let _ = served.await;
    runtime.shutdown().await.expect("shutdown");
}

fn main() {
    let workers: usize = env_num("TF_WORKERS", 2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}
