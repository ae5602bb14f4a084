//! The notifier: the event bus (pub/sub over topics) and the capped store of shard logs.
//!
//! ```text
//! Manager ──► Notifier   (child of the manager; publishes only what is durable)
//! SlotRunner ─┘          (progress and log lines: not events, never fsync'd)
//! ```
//!
//! **Invariant: a slow subscriber never slows the manager.** Each subscriber has a bounded
//! buffer filled with `try_send`; when it is full the notice is dropped, the subscriber is
//! marked lagging and, as soon as there is room again, receives [`Notice::Lagged`] and must
//! resync from a board snapshot (every event notice carries its seq, so it can tell which
//! deltas the snapshot already covers).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::behavior::LogLine;
use crate::model::TaskId;
use crate::view::{Notice, Subscription, Topic};

/// Messages of the notifier.
pub(crate) enum NotifierMsg {
    /// A new subscriber for these topics.
    Subscribe {
        /// The topics (an empty list means every topic).
        topics: Vec<Topic>,
        /// Gets the subscription.
        reply: RpcReplyPort<Subscription>,
    },
    /// Durable notices from the manager, in seq order.
    Publish(Vec<Notice>),
    /// A progress or log notice from a running shard (counted in `inflight`).
    ShardNote(Notice),
    /// The kept log lines of one shard, oldest first.
    Logs {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// Gets the lines.
        reply: RpcReplyPort<Vec<LogLine>>,
    },
}

impl ractor::Message for NotifierMsg {}

/// Arguments of the notifier.
pub(crate) struct NotifierArgs {
    /// Per-subscriber buffer, in notices.
    pub(crate) buffer: usize,
    /// Log lines kept per shard.
    pub(crate) lines_per_shard: usize,
    /// Log lines kept in all.
    pub(crate) lines_total: usize,
    /// Progress/log notices sent but not handled yet; senders drop beyond a cap.
    pub(crate) inflight: Arc<AtomicUsize>,
}

pub(crate) struct Notifier;

pub(crate) struct NotifierState {
    args: NotifierArgs,
    subscribers: Vec<Subscriber>,
    logs: HashMap<(TaskId, u32), VecDeque<LogLine>>,
    order: VecDeque<(TaskId, u32)>,
}

struct Subscriber {
    topics: Vec<Topic>,
    tx: mpsc::Sender<Notice>,
    /// Notices dropped since the last one delivered.
    missed: u64,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        Ok(NotifierState {
            args,
            subscribers: Vec::new(),
            logs: HashMap::new(),
            order: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::Subscribe { topics, reply } => {
                let (tx, rx) = mpsc::channel(state.args.buffer.max(1));
                state.subscribers.push(Subscriber { topics, tx, missed: 0 });
                let _ = reply.send(Subscription::new(rx));
            }
            NotifierMsg::Publish(notices) => {
                for n in notices {
                    state.deliver(&n);
                }
            }
            NotifierMsg::ShardNote(n) => {
                state.args.inflight.fetch_sub(1, Ordering::Relaxed);
                if let Notice::Log { task, shard, line, .. } = &n {
                    state.keep_log(task.clone(), *shard, line.clone());
                }
                state.deliver(&n);
            }
            NotifierMsg::Logs { task, shard, reply } => {
                let lines = state
                    .logs
                    .get(&(task, shard))
                    .map(|q| q.iter().cloned().collect())
                    .unwrap_or_default();
                let _ = reply.send(lines);
            }
        }
        Ok(())
    }
}

impl NotifierState {
    fn deliver(&mut self, notice: &Notice) {
        self.subscribers.retain_mut(|s| {
            if !s.topics.is_empty() && !s.topics.iter().any(|t| notice.is_on(t)) {
                return true;
            }
            if s.missed > 0 {
                match s.tx.try_send(Notice::Lagged { missed: s.missed }) {
                    Ok(()) => s.missed = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.missed += 1;
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            match s.tx.try_send(notice.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.missed += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn keep_log(&mut self, task: TaskId, shard: u32, line: LogLine) {
        let key = (task, shard);
        let q = self.logs.entry(key.clone()).or_default();
        q.push_back(line);
        if q.len() > self.args.lines_per_shard {
            q.pop_front();
        }
        self.order.push_back(key);
        // The global cap: evict from the shards that logged earliest. An entry whose line was
        // already evicted by the per-shard cap evicts that shard's next-oldest line instead,
        // which keeps both caps without tracking every line twice.
        while self.order.len() > self.args.lines_total {
            if let Some(k) = self.order.pop_front()
                && let Some(q) = self.logs.get_mut(&k)
            {
                q.pop_front();
                if q.is_empty() {
                    self.logs.remove(&k);
                }
            }
        }
    }
}
