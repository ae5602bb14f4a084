//! Event log behaviour: group commit, ordering, gaps, reopen, and a writer killed with SIGKILL.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskflow_core::store::{Error, Store, StoreOptions};

fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("event {seq:010} ").into_bytes();
    while p.len() < 64 + (seq % 37) as usize {
        p.push(b'a' + (seq % 26) as u8);
    }
    p
}

fn batch(from: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
    (from..from + n).map(|s| (s, payload(s))).collect()
}

#[test]
fn group_commit_from_several_threads_moves_one_watermark_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.next_seq, 1);
    assert!(rec.events.is_empty() && rec.snapshot.is_none());
    let store = Arc::new(store);
    const THREADS: u64 = 4;
    const BATCHES: u64 = 300;
    const PER: u64 = 10;
    let total = THREADS * BATCHES * PER;

    // Watch the watermark from an async task, as the manager will.
    let mut rx = store.durable();
    let watcher = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async move {
            let mut seen = Vec::new();
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let d = rx.borrow_and_update().clone();
                    assert!(d.failure.is_none());
                    if seen.last() != Some(&d.seq) {
                        seen.push(d.seq);
                    }
                    if d.seq >= total {
                        break;
                    }
                    rx.changed().await.unwrap();
                }
            })
            .await
            .expect("watermark did not reach the total in time");
            seen
        })
    });

    let next = Arc::new(Mutex::new(1u64));
    let producers: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = store.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                for _ in 0..BATCHES {
                    // The manager assigns seqs; here a mutex plays that role.
                    let mut n = next.lock().unwrap();
                    store.append(batch(*n, PER)).unwrap();
                    *n += PER;
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    assert!(store.wait_durable(total, Duration::from_secs(60)).unwrap());
    let seen = watcher.join().unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "watermark went backwards: {seen:?}");
    assert_eq!(*seen.last().unwrap(), total);
    let stats = store.stats();
    assert_eq!(stats.events, total);
    assert!(stats.fsyncs >= 1);
    assert!(
        stats.events > stats.fsyncs,
        "group commit should cover several events per fsync: {stats:?}"
    );
    assert!(stats.bytes > total * 64);
    assert!(store.segments().len() > 1, "64 KiB test segments should have rolled");

    let read: Vec<_> = store.read_from(1).map(Result::unwrap).collect();
    assert_eq!(read.len() as u64, total);
    assert!(read.iter().all(|(s, p)| *p == payload(*s)));
    let tail: Vec<_> = store.read_from(total - 4).map(|r| r.unwrap().0).collect();
    assert_eq!(tail, (total - 4..=total).collect::<Vec<_>>());

    drop(store);
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.next_seq, total + 1);
    assert_eq!(rec.events.len() as u64, total);
    for (i, (s, p)) in rec.events.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1);
        assert_eq!(*p, payload(*s));
    }
    assert!(rec.torn_tail.is_none());
    store.close().unwrap();
}

#[test]
fn gaps_and_repeats_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    store.append(batch(1, 5)).unwrap();
    match store.append(batch(7, 1)) {
        Err(Error::Gap { expected: 6, got: 7 }) => {}
        other => panic!("expected a gap error, got {other:?}"),
    }
    match store.append(batch(5, 1)) {
        Err(Error::Gap { expected: 6, got: 5 }) => {}
        other => panic!("expected a gap error, got {other:?}"),
    }
    // A batch with an internal gap is refused whole.
    let mut b = batch(6, 3);
    b[2].0 = 10;
    assert!(matches!(store.append(b), Err(Error::Gap { expected: 8, got: 10 })));
    store.append(batch(6, 2)).unwrap();
    assert!(store.wait_durable(7, Duration::from_secs(30)).unwrap());
    assert!(!store.wait_durable(8, Duration::from_millis(10)).unwrap());
    assert_eq!(store.next_seq(), 8);
    store.close().unwrap();
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.events.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    store.append(batch(8, 1)).unwrap();
    assert!(store.wait_durable(8, Duration::from_secs(30)).unwrap());
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    match Store::open(dir.path(), StoreOptions::for_test()) {
        Err(Error::Locked { path }) => assert!(path.starts_with(dir.path())),
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = Store::open(dir.path(), StoreOptions::for_test()).unwrap_err().to_string();
    assert!(msg.contains("locked"), "{msg}");
    drop(store);
    Store::open(dir.path(), StoreOptions::for_test()).unwrap();
}

#[test]
fn metadata_and_epoch_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(store.epoch().unwrap(), 0);
    store.set_epoch(1).unwrap();
    store.set_epoch(2).unwrap();
    store.set_epoch(1).unwrap(); // never lowered
    assert_eq!(store.epoch().unwrap(), 2);
    store.meta_put("cluster_id", &"fund-clearing-a".to_string()).unwrap();
    assert_eq!(store.meta_get::<String>("missing").unwrap(), None);
    store.close().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(store.epoch().unwrap(), 2);
    assert_eq!(store.meta_get::<String>("cluster_id").unwrap().as_deref(), Some("fund-clearing-a"));
}

const CHILD_ENV: &str = "TASKFLOW_STORE_KILL_CHILD_DIR";

/// The child role: append forever, printing every new durable watermark.
fn child_main(dir: &str) {
    let (store, rec) = Store::open(dir, StoreOptions::for_test()).unwrap();
    let mut next = rec.next_seq;
    let mut printed = 0;
    let out = std::io::stdout();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        store.append(batch(next, 50)).unwrap();
        next += 50;
        // Bounded hand-over queue: keep at most 20k events in flight.
        if next - store.durable_seq() > 20_000 {
            store.wait_durable(next - 10_000, Duration::from_secs(30)).unwrap();
        }
        let d = store.durable_seq();
        if d != printed {
            printed = d;
            let mut o = out.lock();
            writeln!(o, "durable {d}").unwrap();
            o.flush().unwrap();
        }
    }
}

#[test]
fn killed_writer_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_main(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut last_acked = 0u64;
    for round in 0..2 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["killed_writer_loses_nothing_acknowledged", "--exact", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("durable ")
                    && tx.send(n.trim().parse::<u64>().unwrap()).is_err()
                {
                    break;
                }
            }
        });
        let target = last_acked + 30_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acked = last_acked;
        while acked < target {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(n) => {
                    assert!(n > acked, "watermark went backwards");
                    acked = n;
                }
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Anything printed before the kill landed is acknowledged too.
        while let Ok(n) = rx.try_recv() {
            acked = acked.max(n);
        }
        reader.join().unwrap();
        assert!(acked > last_acked, "round {round}: the child made no progress");

        let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
        assert!(rec.snapshot.is_none());
        assert!(
            rec.next_seq > acked,
            "round {round}: acknowledged up to {acked} but only {} recovered",
            rec.next_seq - 1
        );
        for (i, (s, p)) in rec.events.iter().enumerate() {
            assert_eq!(*s, i as u64 + 1);
            assert_eq!(*p, payload(*s), "event {s} damaged");
        }
        last_acked = rec.next_seq - 1;
        drop(store);
    }
}
