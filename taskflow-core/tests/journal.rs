//! The day journal on a real store: recovery equals the live state, snapshots are taken off the
//! manager's path, and an event that does not apply is never logged.

use std::sync::Arc;
use std::time::Duration;

use taskflow_core::model::{BusinessDate, ShardKey, TaskId};
use taskflow_core::state::{EventKind, ShardEvent, ShardStatus, TaskStatus};
use taskflow_core::{Journal, JournalError as Error, JournalOptions, TaskGraph};

const WAIT: Duration = Duration::from_secs(20);

fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 9, 30).unwrap()
}

fn graph() -> Arc<TaskGraph> {
    Arc::new(
        TaskGraph::build([
            (TaskId::new("import"), vec![]),
            (TaskId::new("confirm"), vec![TaskId::new("import")]),
        ])
        .unwrap(),
    )
}

fn shard(task: &str, shard: u32, event: ShardEvent) -> EventKind {
    EventKind::Shard { task: TaskId::new(task), shard, event }
}

/// Opens the day, registers `import` with `n` shards and runs them all to success.
fn run_import(j: &mut Journal, n: u32) {
    j.record(EventKind::DayOpened { date: date(), flow_digest: "test".into() }, 1).unwrap();
    let shards = (0..n).map(|i| ShardKey::new(format!("P{i:06}"))).collect();
    let kind = EventKind::TaskRegistered {
        task: TaskId::new("import"),
        items: vec![],
        shards,
        covered_dates: vec![],
    };
    j.record(kind, 2).unwrap();
    j.record(EventKind::TaskReady { task: TaskId::new("import") }, 3).unwrap();
    for i in 0..n {
        let dispatch =
            ShardEvent::Dispatch { attempt: 1, executor: "local-1".into(), epoch: 0, instance: 0 };
        j.record(shard("import", i, dispatch), 4).unwrap();
        j.record(shard("import", i, ShardEvent::Succeed), 5).unwrap();
        if i % 97 == 0 {
            j.flush().unwrap();
        }
    }
    j.flush().unwrap();
}

fn wait_durable(j: &Journal) {
    let target = j.state().last_seq();
    let mut rx = j.durable();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(WAIT, rx.wait_for(|d| d.seq >= target))
            .await
            .expect("durable within the timeout")
            .expect("writer alive");
    });
}

#[test]
fn reopening_recovers_exactly_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { snapshot_every: u64::MAX, ..JournalOptions::for_test() };
    let (mut j, rec) = Journal::open(dir.path(), date(), graph(), opts.clone()).unwrap();
    assert_eq!(rec.replayed, 0);
    run_import(&mut j, 500);
    let live = j.state().clone();
    assert_eq!(live.task_status_of("import"), Some(TaskStatus::Succeeded));
    j.close(WAIT).unwrap();

    let (j, rec) = Journal::open(dir.path(), date(), graph(), opts).unwrap();
    assert_eq!(rec.snapshot_seq, None);
    assert_eq!(rec.replayed as u64, live.last_seq());
    assert!(*j.state() == live, "recovered state differs from the live one");
    let ix = j.state().graph().index_of("confirm").unwrap();
    assert!(j.state().dependencies_done(ix), "readiness is recovered too");
}

#[test]
fn snapshots_are_written_in_the_background_and_recovery_starts_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::for_test(); // a snapshot every 1,000 events
    let (mut j, _) = Journal::open(dir.path(), date(), graph(), opts.clone()).unwrap();
    run_import(&mut j, 2_000);
    let mut snaps = j.snapshots();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let first = rt.block_on(async {
        tokio::time::timeout(WAIT, snaps.wait_for(|&s| s > 0))
            .await
            .expect("a snapshot")
            .map(|s| *s)
    });
    assert!(first.unwrap() > 0);
    // Some events after the last snapshot, so recovery = snapshot + replay.
    j.record(shard("import", 0, ShardEvent::Rollback), 6).unwrap();
    j.flush().unwrap();
    wait_durable(&j);
    let live = j.state().clone();
    j.close(WAIT).unwrap();

    let (j, rec) = Journal::open(dir.path(), date(), graph(), opts).unwrap();
    let snap = rec.snapshot_seq.expect("recovery used a snapshot");
    assert!(snap > 1_000, "snapshot at {snap}");
    assert_eq!(snap + rec.replayed as u64, live.last_seq());
    assert!(*j.state() == live);
    let view = j.state().shard(j.state().graph().index_of("import").unwrap(), 0).unwrap();
    assert_eq!(view.status, ShardStatus::RollingBack);
}

#[test]
fn an_event_that_does_not_apply_is_neither_applied_nor_logged() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::for_test();
    let (mut j, _) = Journal::open(dir.path(), date(), graph(), opts.clone()).unwrap();
    run_import(&mut j, 3);
    let before = j.state().clone();
    // A succeeded shard cannot be dispatched again.
    let bad = shard(
        "import",
        1,
        ShardEvent::Dispatch { attempt: 2, executor: "x".into(), epoch: 0, instance: 0 },
    );
    let err = j.record(bad, 9).unwrap_err();
    assert!(err.to_string().contains("succeeded"), "{err}");
    assert!(j.record(shard("nope", 0, ShardEvent::Succeed), 9).is_err());
    assert!(*j.state() == before);
    assert_eq!(j.flush().unwrap(), None, "nothing was queued");
    j.close(WAIT).unwrap();
    let (j, _) = Journal::open(dir.path(), date(), graph(), opts).unwrap();
    assert!(*j.state() == before);
}

#[test]
fn a_data_directory_of_another_date_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { snapshot_every: 10, ..JournalOptions::for_test() };
    let (mut j, _) = Journal::open(dir.path(), date(), graph(), opts.clone()).unwrap();
    run_import(&mut j, 20);
    j.request_snapshot();
    let mut snaps = j.snapshots();
    let target = j.state().last_seq();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(WAIT, snaps.wait_for(|&s| s >= target)).await.unwrap().unwrap();
    });
    j.close(WAIT).unwrap();
    let other = BusinessDate::from_ymd(2026, 10, 8).unwrap();
    let err = Journal::open(dir.path(), other, graph(), opts).unwrap_err();
    assert!(matches!(err, Error::DateMismatch { .. }), "{err}");
    assert!(err.to_string().contains("2026-09-30"), "{err}");
}

#[test]
fn an_event_over_the_size_limit_is_refused_before_it_applies_and_the_day_reopens() {
    // One size limit for an event, equal to the log's record limit, checked before the event
    // changes the day: before, a 20 MiB failure reason was applied in memory and the append
    // failed afterwards (the manager died, and restarted into the same failure).
    assert_eq!(taskflow_core::state::MAX_EVENT_BYTES, taskflow_core::store::MAX_PAYLOAD);
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { snapshot_every: u64::MAX, ..JournalOptions::for_test() };
    let (mut j, _) = Journal::open(dir.path(), date(), graph(), opts.clone()).unwrap();
    run_import(&mut j, 1);
    let before = j.state().clone();
    let huge = ShardEvent::Fail { reason: "x".repeat(20 << 20) };
    let err = j.record(shard("import", 0, huge), 9).unwrap_err();
    assert!(
        matches!(err, taskflow_core::state::Error::TooLarge { len, limit }
            if len > limit && limit == taskflow_core::state::MAX_EVENT_BYTES),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert!(*j.state() == before, "nothing changed");
    // A registration over the limit likewise.
    let shards = (0..20_000).map(|i| ShardKey::new(format!("{i:0>1024}"))).collect();
    let kind = EventKind::TaskRegistered {
        task: TaskId::new("confirm"),
        items: vec![],
        shards,
        covered_dates: vec![],
    };
    assert!(matches!(j.record(kind, 10), Err(taskflow_core::state::Error::TooLarge { .. })));
    j.flush().unwrap();
    wait_durable(&j);
    j.close(WAIT).unwrap();
    let (j, _) = Journal::open(dir.path(), date(), graph(), opts).unwrap();
    assert!(*j.state() == before, "the day reopens as it was");
}
