//! taskflow-server: the thin shell around `taskflow-core` — the HTTP API, the WebSocket and
//! the embedded web console. The `taskflow` binary (`src/main.rs`) parses flags and calls
//! [`serve`] with a listener it bound; tests do the same on `127.0.0.1:0`.

pub mod alerts;
mod http;

pub use http::{AppState, Auth, ConsoleOptions, behavior_steps, generate_token, past_board, serve};
