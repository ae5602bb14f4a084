//! Regression: a manager may dispatch to an executor as soon as it accepted its join, and
//! under load that `Assign` reaches the executor's agent before the join's answer reaches the
//! executor's session task. The executor used to refuse it ("assignment of another epoch or
//! registration") while the manager counted the shard as running there: the day hung (seen as
//! `cluster_day` timing out on a loaded machine). Here a [`FakeManager`] forces that order on
//! a real executor process: it sends the `Assign` first, waits until the executor has started
//! it (the slot's debug log: an executor accepts an assignment of its current epoch or a newer
//! one), and only then answers the join. The job must run and be reported.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;
use taskflow_core::cluster::codec;
use taskflow_core::cluster::messages::{
    AssignMsg, Reply, ReportBody, ToExecutor, ToManager, WireAttempt, WireJobKind, WireOutcome,
};
use taskflow_core::cluster::testing::{FakeManager, Incoming};

const EPOCH: u64 = 7;

fn decode(i: &Incoming) -> ToManager {
    codec::decode("executor message", &i.bytes).expect("the executor sends envelopes")
}

fn reply(msg: &Reply) -> Vec<u8> {
    codec::encode("reply", msg).unwrap()
}

#[test]
fn an_assignment_that_overtakes_the_join_answer_is_run() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let rt = rt.unwrap();
    let addr = free_addr();
    let (fake, mut rx) = rt
        .block_on(FakeManager::start(addr.parse().unwrap(), COOKIE))
        .expect("the fake manager listens");
    let log = ("TASKFLOW_LOG", "warn,taskflow_core::executor::slot=debug");
    let exec =
        Proc::spawn(&["executor", "--manager", &addr, "--name", "e1", "--slots", "1"], &[log]);

    let recv = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Incoming>| {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), rx.recv()).await })
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no message from the executor:\n{}", exec.output()))
    };
    let join_call = recv(&mut rx);
    let ToManager::Join(join) = decode(&join_call) else { panic!("the first message is a join") };

    let key = WireAttempt {
        task: "t".into(),
        shard: 0,
        attempt: 1,
        generation: 0,
        kind: WireJobKind::Run,
        date: DATE.into(),
        cluster_id: "c1".into(),
        dispatch: 0,
    };
    let assign = ToExecutor::Assign(AssignMsg {
        epoch: EPOCH,
        key: key.clone(),
        slot: 0,
        behavior: "noop".into(),
        date: DATE.into(),
        shard_key: "s0".into(),
        scope: Vec::new(),
        covered_dates: vec![DATE.into()],
        params: BTreeMap::new(),
        completed_steps: 0,
        timeout_ms: None,
    });
    let bytes = codec::encode("assign", &assign).unwrap();
    fake.cast_to_executor(&join.executor, join.instance, bytes).expect("the agent is advertised");
    // The agent has started the job before the join is answered (the old bug: it refused it).
    assert!(
        exec.wait_for_line(&["job started", "t[0]"], Duration::from_secs(30)),
        "the executor handled the early assignment:\n{}",
        exec.output()
    );
    assert!(!exec.output().contains("registration refused"), "{}", exec.output());
    join_call.answer(reply(&Reply::JoinAccepted {
        epoch: EPOCH,
        lease_ms: 60_000,
        heartbeat_ms: 10_000,
        cluster_id: "c1".into(),
        date: DATE.into(),
    }));

    // The job runs: its report comes back, alone or in a `Batch` with its notes (heartbeats
    // and checkpoints are answered meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    'wait: loop {
        assert!(std::time::Instant::now() < deadline, "no report:\n{}", exec.output());
        let incoming = recv(&mut rx);
        let casts = match decode(&incoming) {
            ToManager::Heartbeat(hb) => {
                incoming.answer(reply(&Reply::HeartbeatAck { seq: hb.seq, ok: true }));
                continue;
            }
            ToManager::Checkpoint(_) => {
                incoming.answer(reply(&Reply::CheckpointAck { error: None }));
                continue;
            }
            ToManager::Batch(items) => items,
            other => vec![other],
        };
        for cast in casts {
            if let ToManager::Report(r) = cast
                && r.key == key
                && let ReportBody::Finished { outcome, .. } = &r.body
            {
                assert_eq!(*outcome, WireOutcome::Succeeded);
                assert_eq!(r.epoch, EPOCH);
                break 'wait;
            }
        }
    }
    drop(exec);
    drop(fake);
}
