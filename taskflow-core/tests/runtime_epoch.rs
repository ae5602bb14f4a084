//! The data directory's epoch never goes backwards: across manager restarts, across business
//! days sharing one data directory, and over a day store that carries a higher epoch of its own
//! (written by an older version, or by a recovery from replicas).

mod support;

use std::time::Duration;

use support::*;
use taskflow_core::cluster::ClusterListen;
use taskflow_core::model::BusinessDate;
use taskflow_core::store::{self, Store, StoreOptions};

const ONE: &str = r#"
[[task]]
id = "init"
name = "init"
level = "system"
behavior = "scripted"
"#;

fn listen() -> ClusterListen {
    ClusterListen {
        tls: None,
        insecure_plain_tcp: false,
        addr: "127.0.0.1:0".parse().expect("addr"),
        cookie: "epoch-test".into(),
        lease: Duration::from_millis(3000),
        heartbeat: Duration::from_millis(500),
    }
}

/// Starts a manager accepting executors for `day` on `dir`, lets it settle, shuts it down and
/// returns the epoch its day store recorded.
async fn run_once(dir: &tempfile::TempDir, day: BusinessDate) -> u64 {
    let ledger = Ledger::default();
    let mut o = opts(dir);
    o.date = Some(day);
    o.cluster = Some(listen());
    let (rt, m) = start(flow(ONE), &ledger, o.clone()).await;
    // The local executors run the day; the listener is up with the new epoch.
    wait_done(&m).await;
    tokio::time::timeout(WAIT, rt.shutdown()).await.expect("bounded").expect("shutdown");
    let (s, _) = Store::open(o.day_dir(day), StoreOptions::for_test()).expect("day store opens");
    let e = s.epoch().expect("epoch");
    s.close().expect("close");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_grows_across_restarts_and_days_of_one_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d1 = date();
    let d2 = BusinessDate::from_ymd(2026, 9, 29).expect("date");
    assert_eq!(run_once(&dir, d1).await, 1);
    assert_eq!(run_once(&dir, d1).await, 2, "a restart of the same day");
    // Another day's store is new, but its epoch continues the data directory's: an executor
    // that kept epoch 2 from the day before accepts the new manager's assignments.
    assert_eq!(run_once(&dir, d2).await, 3, "a new day in the same data directory");
    assert_eq!(store::dir_epoch(dir.path()).expect("read"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_store_with_a_higher_epoch_lifts_the_data_directory_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(&dir);
    {
        // What an older version (one epoch per day store) or a recovery from replicas leaves:
        // a day store whose epoch is above the data directory's, which has none.
        let (s, _) = Store::open(o.day_dir(date()), StoreOptions::for_test()).expect("store");
        s.set_epoch(7).expect("set");
        s.close().expect("close");
    }
    assert_eq!(run_once(&dir, date()).await, 8);
    assert_eq!(store::dir_epoch(dir.path()).expect("read"), 8);
}
