//! A peer with the right cookie sends the manager's inbox garbage over a real ractor_cluster
//! session, while a normal executor runs the day: undecodable bytes, a truncated envelope, an
//! envelope of an unknown newer protocol version, an oversize envelope (5 MiB: over the 4 MiB
//! envelope limit, under ractor_cluster's 16 MiB frame limit, so it really reaches the inbox),
//! and a well-formed message of the wrong kind. Each call gets a clear rejection; each
//! (peer, reason) is logged once however often it repeats; the session, the manager and the
//! executor live on, and the day completes. (A wrong protocol version announced by a real
//! executor, `--protocol-version`, is covered by `cluster_day`.)

#[path = "cluster_common/mod.rs"]
mod support;

use std::time::Duration;

use support::*;
use taskflow_core::cluster::codec::{self, PROTOCOL_VERSION};
use taskflow_core::cluster::messages::{
    Join, Reply, ReportBody, ReportMsg, ToManager, WireAttempt, WireJobKind,
};
use taskflow_core::cluster::testing::RawPeer;

const REJECTED: &str = "cluster message rejected";
const CALL: Duration = Duration::from_secs(10);

/// Casts `bytes` twice, then calls with them: the manager's answer to the call (the inbox
/// handles one session's messages in order, so the casts were handled before it).
async fn send_thrice(peer: &RawPeer, bytes: Vec<u8>) -> Reply {
    peer.cast_raw(bytes.clone()).expect("cast");
    peer.cast_raw(bytes.clone()).expect("cast");
    let answer = peer.call_raw(bytes, CALL).await.expect("the manager answers the call");
    codec::decode::<Reply>("reply", &answer).expect("the answer is a reply envelope")
}

fn rejected_reason(reply: Reply) -> String {
    match reply {
        Reply::JoinRejected { reason } | Reply::Rejected { reason } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn garbage_newer_versions_and_oversize_messages_are_rejected_and_the_day_completes() {
    let c = Cluster::new();
    let slow = [("TASKFLOW_FUND_STEP_DELAY", "30ms")];
    let mut m = c.manager(2000, &slow);
    let e = c.executor("e1", 2, &slow);
    assert!(e.wait_for("joined the manager", Duration::from_secs(30)), "{}", e.output());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let rt = rt.unwrap();
    let addr = c.addr.parse().unwrap();
    rt.block_on(async {
        let peer = RawPeer::connect(addr, COOKIE, "garbage", Duration::from_secs(15))
            .await
            .expect("a peer with the right cookie gets a session");

        // Undecodable: a current version header and a byte MessagePack never uses.
        let mut garbage = PROTOCOL_VERSION.to_be_bytes().to_vec();
        garbage.push(0xc1);
        let reason = rejected_reason(send_thrice(&peer, garbage).await);
        assert!(reason.contains("undecodable"), "{reason}");

        // Truncated: shorter than the version header.
        let reason = rejected_reason(send_thrice(&peer, vec![0x01]).await);
        assert!(reason.contains("shorter than the 2-byte envelope header"), "{reason}");

        // A well-formed join of an unknown newer protocol version.
        let join = ToManager::Join(Join {
            executor: "from-the-future".into(),
            instance: 7,
            protocol_version: PROTOCOL_VERSION + 1,
            slots: 1,
            behaviors: vec!["noop".into()],
            held_outcomes: Vec::new(),
            replicas: Vec::new(),
            seen_epoch: 0,
            keeps_replica: false,
            busy_slots: Vec::new(),
        });
        let newer = codec::encode_version(PROTOCOL_VERSION + 1, "join", &join).unwrap();
        let reason = rejected_reason(send_thrice(&peer, newer).await);
        assert!(reason.contains("protocol version mismatch"), "{reason}");

        // Oversize: a 5 MiB envelope (the frame is under 16 MiB, so the session carries it).
        let mut big = PROTOCOL_VERSION.to_be_bytes().to_vec();
        big.resize(5 << 20, 0);
        let reason = rejected_reason(send_thrice(&peer, big).await);
        assert!(reason.contains("exceeds the limit"), "{reason}");
        assert!(peer.is_connected(), "an oversize envelope does not cost the session");

        // A report (a cast) sent as a call: decodable, but not understood as a call.
        let report = ToManager::Report(ReportMsg {
            epoch: 1,
            executor: "ghost".into(),
            instance: 1,
            key: WireAttempt {
                task: "clearing".into(),
                shard: 0,
                attempt: 1,
                generation: 0,
                kind: WireJobKind::Run,
                date: DATE.into(),
                cluster_id: "c1".into(),
                dispatch: 0,
            },
            slot: 0,
            body: ReportBody::SlotFreed,
        });
        let bytes = codec::encode("report", &report).unwrap();
        let answer = peer.call_raw(bytes, CALL).await.expect("answered");
        match codec::decode::<Reply>("reply", &answer).unwrap() {
            Reply::Rejected { reason } => assert!(reason.contains("arrived as a call"), "{reason}"),
            other => panic!("expected Rejected, got {other:?}"),
        }
    });

    // Logged once per (peer, reason), although each arrived three times. The `ghost` line is
    // the last one logged, so every earlier line has been read once it is.
    assert!(
        m.wait_for_line(&[REJECTED, "ghost"], Duration::from_secs(10)),
        "the wrong-kind message was logged:\n{}",
        m.output()
    );
    let out = m.output();
    for reason in ["undecodable", "truncated", "version", "too-large"] {
        let lines = out
            .lines()
            .filter(|l| l.contains(REJECTED) && l.contains("unknown executor"))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .count();
        assert_eq!(lines, 1, "one log line for {reason}:\n{out}");
    }

    // The manager and the executor lived on: the day completes on the same session.
    let code = m.wait_exit(Duration::from_secs(180));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
    assert_eq!(
        e.count("joined the manager"),
        1,
        "the executor never had to re-join:\n{}",
        e.output()
    );
    drop(rt);
}
