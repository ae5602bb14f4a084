//! The hub: one task that follows the runtime's notices and turns them into WebSocket frames,
//! serialized once and fanned out to every client.
//!
//! ```text
//! Manager ──notices──▶ Hub ──broadcast (bounded ring)──▶ one task per WebSocket client
//!            (one subscription)      └─ recent frames (for ?since=) and the current board
//! ```
//!
//! **Invariant: a slow WebSocket client never slows the manager.** The hub drains its one
//! subscription as fast as notices come and never waits for a client: frames go into a
//! `tokio::sync::broadcast` ring of fixed size, which drops the oldest frames for a receiver
//! that falls behind; that receiver then gets a fresh snapshot instead. The hub itself
//! coalesces: it drains every notice that is waiting, asks the manager for one board (released
//! when durable, so its seq is a watermark), and sends only the rows that changed, stamped with
//! that seq. A resting status (succeeded, failed, …) seen in the batch that the task already left
//! is still sent first, with its own event's seq, so no client misses it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use chrono::Utc;
use serde::Serialize;
use taskflow_core::model::TaskId;
use taskflow_core::state::{EventKind, TaskStatus};
use taskflow_core::{Board, ManagerHandle, Notice, event_task};
use tokio::sync::{broadcast, watch};

use super::dto::{
    AuditDto, BoardDto, ExecutorDto, LogLineDto, ShardDto, Steps, board_dto, executors_dto,
    is_resting, shard_dto, task_deps_done, task_status_name, task_steps,
};

/// Frames a client may fall behind by before it is resynchronised with a snapshot.
const CLIENT_BUFFER: usize = 1024;
/// Recent frames kept for clients reconnecting with `?since=`.
const REPLAY_FRAMES: usize = 8192;
/// Notices handled per batch at most (then a board is taken and frames are sent).
const MAX_BATCH: usize = 20_000;
/// Shard rows fetched per task per batch at most; beyond, the client reloads the page.
const MAX_SHARD_ROWS: usize = 2000;

/// One server → client frame, serialized once.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its seq watermark (none for `log`, `pong`, …).
    pub(crate) seq: Option<u64>,
    /// Set on `shard` and `log` frames: only clients subscribed to this task get it.
    pub(crate) task: Option<TaskId>,
    /// The JSON text.
    pub(crate) text: Utf8Bytes,
}

impl Frame {
    pub(crate) fn new(seq: Option<u64>, task: Option<TaskId>, value: &impl Serialize) -> Frame {
        let text = serde_json::to_string(value).expect("frames serialize");
        Frame { seq, task, text: text.into() }
    }
}

/// The hub's state shared with the clients and the API.
pub(crate) struct Hub {
    /// The flow of the day it follows comes from here (a cutover may change it).
    manager: ManagerHandle,
    behaviors: Vec<String>,
    steps: Arc<Steps>,
    state: Mutex<HubState>,
    tx: broadcast::Sender<Arc<Frame>>,
    /// Tasks some client subscribed to, with how many clients did.
    subs: Mutex<HashMap<TaskId, usize>>,
    /// Connected WebSocket clients (for `/metrics`).
    pub(crate) clients: AtomicUsize,
    /// Set to true when the server shuts down: every client closes its socket.
    closing: watch::Sender<bool>,
}

struct HubState {
    board: Board,
    dto: BoardDto,
    executors: Vec<ExecutorDto>,
    /// Recent global frames (task, executors, audit, day), oldest first.
    ring: VecDeque<Arc<Frame>>,
    /// Every global frame with a seq above this is in `ring`.
    ring_base: u64,
}

/// What a client starts with.
pub(crate) struct Attached {
    pub(crate) rx: broadcast::Receiver<Arc<Frame>>,
    pub(crate) initial: Vec<Arc<Frame>>,
    pub(crate) closing: watch::Receiver<bool>,
}

impl Hub {
    /// Takes the first board and subscribes; [`Hub::run`] then follows the day.
    pub(crate) async fn start(
        manager: ManagerHandle,
        behaviors: Vec<String>,
        steps: Arc<Steps>,
    ) -> anyhow::Result<Arc<Hub>> {
        // Subscribe before the board: a notice after the board's seq is then never missed.
        let sub = manager.subscribe(Vec::new()).await?;
        let board = manager.board().await?;
        let dto = board_dto(&manager.flow(), &board);
        let executors = executors_dto(&board.executors, &behaviors, Utc::now());
        let (tx, _) = broadcast::channel(CLIENT_BUFFER);
        let hub = Arc::new(Hub {
            manager: manager.clone(),
            behaviors,
            steps,
            state: Mutex::new(HubState {
                ring_base: board.seq,
                board,
                dto,
                executors,
                ring: VecDeque::new(),
            }),
            tx,
            subs: Mutex::new(HashMap::new()),
            clients: AtomicUsize::new(0),
            closing: watch::channel(false).0,
        });
        tokio::spawn(hub.clone().run(manager, sub));
        Ok(hub)
    }

    /// The board as the hub last took it (for `/metrics`, without asking the manager).
    pub(crate) fn board(&self) -> Board {
        self.lock().board.clone()
    }

    /// The seq of the hub's current board.
    pub(crate) fn seq(&self) -> u64 {
        self.lock().dto.seq
    }

    /// Tells every client to close (graceful shutdown).
    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client: its receiver and first frames — the frames after `since` if the hub
    /// still has them all, nothing if `since` is the current seq, else a snapshot.
    pub(crate) fn attach(&self, since: Option<u64>) -> Attached {
        let st = self.lock();
        let rx = self.tx.subscribe();
        let initial = match since {
            Some(s) if s == st.dto.seq => Vec::new(),
            Some(s) if s >= st.ring_base && s < st.dto.seq => {
                st.ring.iter().filter(|f| f.seq.is_some_and(|q| q > s)).cloned().collect()
            }
            _ => vec![Arc::new(snapshot(&st))],
        };
        Attached { rx, initial, closing: self.closing.subscribe() }
    }

    /// A fresh snapshot (for a client that fell behind).
    pub(crate) fn snapshot(&self) -> Arc<Frame> {
        Arc::new(snapshot(&self.lock()))
    }

    /// Counts a client's subscription to `task`.
    pub(crate) fn subscribe(&self, task: &TaskId) {
        *self.subs.lock().unwrap_or_else(|e| e.into_inner()).entry(task.clone()).or_default() += 1;
    }

    /// Drops a client's subscription to `task`.
    pub(crate) fn unsubscribe(&self, task: &TaskId) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = subs.get_mut(task) {
            *n -= 1;
            if *n == 0 {
                subs.remove(task);
            }
        }
    }

    /// Whether a task exists in the flow.
    pub(crate) fn has_task(&self, task: &str) -> bool {
        self.manager.flow().task_by_id(task).is_some()
    }

    fn subscribed(&self) -> BTreeSet<TaskId> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    async fn run(self: Arc<Self>, manager: ManagerHandle, mut sub: taskflow_core::Subscription) {
        let mut days = manager.day_changes();
        loop {
            while let Some(first) = sub.next().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match sub.try_next() {
                        Some(n) => batch.push(n),
                        None => break,
                    }
                }
                if let Err(e) = self.handle(&manager, batch).await {
                    tracing::warn!(error = %e, "websocket hub cannot read the board");
                }
            }
            // The day's manager stopped: at a cutover the runtime goes on with the next day
            // (the handle follows it) and tells `day_changes`; otherwise the runtime stopped.
            if days.changed().await.is_err() {
                break;
            }
            sub = match manager.subscribe(Vec::new()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "websocket hub cannot follow the new day");
                    break;
                }
            };
            // A board of another date: clients get a `day` frame, then a snapshot.
            if let Err(e) = self.handle(&manager, vec![Notice::Lagged { missed: 0 }]).await {
                tracing::warn!(error = %e, "websocket hub cannot read the new day's board");
            }
        }
        tracing::debug!("websocket hub: the runtime stopped");
    }

    /// The date of the board the hub follows (the open day).
    pub(crate) fn date(&self) -> taskflow_core::model::BusinessDate {
        self.lock().board.date
    }

    /// Turns one batch of notices into frames.
    async fn handle(&self, manager: &ManagerHandle, batch: Vec<Notice>) -> anyhow::Result<()> {
        let subscribed = self.subscribed();
        let mut changed = false;
        let mut lagged = false;
        let mut audits = Vec::new();
        let mut resting: Vec<(u64, TaskId, TaskStatus)> = Vec::new();
        let mut shard_rows: BTreeMap<TaskId, ShardWant> = BTreeMap::new();
        let mut logs = Vec::new();
        let mut forecast = false;
        for n in batch {
            match n {
                Notice::Event { seq, at_ms, kind } => {
                    changed = true;
                    if let Some(t) = event_task(&kind).filter(|t| subscribed.contains(*t)) {
                        let want = shard_rows.entry(t.clone()).or_default();
                        match &kind {
                            EventKind::Shard { shard, .. }
                            | EventKind::StepCheckpoint { shard, .. } => {
                                want.add(*shard);
                            }
                            EventKind::Audit(_) => {}
                            _ => want.all = true,
                        }
                    }
                    if let EventKind::Audit(record) = kind {
                        let entry = taskflow_core::state::AuditEntry { seq, at_ms, record };
                        audits.push(AuditDto::of(&entry));
                    }
                }
                Notice::TaskStatus { seq, task, status } => {
                    changed = true;
                    if is_resting(status) {
                        resting.push((seq, task, status));
                    }
                }
                // The executors panel is taken from the board again.
                Notice::ExecutorLost { .. } => changed = true,
                Notice::Progress { task, shard, .. } => {
                    if subscribed.contains(&task) {
                        shard_rows.entry(task).or_default().add(shard);
                    }
                }
                Notice::Log { task, shard, attempt, line } => {
                    if subscribed.contains(&task) {
                        logs.push(Frame::new(
                            None,
                            Some(task.clone()),
                            &LogFrame {
                                r#type: "log",
                                task_id: task.as_str(),
                                shard,
                                line: LogLineDto::of(&line, Some(attempt)),
                            },
                        ));
                    }
                }
                Notice::Forecast { .. } => {
                    changed = true;
                    forecast = true;
                }
                Notice::Lagged { missed } => {
                    // `missed: 0` is the hub's own resync after a cutover.
                    if missed > 0 {
                        tracing::warn!(
                            missed,
                            "websocket hub fell behind the runtime; resynchronising"
                        );
                    }
                    lagged = true;
                    changed = true;
                    for t in &subscribed {
                        shard_rows.entry(t.clone()).or_default().all = true;
                    }
                }
            }
        }

        let mut frames: Vec<Frame> = Vec::new();
        let mut global: Vec<Frame> = Vec::new();
        if changed || !shard_rows.is_empty() {
            let board = manager.board().await?;
            let seq = board.seq;
            let dto = board_dto(&self.manager.flow(), &board);
            let executors = executors_dto(&board.executors, &self.behaviors, Utc::now());
            let old = { self.lock().dto.clone() };
            let old_executors = { self.lock().executors.clone() };
            let new_day = old.date != dto.date;
            if new_day {
                global.push(Frame::new(
                    Some(seq),
                    None,
                    &DayFrame { r#type: "day", seq, date: &dto.date, closed: dto.closed },
                ));
            } else {
                // Resting statuses the task already left again, each with its event's seq.
                for (at, task, status) in &resting {
                    let Some(row) = dto.tasks.iter().find(|t| t.id == task.as_str()) else {
                        continue;
                    };
                    let later = resting.iter().any(|(s, t, _)| t == task && s > at);
                    if row.status != task_status_name(*status) && !later && !lagged {
                        let mut row = row.clone();
                        row.status = task_status_name(*status);
                        global.push(task_frame(*at, &row));
                    }
                }
                for a in &audits {
                    global.push(Frame::new(
                        Some(a.seq),
                        None,
                        &AuditFrame { r#type: "audit", seq: a.seq, entry: a },
                    ));
                }
                // Frames go out in seq order: the ones above carry earlier seqs.
                global.sort_by_key(|f| f.seq);
                // The rows of the batch carry no `seq` on the wire except the last frame: a
                // client's watermark then only moves once it has applied the whole batch, so
                // "after a frame with seq N the view equals the state at N" holds. (The hub
                // keeps the seq on every frame for its own filtering and replay.)
                let mut batch: Vec<serde_json::Value> = Vec::new();
                for row in &dto.tasks {
                    if old.tasks.iter().find(|t| t.id == row.id) != Some(row) {
                        batch.push(serde_json::json!({"type": "task", "task": row}));
                    }
                }
                let same = executors.len() == old_executors.len()
                    && executors.iter().zip(&old_executors).all(|(a, b)| a.same_as(b));
                if !same {
                    batch.push(serde_json::json!({"type": "executors", "executors": executors}));
                }
                if forecast || old.forecast_at != dto.forecast_at {
                    let f = crate::http::dto::forecast_dto(&board);
                    batch.push(serde_json::json!({"type": "forecast", "forecast": f}));
                }
                if old.resources != dto.resources {
                    batch
                        .push(serde_json::json!({"type": "resources", "resources": dto.resources}));
                }
                // The watermark moves even when nothing shown changed (e.g. a checkpoint); a
                // closing day is announced last, once its rows are in.
                if old.closed != dto.closed || (seq > old.seq && batch.is_empty()) {
                    batch.push(serde_json::json!(
                        {"type": "day", "date": dto.date, "closed": dto.closed}
                    ));
                }
                if let Some(last) = batch.last_mut() {
                    last["seq"] = seq.into();
                }
                global.extend(batch.iter().map(|v| Frame::new(Some(seq), None, v)));
                for (task, want) in &shard_rows {
                    frames.extend(self.shard_frames(manager, &board, seq, task, want).await);
                }
            }
            frames.extend(logs);
            let mut st = self.lock();
            for f in global {
                let f = Arc::new(f);
                st.ring.push_back(f.clone());
                let _ = self.tx.send(f);
            }
            while st.ring.len() > REPLAY_FRAMES {
                if let Some(f) = st.ring.pop_front() {
                    st.ring_base = st.ring_base.max(f.seq.unwrap_or(0));
                }
            }
            if new_day {
                st.ring.clear();
                st.ring_base = seq;
            }
            st.board = board;
            st.dto = dto;
            st.executors = executors;
            for f in frames {
                let _ = self.tx.send(Arc::new(f));
            }
            if new_day {
                let _ = self.tx.send(Arc::new(snapshot(&st)));
            }
        } else {
            for f in logs {
                let _ = self.tx.send(Arc::new(f));
            }
        }
        Ok(())
    }

    async fn shard_frames(
        &self,
        manager: &ManagerHandle,
        board: &Board,
        seq: u64,
        task: &TaskId,
        want: &ShardWant,
    ) -> Vec<Frame> {
        let deps = task_deps_done(board, task.as_str());
        let steps = task_steps(&self.manager.flow(), &self.steps, task.as_str());
        let mut rows = Vec::new();
        if want.all {
            let mut offset = 0;
            while rows.len() < MAX_SHARD_ROWS {
                match manager.shards(task.as_str(), None, offset, 500).await {
                    Ok(page) if !page.is_empty() => {
                        offset += page.len();
                        rows.extend(page);
                    }
                    _ => break,
                }
            }
        } else {
            for &i in want.shards.iter().take(MAX_SHARD_ROWS) {
                if let Ok(page) = manager.shards(task.as_str(), None, i as usize, 1).await {
                    rows.extend(page);
                }
            }
        }
        rows.iter()
            .map(|s| {
                let shard = shard_dto(s, deps, board.closed, steps);
                Frame::new(
                    Some(seq),
                    Some(task.clone()),
                    &ShardFrame { r#type: "shard", seq, task_id: task.as_str(), shard: &shard },
                )
            })
            .collect()
    }
}

/// The shard rows a batch needs for one subscribed task.
#[derive(Default)]
struct ShardWant {
    all: bool,
    shards: BTreeSet<u32>,
}

impl ShardWant {
    fn add(&mut self, shard: u32) {
        if self.shards.len() < MAX_SHARD_ROWS {
            self.shards.insert(shard);
        } else {
            self.all = true;
        }
    }
}

fn snapshot(st: &HubState) -> Frame {
    Frame::new(
        Some(st.dto.seq),
        None,
        &SnapshotFrame {
            r#type: "snapshot",
            seq: st.dto.seq,
            board: &st.dto,
            executors: &st.executors,
        },
    )
}

fn task_frame(seq: u64, row: &super::dto::TaskDto) -> Frame {
    Frame::new(Some(seq), None, &serde_json::json!({"type": "task", "seq": seq, "task": row}))
}

#[derive(Serialize)]
struct SnapshotFrame<'a> {
    r#type: &'static str,
    seq: u64,
    board: &'a BoardDto,
    executors: &'a [ExecutorDto],
}

#[derive(Serialize)]
struct ShardFrame<'a> {
    r#type: &'static str,
    seq: u64,
    task_id: &'a str,
    shard: &'a ShardDto,
}

#[derive(Serialize)]
struct AuditFrame<'a> {
    r#type: &'static str,
    seq: u64,
    entry: &'a AuditDto,
}

#[derive(Serialize)]
struct DayFrame<'a> {
    r#type: &'static str,
    seq: u64,
    date: &'a str,
    closed: bool,
}

#[derive(Serialize)]
struct LogFrame<'a> {
    r#type: &'static str,
    task_id: &'a str,
    shard: u32,
    line: LogLineDto,
}

/// Counts a connected client for as long as it lives.
pub(crate) struct ClientGuard<'a>(pub(crate) &'a Hub);

impl<'a> ClientGuard<'a> {
    pub(crate) fn new(hub: &'a Hub) -> Self {
        hub.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(hub)
    }
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
