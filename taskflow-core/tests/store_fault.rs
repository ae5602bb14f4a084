//! Fault points of the store (`taskflow_core::store::testing`, feature `test-util`): a process
//! killed between the log writer's `write` and its `fdatasync` leaves a tail that is only in
//! the page cache. The next open must make it durable (fsync the segment and its directory)
//! before it serves, replicates or builds on it: otherwise a power loss after the restart
//! takes back events that the restarted store already acknowledged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskflow_core::store::{Store, StoreOptions, testing};

const CHILD_ENV: &str = "TASKFLOW_STORE_FAULT_CHILD_DIR";

fn payload(seq: u64) -> Vec<u8> {
    format!("event {seq:010} payload-ffffffffffffffffffffffffffffffffffffffff").into_bytes()
}

/// The child: 50 durable events, then 10 more whose write is followed by SIGKILL before the
/// fdatasync.
fn child_main(dir: &str) {
    let (store, _) = Store::open(dir, StoreOptions::for_test()).unwrap();
    store.append((1..=50).map(|s| (s, payload(s))).collect()).unwrap();
    assert!(store.wait_durable(50, Duration::from_secs(30)).unwrap());
    testing::kill_after_next_write();
    store.append((51..=60).map(|s| (s, payload(s))).collect()).unwrap();
    // The writer kills the process; this wait never returns normally.
    let _ = store.wait_durable(60, Duration::from_secs(30));
    unreachable!("the fault point did not kill the process");
}

#[test]
fn records_found_at_open_are_fsynced_before_they_count_as_durable() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_main(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["records_found_at_open_are_fsynced_before_they_count_as_durable", "--exact"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child was not killed by the fault point within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by the fault point: {status}");

    // The tail 51..=60 reached the page cache only. The restarted store finds it...
    testing::record_syncs();
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    let synced = testing::synced();
    assert_eq!(rec.next_seq, 61, "the written tail is found");
    assert_eq!(store.durable_seq(), 60, "and counts as durable");
    // ...and made it durable before saying so: the segment holding it and its directory.
    let seg = store.segments().last().unwrap().path.clone();
    assert!(synced.contains(&seg), "{} was not fsynced at open: {synced:?}", seg.display());
    let log_dir = dir.path().join("log");
    assert!(synced.contains(&log_dir), "log/ was not fsynced at open: {synced:?}");
    store.close().unwrap();
}
