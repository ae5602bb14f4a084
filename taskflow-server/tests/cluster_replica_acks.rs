//! `--replica-acks 2` with three executor processes keeping replicas (`--data`): a WebSocket
//! client and the shared file ledger watch part of the example day, the manager is killed
//! with SIGKILL and its data directory deleted, and `--recover-from-replicas
//! --replica-quorum 2` (K + Q = 4 > N = 3) rebuilds the day. Nothing a client saw is lost:
//! every event up to the last watermark the client received is in the recovered log, byte
//! for byte as the dead manager had it, the day completes and the ledger equals a
//! fault-free run's (no posting reversed or made twice).

#[path = "cluster_common/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod http;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::*;

const TOKEN: &str = "cluster-replica-acks-token";
/// The evening of the day: every `at` trigger has passed; no cutover within the test.
const CLOCK: &str = "2026-09-30T23:00:00+08:00";
const STEP_DELAY: (&str, &str) = ("TASKFLOW_FUND_STEP_DELAY", "100ms");

fn manager(c: &Cluster, data: &Path, env: &[(&str, &str)], extra: &[&str]) -> Proc {
    let mut args = vec![
        "manager",
        "--cluster",
        &c.addr,
        "--date",
        DATE,
        "--lease",
        "2000",
        "--data",
        data.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--replica-acks",
        "2",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args, env)
}

/// The console's address, once the manager printed it.
fn console(m: &Proc, within: Duration) -> SocketAddr {
    assert!(m.wait_for("console: http://", within), "{}", m.output());
    m.output()
        .lines()
        .find_map(|l| l.strip_prefix("console: http://"))
        .and_then(|rest| rest.split('/').next())
        .expect("the console URL")
        .parse()
        .expect("host:port")
}

fn executor(c: &Cluster, name: &str, env: &[(&str, &str)]) -> Proc {
    let data = c.dir.path().join(name);
    Proc::spawn(
        &[
            "executor",
            "--manager",
            &c.addr,
            "--name",
            name,
            "--slots",
            "2",
            "--data",
            data.to_str().unwrap(),
        ],
        env,
    )
}

/// What the client saw: the highest frame watermark and the tasks it saw succeed.
#[derive(Default)]
struct Seen {
    seq: u64,
    succeeded: BTreeSet<String>,
}

impl Seen {
    fn apply(&mut self, f: &serde_json::Value) {
        if let Some(s) = f["seq"].as_u64() {
            self.seq = self.seq.max(s);
        }
        if f["type"] == "task" && f["task"]["status"] == "succeeded" {
            self.succeeded.insert(f["task"]["id"].as_str().unwrap_or_default().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replica_acks_a_recovery_from_replicas_loses_nothing_a_client_saw() {
    let c = Cluster::new();
    let data = c.data();
    let ledger = c.dir.path().join("ledger");
    let env = [
        ("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap()),
        ("TASKFLOW_TEST_CLOCK", CLOCK),
        STEP_DELAY,
        ("NO_COLOR", "1"),
    ];
    let expected = reference_ledger(c.dir.path());

    let m1 = manager(&c, &data, &env, &[]);
    assert!(m1.wait_for("accepting executors", Duration::from_secs(60)), "{}", m1.output());
    assert!(
        m1.output().contains("--replica-acks 2: every dispatch, reply and console update waits"),
        "the start-up line states the guarantee:\n{}",
        m1.output()
    );
    // The console's first board waits for two replicas too: the executors join first.
    let execs: Vec<Proc> = ["e1", "e2", "e3"].iter().map(|n| executor(&c, n, &env)).collect();
    for e in &execs {
        assert!(e.wait_for("joined the manager", Duration::from_secs(30)), "{}", e.output());
    }
    let addr = console(&m1, Duration::from_secs(60));
    let mut ws = http::ws_connect(&format!("ws://{addr}/ws?token={TOKEN}")).await;
    let path = format!("/api/days/{DATE}/tasks/day_init/execute");
    let (status, body) = http::request(addr, "POST", &path, Some(TOKEN), "{}").await;
    assert_eq!(status, 200, "{body}\n{}", m1.output());
    let executed_at = body["seq"].as_u64().expect("the action's seq") as usize;

    // Watch part of the day, then kill the manager right after a frame arrived.
    let mut seen = Seen::default();
    tokio::time::timeout(Duration::from_secs(180), async {
        while seen.succeeded.len() < 5 {
            let f = http::ws_next(&mut ws).await;
            seen.apply(&f);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the day made no progress:\n{}", m1.output()));
    m1.signal("-9");
    let mut m1 = m1;
    assert!(m1.wait_exit(Duration::from_secs(10)).is_some(), "the manager died");
    drop(ws);
    // Keep what the dead manager had (to compare with), then lose its data directory.
    let old = c.dir.path().join("old-data");
    let cp = std::process::Command::new("cp")
        .args(["-a", data.to_str().unwrap(), old.to_str().unwrap()])
        .status()
        .expect("cp");
    assert!(cp.success());
    std::fs::remove_dir_all(&data).unwrap();
    let old_events = store_events(&old);
    assert!(seen.seq > 0 && seen.seq <= old_events.len() as u64, "watermark {}", seen.seq);

    let m2 = manager(
        &c,
        &data,
        &env,
        &["--recover-from-replicas", "--replica-quorum", "2", "--replica-wait", "30000"],
    );
    assert!(
        m2.wait_for("recovered day", Duration::from_secs(60)),
        "recovery:\n{}\n{}",
        m2.output(),
        execs.iter().map(Proc::output).collect::<Vec<_>>().join("\n---\n")
    );
    let addr2 = console(&m2, Duration::from_secs(60));
    let mut ws = http::ws_connect(&format!("ws://{addr2}/ws?token={TOKEN}")).await;
    let mut view = http::View::default();
    tokio::time::timeout(Duration::from_secs(240), async {
        while !view.closed() {
            let f = http::ws_next(&mut ws).await;
            view.apply(&f);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the recovered day did not close:\n{}", m2.output()));
    let board = view.board.clone().expect("a board");
    for t in board["tasks"].as_array().unwrap() {
        let s = t["status"].as_str().unwrap_or_default();
        assert!(["succeeded", "not_applicable", "skipped"].contains(&s), "{t}");
    }
    drop(ws);
    m2.signal("-TERM");
    let mut m2 = m2;
    assert!(m2.wait_exit(Duration::from_secs(30)).is_some(), "{}", m2.output());
    drop(execs);

    // Every event up to what the client saw is in the recovered log, identical.
    let recovered = store_events(&data);
    let w = seen.seq as usize;
    assert!(recovered.len() >= w, "the recovered log ends at {} < watermark {w}", recovered.len());
    for (i, (a, b)) in old_events.iter().zip(&recovered).take(w).enumerate() {
        assert_eq!(a, b, "event {} differs after the recovery", i + 1);
    }
    // Among them the operator's execute, whose answer the test got, and the successes the
    // client saw.
    assert!(executed_at <= w, "the execute's answer ({executed_at}) is under the watermark {w}");
    assert!(
        recovered[executed_at - 1].to_string().contains("execute"),
        "{}",
        recovered[executed_at - 1]
    );
    for t in &seen.succeeded {
        assert!(
            recovered.iter().take(w).any(|e| e.to_string().contains(&format!("\"{t}\""))),
            "{t}, seen succeeded, is not in the recovered prefix"
        );
    }
    // The shared ledger equals a fault-free run's: no posting lost, reversed or made twice.
    if let Err(e) = check_ledger_exact(&ledger, &expected) {
        panic!("{e}\n{}", m2.output());
    }
}
