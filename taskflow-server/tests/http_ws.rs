//! The WebSocket against the real server and runtime: a snapshot then deltas reach the exact
//! final board; reconnecting with `since` resumes with deltas to the exact state; malformed
//! frames get error frames on a connection that stays up; a client that never reads does not
//! stall the day.

mod common;

use common::{TOKEN, View, WAIT, start, wait_task, without_forecast, ws_connect, ws_next, ws_send};
use futures_util::SinkExt;
use taskflow_core::DayOutcome;
use taskflow_core::state::TaskStatus;
use tokio_tungstenite::tungstenite::Message;

/// Reads frames into `view` until it shows the day closed with every task done (bounded).
async fn follow_until_closed(ws: &mut common::Ws, view: &mut View) {
    tokio::time::timeout(WAIT, async {
        while !(view.closed() && all_done(view.board.as_ref().unwrap())) {
            let f = ws_next(ws).await;
            view.apply(&f);
        }
    })
    .await
    .expect("the day closes within the wait");
}

fn all_done(board: &serde_json::Value) -> bool {
    board["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| matches!(t["status"].as_str(), Some("succeeded" | "skipped" | "not_applicable")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_deltas_reach_the_final_board_and_since_resumes_exactly() {
    let s = start(false, "").await;
    let mut ws = ws_connect(&s.ws_url("")).await;
    let mut view = View::default();
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert!(first["executors"].is_array());
    view.apply(&first);
    assert_eq!(view.board.as_ref().unwrap()["tasks"][0]["status"], "registered");

    // A second client leaves early and resumes with `since` after the day is over.
    let mut early = ws_connect(&s.ws_url("")).await;
    let mut early_view = View::default();
    early_view.apply(&ws_next(&mut early).await);

    let (code, ok) =
        s.post("/api/days/current/tasks/day_init/execute", Some(TOKEN), r#"{"reason":"go"}"#).await;
    assert_eq!(code, 200, "{ok}");
    // The early client reads until it has seen day_init change, then disconnects.
    tokio::time::timeout(WAIT, async {
        loop {
            let f = ws_next(&mut early).await;
            early_view.apply(&f);
            if f["type"] == "task" && f["task"]["id"] == "day_init" {
                break;
            }
        }
    })
    .await
    .expect("a day_init delta");
    drop(early);

    follow_until_closed(&mut ws, &mut view).await;
    let outcome = s.manager.wait_until_done(WAIT).await.unwrap();
    assert!(matches!(outcome, DayOutcome::Completed(_)), "the day completes");
    let (_, api) = s.get("/api/days/current").await;
    assert!(all_done(&api), "{api}");
    assert_eq!(view.seq, api["seq"].as_u64().unwrap(), "the watermark reaches the API's seq");
    assert_eq!(
        without_forecast(view.board.as_ref().unwrap()),
        without_forecast(&api),
        "the WebSocket view equals the API's board"
    );

    // Resume from where the early client left: deltas only, ending at the exact state.
    let since = early_view.seq;
    assert!(since < api["seq"].as_u64().unwrap());
    let mut again = ws_connect(&s.ws_url(&format!("?since={since}"))).await;
    let mut frames = 0;
    tokio::time::timeout(WAIT, async {
        while early_view.seq < api["seq"].as_u64().unwrap() {
            let f = ws_next(&mut again).await;
            assert_ne!(f["type"], "snapshot", "the server still had the deltas after {since}");
            early_view.apply(&f);
            frames += 1;
        }
    })
    .await
    .expect("the resumed client catches up");
    assert!(frames > 0);
    assert_eq!(
        without_forecast(early_view.board.as_ref().unwrap()),
        without_forecast(&api),
        "resumed view equals the API's board"
    );

    // A `since` the server does not know (ahead of it) gets a snapshot of the exact state.
    let mut odd = ws_connect(&s.ws_url("?since=999999999")).await;
    let snap = ws_next(&mut odd).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(without_forecast(&snap["board"]), without_forecast(&api));
    drop((ws, again, odd));
    s.stop().await;
}

/// The next frame that answers the client, past the deltas the server pushes meanwhile (a
/// forecast re-computed after the snapshot updates task rows at any time).
async fn next_reply(ws: &mut common::Ws) -> serde_json::Value {
    loop {
        let f = ws_next(ws).await;
        if !["task", "forecast", "executors", "resources"]
            .contains(&f["type"].as_str().unwrap_or(""))
        {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_connection_stays_up() {
    let s = start(false, "").await;
    let mut ws = ws_connect(&s.ws_url("")).await;
    assert_eq!(ws_next(&mut ws).await["type"], "snapshot");
    let bad = [
        "not json",
        "{",
        "[]",
        "42",
        r#"{"type":"nope"}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","tasks":"day_init"}"#,
        r#"{"no_type":true}"#,
        r#"{"type":"subscribe","tasks":["no_such_task"]}"#,
        "",
    ];
    for i in 0..200 {
        if i % 10 == 9 {
            ws.send(Message::binary(vec![0u8, 159, 146, 150])).await.unwrap();
        } else {
            ws_send(&mut ws, bad[i % bad.len()]).await;
        }
    }
    for i in 0..200 {
        let f = next_reply(&mut ws).await;
        assert_eq!(f["type"], "error", "answer {i}: {f}");
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still up: ping, subscribe, and live deltas (task and shard frames) after an action.
    ws_send(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_reply(&mut ws).await["type"], "pong");
    ws_send(&mut ws, r#"{"type":"subscribe","tasks":["day_init"]}"#).await;
    let sub = next_reply(&mut ws).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["tasks"], serde_json::json!(["day_init"]));
    let (code, _) = s.post("/api/days/current/tasks/day_init/execute", Some(TOKEN), "").await;
    assert_eq!(code, 200);
    let (mut task_frame, mut shard_frame) = (false, false);
    tokio::time::timeout(WAIT, async {
        while !(task_frame && shard_frame) {
            let f = ws_next(&mut ws).await;
            task_frame |= f["type"] == "task" && f["task"]["id"] == "day_init";
            shard_frame |= f["type"] == "shard" && f["task_id"] == "day_init";
        }
    })
    .await
    .expect("task and shard deltas after 200 malformed frames");
    drop(ws);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_stall_the_day() {
    let s = start(false, "").await;
    // Subscribed to every task (the most traffic), then never read from again.
    let mut stuck = ws_connect(&s.ws_url("")).await;
    let (_, board) = s.get("/api/days/current").await;
    let ids: Vec<_> = board["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    let frame = serde_json::json!({"type": "subscribe", "tasks": ids});
    ws_send(&mut stuck, &frame.to_string()).await;
    let (code, _) = s.post("/api/days/current/tasks/day_init/execute", Some(TOKEN), "").await;
    assert_eq!(code, 200);
    let outcome = s.manager.wait_until_done(WAIT).await.unwrap();
    assert!(matches!(outcome, DayOutcome::Completed(_)), "the day completed: {outcome:?}");
    wait_task(&s.manager, "day_close", TaskStatus::Succeeded).await;
    // A reading client connected now reaches the final board: its snapshot, then the deltas
    // that were still on their way to the hub when it connected.
    let mut fresh = ws_connect(&s.ws_url("")).await;
    let snap = ws_next(&mut fresh).await;
    assert_eq!(snap["type"], "snapshot");
    if !all_done(&snap["board"]) {
        tokio::time::timeout(WAIT, async {
            loop {
                let f = ws_next(&mut fresh).await;
                let task = &f["task"];
                if f["type"] == "task" && task["id"] == "day_close" && task["status"] == "succeeded"
                {
                    break;
                }
            }
        })
        .await
        .expect("the reading client reaches the final board");
    }
    drop((stuck, fresh));
    s.stop().await;
}
