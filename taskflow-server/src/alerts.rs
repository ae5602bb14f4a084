//! Alerts to webhooks (`--alert-webhook URL`, repeatable; `proto-docs/alerts.md`): a JSON
//! POST when a shard or a task fails, the day stalls (an operator is needed), an executor is
//! lost, a task or the day is predicted to end after its deadline, or a deadline passes.
//!
//! The watchers follow the open day through a [`ManagerHandle`] (across cutovers, as the
//! console's hub does) and decide with the pure `derive::Rules`; each webhook has its own
//! bounded queue and worker (`deliver`), so a slow or dead receiver never slows the manager
//! or another receiver: a full queue drops the alert and counts it. Deliveries, failures and
//! drops are in `/metrics`. On exit, queued alerts get a bounded grace to go.

mod deliver;
mod derive;
mod hmac;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskflow_core::model::{BusinessDate, TaskId};
use taskflow_core::{Board, DayOutcome, ManagerHandle, Notice, Topic, wall};

pub use deliver::{AlertStats, Webhook};

/// The `X-Taskflow-Signature` value of an alert `body` under `key`: `sha256=` and the
/// HMAC-SHA256 in lower-case hex (what a receiver compares).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac::hmac_sha256_hex(key, body))
}
use derive::{Alert, Rules};

/// How alerts are sent.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Where (empty: no alerts).
    pub webhooks: Vec<Webhook>,
    /// The HMAC-SHA256 key of the `X-Taskflow-Signature` header, if any.
    pub secret: Option<Vec<u8>>,
    /// Alerts queued per webhook before new ones are dropped. Default 1,000.
    pub queue: usize,
    /// One POST's bound. Default 5 s.
    pub timeout: Duration,
    /// Retries after a failed POST. Default 3.
    pub retries: u32,
    /// The wait before the first retry, doubled for each next one. Default 1 s.
    pub backoff: Duration,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            webhooks: Vec::new(),
            secret: None,
            queue: 1000,
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

/// The running alerts: watchers, queues and counters.
pub struct Alerts {
    stats: Arc<AlertStats>,
    sink: Arc<Sink>,
    queues: Vec<deliver::Queue>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

/// What the watchers send through: the queues' senders and the last stall alerted.
struct Sink {
    senders: Vec<tokio::sync::mpsc::Sender<Arc<str>>>,
    stats: Arc<AlertStats>,
    /// The (date, board seq) of the last stall alerted, so that a stall is alerted once.
    stalled: Mutex<Option<(BusinessDate, u64)>>,
    /// Whether a drop was logged already (the counter has the rest).
    drop_logged: std::sync::atomic::AtomicBool,
}

impl Sink {
    fn send(&self, alert: &Alert) {
        tracing::info!(kind = ?alert.kind, id = %alert.id, "alert: {}", alert.message);
        let body: Arc<str> = match serde_json::to_string(alert) {
            Ok(b) => b.into(),
            Err(e) => {
                tracing::error!(%e, "an alert does not serialize");
                return;
            }
        };
        for tx in &self.senders {
            if tx.try_send(body.clone()).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.drop_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "an alert was dropped: a webhook's queue is full (its receiver is slow or \
                         down); further drops are counted in /metrics only"
                    );
                }
            }
        }
    }

    fn stalled(&self, board: &Board) {
        {
            let mut last = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
            if *last == Some((board.date, board.seq)) {
                return;
            }
            *last = Some((board.date, board.seq));
        }
        let waiting: Vec<TaskId> =
            board.tasks.iter().filter(|t| !t.status.is_done()).map(|t| t.id.clone()).collect();
        self.send(&Rules::new(board.date).on_stalled(board.seq, &waiting, wall::now()));
    }
}

impl Alerts {
    /// Starts the watchers on `manager` and a worker per webhook (none without webhooks).
    /// Tasks already failed when it starts (e.g. before a restart) are alerted at once.
    pub async fn start(manager: &ManagerHandle, opts: AlertOptions) -> Alerts {
        let stats = Arc::new(AlertStats::default());
        let how = deliver::Delivery {
            secret: opts.secret.map(Arc::from),
            timeout: opts.timeout,
            retries: opts.retries,
            backoff: opts.backoff,
        };
        let queues: Vec<deliver::Queue> = opts
            .webhooks
            .into_iter()
            .map(|hook| deliver::start(hook, opts.queue, how.clone(), stats.clone()))
            .collect();
        let sink = Arc::new(Sink {
            senders: queues.iter().map(|q| q.tx.clone()).collect(),
            stats: stats.clone(),
            stalled: Mutex::new(None),
            drop_logged: Default::default(),
        });
        let watchers = if queues.is_empty() {
            Vec::new()
        } else {
            // Subscribed before the board is read: no notice after it is missed.
            let first = manager.subscribe(vec![Topic::Day]).await.ok();
            vec![
                tokio::spawn(watch_notices(manager.clone(), sink.clone(), first)),
                tokio::spawn(watch_stalls(manager.clone(), sink.clone())),
            ]
        };
        Alerts { stats, sink, queues, watchers }
    }

    /// The counters (for `/metrics`).
    pub fn stats(&self) -> Arc<AlertStats> {
        self.stats.clone()
    }

    /// Alerts that the day stalled at `board` (once per stall; what a headless run calls
    /// when it ends on a stall, before it exits).
    pub fn day_stalled(&self, board: &Board) {
        if !self.queues.is_empty() {
            self.sink.stalled(board);
        }
    }

    /// Stops the watchers and gives the queued alerts up to `grace` to go.
    pub async fn shutdown(self, grace: Duration) {
        for w in &self.watchers {
            w.abort();
        }
        drop(self.sink);
        let mut workers = Vec::with_capacity(self.queues.len());
        for q in self.queues {
            drop(q.tx);
            workers.push(q.worker);
        }
        let all = futures_join(workers);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "queued alerts not delivered within the grace at exit");
        }
    }
}

/// Waits for every worker (each ends once its queue is closed and empty).
async fn futures_join(workers: Vec<tokio::task::JoinHandle<()>>) {
    for w in workers {
        let _ = w.await;
    }
}

/// Failures and lost executors, from the notices of the open day; follows cutovers. Each
/// day starts from its board: tasks failed already are alerted once.
async fn watch_notices(
    manager: ManagerHandle,
    sink: Arc<Sink>,
    mut first: Option<taskflow_core::Subscription>,
) {
    let mut days = manager.day_changes();
    loop {
        days.borrow_and_update();
        let sub = match first.take() {
            Some(s) => Ok(s),
            None => manager.subscribe(vec![Topic::Day]).await,
        };
        if let (Ok(mut sub), Ok(board)) = (sub, manager.board().await) {
            let mut rules = Rules::new(board.date);
            for alert in rules.on_board(&board, wall::now()) {
                sink.send(&alert);
            }
            let mut wake = rules.next_deadline(&board);
            loop {
                // The next deadline not yet missed is one timer (no polling).
                let delay = wake
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(wall::real_delay_until);
                let n = tokio::select! {
                    n = sub.next() => match n { Some(n) => Some(n), None => break },
                    () = sleep_or_never(delay) => None,
                };
                let board_now = match &n {
                    Some(Notice::Event { seq, .. } | Notice::TaskStatus { seq, .. })
                        if *seq <= board.seq =>
                    {
                        continue;
                    }
                    // A new forecast, or a deadline's instant: read the board again.
                    Some(Notice::Forecast { .. }) | None => manager.board().await.ok(),
                    Some(_) => None,
                };
                if let Some(n) = &n {
                    for alert in rules.on_notice(n, wall::now()) {
                        sink.send(&alert);
                    }
                }
                if let Some(b) = board_now {
                    for alert in rules.on_schedule(&b, wall::now()) {
                        sink.send(&alert);
                    }
                    wake = rules.next_deadline(&b);
                }
            }
            tracing::debug!(date = %rules.date(), "alerts: the day's notices ended");
        }
        // The day's manager stopped: at a cutover the handle follows the next day.
        if days.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps `delay`, or for ever without one.
async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Stalls of the open day, once each; follows cutovers.
async fn watch_stalls(manager: ManagerHandle, sink: Arc<Sink>) {
    let mut days = manager.day_changes();
    loop {
        days.borrow_and_update();
        match manager.wait_until_done(Duration::from_secs(3600)).await {
            Ok(DayOutcome::Stalled(board)) => {
                sink.stalled(&board);
                // Until something changes (a new event, or the next day), it is the same stall.
                let Ok(mut sub) = manager.subscribe(vec![Topic::Day]).await else {
                    if days.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                if manager.board().await.is_ok_and(|b| b.seq == board.seq && b.date == board.date) {
                    tokio::select! {
                        _ = sub.next() => {}
                        r = days.changed() => if r.is_err() { return },
                    }
                }
            }
            Ok(DayOutcome::Completed(_)) => {
                if days.changed().await.is_err() {
                    return;
                }
            }
            // The bound passed, or the day's manager stopped (a cutover under way, or the
            // runtime stopping): wait for the next day, or look again a second later.
            Err(_) => {
                tokio::select! {
                    r = days.changed() => if r.is_err() { return },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
