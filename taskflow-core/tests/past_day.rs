//! A past day read without write access (`PastDay`, `PastLog`) equals what the journal
//! recovers, and leaves every byte of its directory as it was.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use taskflow_core::model::{BusinessDate, ShardKey, TaskId};
use taskflow_core::state::{EventKind, ShardEvent, TaskStatus};
use taskflow_core::{Journal, JournalError, JournalOptions, PastDay, PastLog, TaskGraph};

const WAIT: Duration = Duration::from_secs(20);

fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 9, 30).unwrap()
}

fn graph() -> Arc<TaskGraph> {
    Arc::new(TaskGraph::build([(TaskId::new("import"), vec![])]).unwrap())
}

/// A closed day: `import` with 1,500 shards run to success, snapshots every 1,000 events.
fn build(dir: &Path) -> taskflow_core::state::DayState {
    let (mut j, _) = Journal::open(dir, date(), graph(), JournalOptions::for_test()).unwrap();
    j.record(EventKind::DayOpened { date: date(), flow_digest: "test".into() }, 1).unwrap();
    let shards = (0..1500).map(|i| ShardKey::new(format!("P{i:06}"))).collect();
    let task = TaskId::new("import");
    j.record(
        EventKind::TaskRegistered {
            task: task.clone(),
            items: vec![],
            shards,
            covered_dates: vec![],
        },
        2,
    )
    .unwrap();
    j.record(EventKind::TaskReady { task: task.clone() }, 3).unwrap();
    for shard in 0..1500 {
        let dispatch =
            ShardEvent::Dispatch { attempt: 1, executor: "local-1".into(), epoch: 0, instance: 0 };
        j.record(EventKind::Shard { task: task.clone(), shard, event: dispatch }, 4).unwrap();
        j.record(EventKind::Shard { task: task.clone(), shard, event: ShardEvent::Succeed }, 5)
            .unwrap();
        if shard % 100 == 0 {
            j.flush().unwrap();
        }
    }
    j.flush().unwrap();
    let live = j.state().clone();
    j.close(WAIT).unwrap();
    live
}

fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.insert(p.clone(), Vec::new());
            out.extend(contents(&p));
        } else {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn a_past_day_equals_the_recovered_journal_and_reading_it_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = build(dir.path());
    let before = contents(dir.path());

    let past = PastDay::open(dir.path(), date(), graph()).unwrap();
    assert!(*past.state() == live, "the past day differs from the live state");
    assert_eq!(past.state().task_status_of("import"), Some(TaskStatus::Succeeded));
    assert!(past.snapshot_seq().is_some(), "read from a snapshot plus the log after it");
    assert!(past.torn_tail().is_none());

    let log = PastLog::read(dir.path()).unwrap();
    let seqs: Vec<u64> = log.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.last().copied(), Some(live.last_seq()));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
    assert_eq!(log.next_seq, live.last_seq() + 1);

    assert!(contents(dir.path()) == before, "reading a past day changed its directory");
}

#[test]
fn a_past_day_of_another_date_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let other = BusinessDate::from_ymd(2026, 10, 9).unwrap();
    match PastDay::open(dir.path(), other, graph()) {
        Err(JournalError::DateMismatch { expected, found, .. }) => {
            assert_eq!((expected, found), (other, date()));
        }
        other => panic!("expected DateMismatch, got {other:?}"),
    }
}
