//! `GET /metrics`: Prometheus text format, written by hand (a dozen families do not need a
//! metrics library). Gauges come from the hub's last board, so scraping never asks the manager
//! for a board; the store counters come from the runtime's stats.
//!
//! Not exported yet, because the runtime does not measure them: dispatch latency and fsync
//! latency histograms (`taskflow_store_fsyncs_total` counts fsyncs instead).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use taskflow_core::SlotView;
use taskflow_core::state::{ShardStatus, TaskStatus};

use super::AppState;
use super::dto::{shard_status_name, task_status_name};
use super::error::ApiError;

const TASK_STATUSES: [TaskStatus; 13] = [
    TaskStatus::Unregistered,
    TaskStatus::NotApplicable,
    TaskStatus::Registered,
    TaskStatus::Pending,
    TaskStatus::Running,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Skipped,
    TaskStatus::Stopping,
    TaskStatus::Stopped,
    TaskStatus::RollingBack,
    TaskStatus::RolledBack,
    TaskStatus::Unconfirmed,
];

pub(crate) async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.auth().viewer(&headers, None)?;
    let stats = app.manager().stats().await?;
    let board = app.hub().board();
    let mut out = String::with_capacity(4096);
    let w = &mut out;

    family(w, "taskflow_day_seq", "gauge", "The last event sequence number the hub has seen.");
    let _ = writeln!(w, "taskflow_day_seq {}", board.seq);
    family(
        w,
        "taskflow_day_info",
        "gauge",
        "The open business day (label date, YYYY-MM-DD); always 1.",
    );
    let _ = writeln!(w, "taskflow_day_info{{date=\"{}\"}} 1", board.date);
    family(w, "taskflow_day_closed", "gauge", "1 once the business day is closed.");
    let _ = writeln!(w, "taskflow_day_closed {}", u8::from(board.closed));

    family(w, "taskflow_tasks", "gauge", "Tasks of the day by status.");
    for s in TASK_STATUSES {
        let n = board.tasks.iter().filter(|t| t.status == s).count();
        let _ = writeln!(w, "taskflow_tasks{{status=\"{}\"}} {n}", task_status_name(s));
    }
    family(w, "taskflow_shards", "gauge", "Shards of the day by status.");
    for s in ShardStatus::ALL {
        let n: u64 = board.tasks.iter().map(|t| u64::from(t.counts.get(s))).sum();
        let _ = writeln!(w, "taskflow_shards{{status=\"{}\"}} {n}", shard_status_name(s));
    }
    family(w, "taskflow_shard_attempts_total", "counter", "Shard dispatches of the day.");
    let attempts: u64 = board.tasks.iter().map(|t| t.attempts).sum();
    let _ = writeln!(w, "taskflow_shard_attempts_total {attempts}");

    family(w, "taskflow_executors", "gauge", "Executors by state.");
    for state in ["up", "draining", "lost"] {
        let n = if state == "up" { board.executors.len() } else { 0 };
        let _ = writeln!(w, "taskflow_executors{{state=\"{state}\"}} {n}");
    }
    family(w, "taskflow_executor_slots", "gauge", "Executor slots by state.");
    let slots = board.executors.iter().flat_map(|e| &e.slots);
    let (mut idle, mut busy, mut abandoned) = (0, 0, 0);
    for s in slots {
        match s {
            SlotView::Idle => idle += 1,
            SlotView::Busy(_) => busy += 1,
            SlotView::Abandoned(_) => abandoned += 1,
        }
    }
    let _ = writeln!(w, "taskflow_executor_slots{{state=\"idle\"}} {idle}");
    let _ = writeln!(w, "taskflow_executor_slots{{state=\"busy\"}} {busy}");
    let _ = writeln!(w, "taskflow_executor_slots{{state=\"abandoned\"}} {abandoned}");

    family(w, "taskflow_store_fsyncs_total", "counter", "fdatasync calls of the day's log.");
    let _ = writeln!(w, "taskflow_store_fsyncs_total {}", stats.log.fsyncs);
    family(w, "taskflow_store_events_total", "counter", "Events made durable since start.");
    let _ = writeln!(w, "taskflow_store_events_total {}", stats.log.events);
    family(w, "taskflow_store_bytes_total", "counter", "Bytes written to the log since start.");
    let _ = writeln!(w, "taskflow_store_bytes_total {}", stats.log.bytes);
    family(w, "taskflow_store_batches_total", "counter", "Group-commit batches since start.");
    let _ = writeln!(w, "taskflow_store_batches_total {}", stats.log.batches);

    family(w, "taskflow_websocket_clients", "gauge", "Connected WebSocket clients.");
    let _ = writeln!(w, "taskflow_websocket_clients {}", app.hub().clients.load(Ordering::Relaxed));

    if let Some(alerts) = app.alerts() {
        family(
            w,
            "taskflow_alerts_total",
            "counter",
            "Alerts by outcome since start (per webhook).",
        );
        for (outcome, n) in [
            ("delivered", &alerts.delivered),
            ("failed", &alerts.failed),
            ("dropped", &alerts.dropped),
        ] {
            let _ = writeln!(
                w,
                "taskflow_alerts_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}
