//! The JSON API over real HTTP against the real server and runtime: the board, actions (401
//! without a token, 409 with the state machine's reason, 200 when legal), bad input as JSON
//! 4xx, logs, audit, metrics and token-protected viewing.

mod common;

use common::{DATE, TOKEN, start, wait_task};
use taskflow_core::state::TaskStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_actions_and_errors_over_http() {
    let s = start(false, "").await;
    // Registration happens on an event after start: wait for it rather than race it.
    wait_task(&s.manager, "day_init", TaskStatus::Registered).await;

    // The board: 17 tasks, day_init manual and waiting for the operator.
    let (code, board) = s.get("/api/days/current").await;
    assert_eq!(code, 200, "{board}");
    assert_eq!(board["date"], DATE);
    assert_eq!(board["flow"], "fund-clearing");
    assert_eq!(board["tasks"].as_array().unwrap().len(), 17);
    let init = &board["tasks"][0];
    assert_eq!(init["id"], "day_init");
    assert_eq!(init["status"], "registered");
    assert_eq!(init["trigger"], "manual");
    assert_eq!(init["level"], "system");
    assert_eq!(init["priority"], 0);
    assert_eq!(init["shards"]["total"], 1);
    assert_eq!(init["shards"]["registered"], 1);
    assert_eq!(
        init["allowed_actions"],
        serde_json::json!(["execute", "stop", "skip", "hold", "force_start"])
    );
    let (code, same) = s.get(&format!("/api/days/{DATE}")).await;
    assert_eq!((code, &same["date"]), (200, &board["date"]));

    // Actions need the token.
    let execute = "/api/days/current/tasks/day_init/execute";
    let (code, err) = s.post(execute, None, "").await;
    assert_eq!((code, err["error"].as_str()), (401, Some("unauthorized")), "{err}");
    let (code, err) = s.post(execute, Some("wrong"), "").await;
    assert_eq!((code, err["error"].as_str()), (401, Some("unauthorized")), "{err}");

    // A legal action: 200 with the durable seq; the task runs and succeeds.
    let (code, ok) = s.post(execute, Some(TOKEN), r#"{"reason": "open the day"}"#).await;
    assert_eq!(code, 200, "{ok}");
    let seq = ok["seq"].as_u64().unwrap();
    assert!(seq > board["seq"].as_u64().unwrap());
    wait_task(&s.manager, "day_init", TaskStatus::Succeeded).await;

    // Illegal actions: 409 with the state machine's reason.
    let (code, err) = s.post("/api/days/current/tasks/day_init/retry", Some(TOKEN), "").await;
    assert_eq!((code, err["error"].as_str()), (409, Some("nothing_eligible")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("succeeded"), "{err}");
    let (code, err) =
        s.post("/api/days/current/tasks/day_init/shards/0/retry", Some(TOKEN), "").await;
    assert_eq!((code, err["error"].as_str()), (409, Some("illegal_transition")), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("cannot retry a shard that is succeeded"),
        "{err}"
    );

    // The task's shards, filtered and paged.
    let (code, page) = s.get("/api/days/current/tasks/day_init?status=succeeded&limit=10").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["total"], 1);
    assert_eq!(page["shards"][0]["status"], "succeeded");
    assert_eq!(page["shards"][0]["allowed_actions"], serde_json::json!(["rollback"]));
    // Step names come from the behavior's `steps()`: a succeeded shard did every step.
    let shard = &page["shards"][0];
    assert!(shard["steps"].as_u64().is_some_and(|n| n > 0), "{shard}");
    assert_eq!(shard["step"], shard["steps"], "{shard}");
    assert!(shard["step_name"].is_string(), "{shard}");
    assert_eq!(page["task"]["status"], "succeeded");
    let (_, none) = s.get("/api/days/current/tasks/day_init?status=failed").await;
    assert_eq!((none["total"].as_u64(), none["shards"].as_array().unwrap().len()), (Some(0), 0));

    // Logs of a shard.
    let (code, logs) = s.get("/api/days/current/tasks/day_init/shards/0/logs").await;
    assert_eq!(code, 200, "{logs}");
    assert!(logs["lines"].is_array() && logs["truncated"] == false, "{logs}");

    // Bad input: JSON 4xx naming the problem, never a panic.
    for (method, path, body, want, needle) in [
        ("GET", "/api/days/2026-13-40", "", 400, "2026-13-40"),
        ("GET", "/api/days/yesterday", "", 400, "yesterday"),
        ("GET", "/api/days/2026-09-29", "", 404, "2026-09-29"),
        ("GET", "/api/days/current/tasks/nope", "", 404, "nope"),
        ("GET", "/api/days/current/tasks/day_init?status=bogus", "", 400, "bogus"),
        ("GET", "/api/days/current/tasks/day_init?limit=0", "", 400, "limit"),
        ("GET", "/api/days/current/tasks/day_init?offset=-1", "", 400, "offset"),
        ("GET", "/api/days/current/tasks/day_init/shards/x/logs", "", 400, "\"x\""),
        ("GET", "/api/days/current/tasks/day_init/shards/7/logs", "", 404, "no shard 7"),
        ("GET", "/api/audit?since_seq=abc", "", 400, "since_seq"),
        ("GET", "/api/nothing/here", "", 404, "/api/nothing/here"),
        ("POST", "/api/days/current/tasks/day_init/frobnicate", "", 400, "frobnicate"),
        ("POST", "/api/days/current/tasks/day_init/shards/abc/retry", "", 400, "abc"),
        ("POST", "/api/days/current/tasks/day_init/shards/9/retry", "", 404, "no shard 9"),
        ("POST", "/api/days/current/tasks/nope/retry", "", 404, "nope"),
        ("POST", "/api/days/current/tasks/day_init/retry", "{not json", 400, "JSON"),
        ("POST", "/api/days/current/tasks/day_init/retry", r#"{"why": 1}"#, 400, "why"),
        ("POST", "/api/days/1999-01-01/tasks/day_init/retry", "", 404, "1999-01-01"),
    ] {
        let (code, err) = common::request(s.addr, method, path, Some(TOKEN), body).await;
        assert_eq!(code, want, "{method} {path}: {err}");
        assert!(err["error"].is_string(), "{method} {path}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(needle), "{method} {path}: {message:?} lacks {needle:?}");
    }

    // The audit log: who, what, from where, why.
    let (code, audit) = s.get("/api/audit").await;
    assert_eq!(code, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let first = entries.iter().find(|e| e["seq"] == seq).expect("the execute is audited");
    assert_eq!(first["actor"], "alice");
    assert_eq!(first["action"], "execute");
    assert_eq!(first["task"], "day_init");
    assert_eq!(first["from"], "127.0.0.1");
    assert_eq!(first["reason"], "open the day");
    let (_, later) = s.get(&format!("/api/audit?since_seq={seq}")).await;
    assert!(later["entries"].as_array().unwrap().iter().all(|e| e["seq"].as_u64() > Some(seq)));

    // Executors and health.
    let (code, ex) = s.get("/api/executors").await;
    assert_eq!(code, 200, "{ex}");
    assert_eq!(ex["executors"][0]["state"], "up");
    assert_eq!(ex["executors"][0]["slots"], 2);
    let (code, health) = s.get("/api/health").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));

    // Metrics: Prometheus text with every family.
    let (code, text) = s.get_text("/metrics").await;
    assert_eq!(code, 200);
    for family in [
        "taskflow_tasks{status=\"succeeded\"}",
        "taskflow_shards{status=\"running\"}",
        "taskflow_executors{state=\"up\"} 1",
        "taskflow_executor_slots{state=\"busy\"}",
        "taskflow_store_fsyncs_total ",
        "taskflow_store_events_total ",
        "taskflow_websocket_clients 0",
        "# TYPE taskflow_tasks gauge",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }

    // The console and its assets are embedded.
    let (_, head, page) = common::raw(s.addr, "GET", "/", None, "").await;
    assert!(head.contains("text/html") && page.contains("/assets/console.js"));
    let (code, head, _) = common::raw(s.addr, "GET", "/assets/vendor/dagre.min.js", None, "").await;
    assert!(code == 200 && head.contains("text/javascript"), "{head}");
    let (code, _, _) = common::raw(s.addr, "GET", "/assets/nope.js", None, "").await;
    assert_eq!(code, 404);

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_viewing_needs_the_token() {
    let s = start(true, "").await;
    let (code, err) = s.get("/api/days/current").await;
    assert_eq!((code, err["error"].as_str()), (401, Some("unauthorized")), "{err}");
    let (code, _) = s.get_with("/api/days/current", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let (code, _) = s.get_text("/metrics").await;
    assert_eq!(code, 401);
    // The page itself loads (it asks for the token); the WebSocket needs `?token=`.
    let (code, _, _) = common::raw(s.addr, "GET", "/", None, "").await;
    assert_eq!(code, 200);
    let refused = tokio_tungstenite::connect_async(s.ws_url("")).await;
    assert!(refused.is_err(), "an unauthenticated WebSocket was accepted");
    let mut ws = common::ws_connect(&s.ws_url(&format!("?token={TOKEN}"))).await;
    assert_eq!(common::ws_next(&mut ws).await["type"], "snapshot");
    drop(ws);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_free_and_force_start_over_http() {
    let s = start(false, "").await;
    wait_task(&s.manager, "day_init", TaskStatus::Registered).await;
    let (_, board) = s.get("/api/days/current").await;
    // The second task in topological order waits for `day_init`, unregistered.
    let x = board["tasks"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(board["tasks"][1]["status"], "unregistered", "{board}");
    let allowed = &board["tasks"][1]["allowed_actions"];
    assert_eq!(allowed, &serde_json::json!(["hold", "force_start"]), "{board}");
    let task_url = format!("/api/days/current/tasks/{x}");

    let (code, ok) = s.post(&format!("{task_url}/hold"), Some(TOKEN), "").await;
    assert_eq!(code, 200, "{ok}");
    let (code, err) = s.post(&format!("{task_url}/hold"), Some(TOKEN), "").await;
    assert_eq!((code, err["error"].as_str()), (409, Some("already_held")), "{err}");
    assert_eq!(err["message"], format!("task `{x}` is already held by alice"));

    let (code, err) = s.post(&format!("{task_url}/force_start"), Some(TOKEN), "").await;
    assert_eq!((code, err["error"].as_str()), (400, Some("reason_required")), "{err}");
    let (code, ok) = s
        .post(&format!("{task_url}/force_start"), Some(TOKEN), r#"{"reason": "feed is late"}"#)
        .await;
    assert_eq!(code, 200, "{ok}");
    // Registered and readied by the force-start, but held: nothing of it runs.
    wait_task(&s.manager, &x, TaskStatus::Pending).await;
    let (_, task) = s.get(&task_url).await;
    assert_eq!(task["task"]["held_by"], "alice", "{task}");
    assert_eq!(task["task"]["forced"], true, "{task}");
    assert!(task["task"]["note"].as_str().unwrap().starts_with("held by alice"), "{task}");
    assert_eq!(task["task"]["shards"]["running"], 0, "{task}");
    let allowed = task["task"]["allowed_actions"].as_array().unwrap();
    assert!(allowed.contains(&"free".into()) && !allowed.contains(&"hold".into()), "{task}");

    let (code, ok) = s.post(&format!("{task_url}/free"), Some(TOKEN), "").await;
    assert_eq!(code, 200, "{ok}");
    wait_task(&s.manager, &x, TaskStatus::Succeeded).await;
    let (_, init) = s.get("/api/days/current/tasks/day_init").await;
    assert_eq!(init["task"]["status"], "registered", "day_init still waits: {init}");

    // Audited, each with its reason.
    let (_, audit) = s.get("/api/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["hold", "force_start", "free"] {
        assert!(actions.contains(&a), "{a} in {audit}");
    }
    let (code, err) = s.post(&format!("{task_url}/pause"), Some(TOKEN), "").await;
    assert_eq!(code, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("hold, free, force_start"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_over_http() {
    let s = start(false, "").await;
    wait_task(&s.manager, "day_init", TaskStatus::Registered).await;
    let (_, board) = s.get("/api/days/current").await;
    // `day_init` is manual: an operator; the next task waits for it.
    let init = &board["tasks"][0];
    assert_eq!(init["waiting_for"], serde_json::json!({"kind": "operator"}), "{board}");
    let x = board["tasks"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        board["tasks"][1]["waiting_for"],
        serde_json::json!({"kind": "dependency", "task": "day_init", "date": DATE}),
        "{board}"
    );
    let (_, task) = s.get("/api/days/current/tasks/day_init").await;
    assert_eq!(task["shards"][0]["waiting_for"], serde_json::json!({"kind": "operator"}), "{task}");

    // A hold is named first.
    let (code, ok) = s.post(&format!("/api/days/current/tasks/{x}/hold"), Some(TOKEN), "").await;
    assert_eq!(code, 200, "{ok}");
    let (_, task) = s.get(&format!("/api/days/current/tasks/{x}")).await;
    assert_eq!(task["task"]["waiting_for"], serde_json::json!({"kind": "held", "by": "alice"}));

    // Once the day is done nothing waits.
    let (code, ok) = s.post(&format!("/api/days/current/tasks/{x}/free"), Some(TOKEN), "").await;
    assert_eq!(code, 200, "{ok}");
    let (code, ok) = s
        .post("/api/days/current/tasks/day_init/execute", Some(TOKEN), r#"{"reason": "go"}"#)
        .await;
    assert_eq!(code, 200, "{ok}");
    wait_task(&s.manager, "day_close", TaskStatus::Succeeded).await;
    let (_, board) = s.get("/api/days/current").await;
    for t in board["tasks"].as_array().unwrap() {
        assert_eq!(t["waiting_for"], serde_json::Value::Null, "{t}");
    }
    s.stop().await;
}

/// Polls the forecast until one was computed (the manager predicts off its thread after a
/// change; there is no notice for it), bounded by `WAIT`.
async fn computed_forecast(s: &common::Server) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (code, f) = s.get("/api/days/current/forecast").await;
        assert_eq!(code, 200, "{f}");
        if !f["computed_at"].is_null() {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no forecast within {:?}: {f}",
            common::WAIT
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_of_a_running_day_with_a_deadline_at_risk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let s = common::start_in(dir, DATE, false, "").await;
    wait_task(&s.manager, "day_init", TaskStatus::Registered).await;
    let f = computed_forecast(&s).await;
    assert_eq!(f["date"], DATE);
    let tasks = f["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 17, "{f}");
    let by_id =
        |id: &str| tasks.iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("{id}: {f}"));
    // The example's deadlines: export by 23:00 on T, the day by 07:00 on T+1 (Shanghai). The
    // test runs long after 2026-09-30, so every predicted end is past them: at risk.
    let export = by_id("export_confirmations");
    assert_eq!(export["deadline"], "2026-09-30T15:00:00.000Z", "{export}");
    assert_eq!(export["at_risk"], true, "{export}");
    assert_eq!(f["deadline"], "2026-09-30T23:00:00.000Z", "{f}");
    assert_eq!(f["at_risk"], true, "{f}");
    // Nothing ran yet, no history: predicted, low confidence; the manual day_init is assumed
    // executed at once.
    let init = by_id("day_init");
    assert_eq!(init["note"], "manual: assumed executed when runnable", "{init}");
    assert_eq!(
        (init["actual"].as_bool(), init["low_confidence"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(by_id("nav_calculation")["deadline"].is_null());
    // Every task is predicted to start no earlier than its dependencies end, and the day to end
    // with its last task.
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
            .unwrap()
    };
    let computed = time(&f["computed_at"]);
    let mut last = computed;
    for t in tasks {
        let (start, end) = (time(&t["predicted_start"]), time(&t["predicted_end"]));
        assert!(computed <= start && start <= end, "{t}");
        for d in t["depends_on"].as_array().unwrap() {
            assert!(time(&by_id(d.as_str().unwrap())["predicted_end"]) <= start, "{t}");
        }
        last = last.max(end);
    }
    assert_eq!(time(&f["predicted_end"]), last, "{f}");
    // The board carries the same lines.
    let (_, board) = s.get("/api/days/current").await;
    assert_eq!(board["deadline"], f["deadline"]);
    assert_eq!(board["at_risk"], true, "{board}");
    assert!(board["forecast_at"].is_string() && board["predicted_end"].is_string(), "{board}");
    let row = board["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "export_confirmations");
    let row = row.unwrap();
    assert_eq!((&row["deadline"], &row["at_risk"]), (&export["deadline"], &export["at_risk"]));
    assert!(row["predicted_end"].is_string(), "{row}");
    // A date without a day: 404, as for the board.
    let (code, err) = s.get("/api/days/2026-09-29/forecast").await;
    assert_eq!(code, 404, "{err}");

    // Run the day to its end: the closed day is folded into the duration history beside the
    // days (written before the shutdown returns).
    let (code, ok) = s
        .post("/api/days/current/tasks/day_init/execute", Some(TOKEN), r#"{"reason": "go"}"#)
        .await;
    assert_eq!(code, 200, "{ok}");
    wait_task(&s.manager, "day_close", TaskStatus::Succeeded).await;
    let _dir = s.stop_keeping_dir().await;
    let h = taskflow_core::store::history::read(&data).unwrap();
    assert_eq!(h.days, vec![DATE.to_string()]);
    let confirm = &h.tasks["confirm_trades"];
    assert!(!confirm.samples.is_empty() && !confirm.keys.is_empty(), "{confirm:?}");
    assert!(data.join("history").join("durations").is_file());
}
