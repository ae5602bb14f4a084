//! `--replica-acks 1` (`RuntimeOptions::replica_acks`): a cluster manager lets no effect out —
//! no assignment, no board — until an executor's replica holds the events it depends on
//! durably; once one does, the day runs. Real stores on temp dirs, executors joined over
//! loopback in this process (`cluster::run_executor`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use taskflow_core::cluster::{ClusterListen, ExecutorConfig, Status, StatusSink, run_executor};
use taskflow_core::store::{Store, StoreOptions};
use taskflow_core::{DayOutcome, RuntimeError};

const COOKIE: &str = "replica-acks-test";

const ONE: &str = r#"
[[task]]
id = "a"
name = "a"
level = "system"
behavior = "scripted"
"#;

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

fn listen(addr: SocketAddr) -> ClusterListen {
    ClusterListen {
        tls: None,
        insecure_plain_tcp: false,
        addr,
        cookie: COOKIE.into(),
        lease: Duration::from_millis(3000),
        heartbeat: Duration::from_millis(500),
    }
}

/// A joined executor: drained (it leaves, its replica closed) by [`Joined::leave`].
struct Joined {
    drain: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Joined {
    async fn leave(self) {
        let _ = self.drain.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("the executor left in time").ok();
    }
}

/// Starts an executor joining `addr` (with a replica in `data` if given); resolves once it
/// joined.
async fn executor(
    addr: SocketAddr,
    name: &str,
    data: Option<std::path::PathBuf>,
    ledger: &Ledger,
) -> Joined {
    let (tx, mut joined) = tokio::sync::mpsc::unbounded_channel();
    let mut cfg = ExecutorConfig::new(addr.to_string(), name, COOKIE.into());
    cfg.slots = 1;
    cfg.data = data;
    cfg.status = StatusSink::new(move |s| {
        if matches!(s, Status::Joined { .. }) {
            let _ = tx.send(());
        }
    });
    let registry = registry(ledger);
    let (drain, drained) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let drain = async move {
            let _ = drained.await;
        };
        let _ = run_executor(cfg, registry, drain).await;
    });
    tokio::time::timeout(WAIT, joined.recv())
        .await
        .unwrap_or_else(|_| panic!("executor {name} did not join in time"))
        .expect("joined");
    Joined { drain, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_ack_nothing_leaves_until_a_replica_holds_it_and_then_the_day_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::default();
    let addr = free_port();
    let mut o = opts(&dir);
    o.executors = 0;
    o.cluster = Some(listen(addr));
    o.replica_acks = 1;
    let (rt, m) = start(flow(ONE), &ledger, o.clone()).await;

    // An executor without --data joins (joins are answered without replica acks) but keeps
    // no replica: the assignment of `a`, and any board, wait.
    let plain = executor(addr, "plain", None, &ledger).await;
    let board = tokio::time::timeout(Duration::from_millis(1500), m.board()).await;
    assert!(board.is_err(), "a board left before any replica acknowledged: {board:?}");
    assert!(ledger.lines().is_empty(), "a shard ran before a replica held its dispatch");

    // An executor with a replica joins: once it acknowledges, everything held leaves.
    let data = dir.path().join("exec-data");
    let keeper = executor(addr, "keeper", Some(data.clone()), &ledger).await;
    let outcome = wait_done(&m).await;
    let DayOutcome::Completed(board) = outcome else { panic!("the day did not complete") };
    assert_eq!(ledger.count("run "), 3, "the shard ran its three steps once: {:?}", ledger.lines());
    plain.leave().await;
    keeper.leave().await;
    tokio::time::timeout(WAIT, rt.shutdown()).await.expect("bounded").expect("shutdown");

    // The replica holds, durably, every event the released board reflects.
    let date_dir = data.join("replica").join(date().to_string());
    let cid = std::fs::read_dir(&date_dir)
        .expect("a replica of the day")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("STORE").exists())
        .expect("one replica directory");
    // The executor closes its replica store just after it left: wait for its lock (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    let (replica, _) = loop {
        match Store::open(&cid, StoreOptions::for_test()) {
            Err(taskflow_core::store::Error::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => break r.expect("the replica opens"),
        }
    };
    assert!(
        replica.durable_seq() >= board.seq,
        "the replica holds {} but the board showed {}",
        replica.durable_seq(),
        board.seq
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acks_without_a_cluster_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(&dir);
    o.replica_acks = 2;
    let err = taskflow_core::Runtime::start(flow(ONE), registry(&Ledger::default()), o)
        .await
        .expect_err("refused");
    assert!(matches!(err, RuntimeError::Options(_)), "{err}");
    assert!(err.to_string().contains("replica_acks = 2"), "{err}");
}
