//! The HTTP shell: the JSON API, the WebSocket and the embedded web console on one listener.
//!
//! Routes live in one module per area: [`api`] (JSON), [`ws`] (the WebSocket, fed by the
//! [`hub`]), [`assets`] (the console), [`metrics`]. [`serve`] takes an already-bound listener
//! and a shutdown future, so tests bind `127.0.0.1:0` and hand it in.
//!
//! **Invariant: core never speaks HTTP.** Everything JSON is a DTO in [`dto`], converted from
//! the runtime's views here.

mod api;
mod assets;
mod auth;
mod dto;
mod error;
mod hub;
mod metrics;
mod past;
mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use taskflow_core::ManagerHandle;
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;

pub use auth::{Auth, generate_token};
use hub::Hub;
use past::PastDays;
pub use past::board_of as past_board;

/// What the handlers share: the manager, the flow, the auth rules and the WebSocket hub.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    manager: ManagerHandle,
    auth: Auth,
    hub: Arc<Hub>,
    behaviors: Vec<String>,
    data_dir: PathBuf,
    log_lines_per_shard: usize,
    steps: Arc<dto::Steps>,
    past: PastDays,
    alerts: Option<Arc<crate::alerts::AlertStats>>,
}

/// How the console is served, besides the listener.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The token rules.
    pub auth: Auth,
    /// The behaviors the in-process executors host (shown in the executors panel).
    pub behaviors: Vec<String>,
    /// The data directory (to tell a past day from an unknown one).
    pub data_dir: PathBuf,
    /// The runtime's per-shard log cap (a log this long was truncated).
    pub log_lines_per_shard: usize,
    /// Step names by behavior (shard rows show `step_name` and `steps`); see
    /// [`behavior_steps`]. Empty: shard rows say `null`.
    pub steps: BTreeMap<String, Vec<String>>,
    /// The alert counters `/metrics` shows, when alerts are sent.
    pub alerts: Option<Arc<crate::alerts::AlertStats>>,
}

/// Each registered behavior's step names, for [`ConsoleOptions::steps`] (builds each behavior
/// once, then releases it).
pub fn behavior_steps(registry: &BehaviorRegistry) -> BTreeMap<String, Vec<String>> {
    registry
        .names()
        .into_iter()
        .filter_map(|name| {
            let lease = registry.acquire(name).ok()?;
            Some((name.to_owned(), lease.steps().iter().map(|s| (*s).to_owned()).collect()))
        })
        .collect()
}

impl AppState {
    /// Takes the first board and starts the WebSocket hub following the day.
    pub async fn start(manager: ManagerHandle, opts: ConsoleOptions) -> anyhow::Result<AppState> {
        let steps = Arc::new(opts.steps);
        let hub = Hub::start(manager.clone(), opts.behaviors.clone(), steps.clone()).await?;
        Ok(AppState {
            inner: Arc::new(Shared {
                manager,
                auth: opts.auth,
                hub,
                behaviors: opts.behaviors,
                data_dir: opts.data_dir,
                log_lines_per_shard: opts.log_lines_per_shard,
                steps,
                past: PastDays::default(),
                alerts: opts.alerts,
            }),
        })
    }

    pub(crate) fn manager(&self) -> &ManagerHandle {
        &self.inner.manager
    }
    /// The flow of the open day (a cutover may bring a changed one).
    pub(crate) fn flow(&self) -> Arc<Flow> {
        self.inner.manager.flow()
    }
    pub(crate) fn steps(&self, task: &str) -> Option<&[String]> {
        dto::task_steps(&self.flow(), &self.inner.steps, task)
    }
    pub(crate) fn alerts(&self) -> Option<&crate::alerts::AlertStats> {
        self.inner.alerts.as_deref()
    }
    pub(crate) fn past(&self) -> &PastDays {
        &self.inner.past
    }
    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }
    pub(crate) fn behaviors(&self) -> &[String] {
        &self.inner.behaviors
    }
    /// The open day (`current`): the date of the board the hub follows, which moves at a
    /// cutover.
    pub(crate) fn date(&self) -> BusinessDate {
        self.inner.hub.date()
    }
    pub(crate) fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }
    pub(crate) fn log_lines_per_shard(&self) -> usize {
        self.inner.log_lines_per_shard
    }
}

/// Every route.
fn router(state: AppState) -> Router {
    let day = "/api/days/{date}";
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/api/health", get(api::health))
        .route("/api/days", get(api::days))
        .route(day, get(api::day))
        .route(&format!("{day}/forecast"), get(api::forecast))
        .route(&format!("{day}/tasks/{{task}}"), get(api::task))
        .route(&format!("{day}/tasks/{{task}}/{{action}}"), post(api::task_action))
        .route(&format!("{day}/tasks/{{task}}/shards/{{index}}/logs"), get(api::logs))
        .route(
            &format!("{day}/tasks/{{task}}/shards/{{index}}/{{action}}"),
            post(api::shard_action),
        )
        .route("/api/executors", get(api::executors))
        .route("/api/audit", get(api::audit))
        .route("/metrics", get(metrics::metrics))
        .route("/ws", get(ws::upgrade))
        .fallback(api::not_found)
        .with_state(state)
}

/// Serves the console on `listener` until `shutdown` completes; then WebSocket clients are
/// closed and in-flight requests finish (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let hub = state.hub().clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            hub.close_all();
        })
        .await?;
    Ok(())
}
