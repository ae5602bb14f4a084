use super::codec::{self, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, RejectLog, WireError};
use super::messages::*;
use super::wire::Wire;
use ractor::Message;
use ractor::message::SerializedMessage;

fn key(task: &str, shard: u32, kind: WireJobKind) -> WireAttempt {
    WireAttempt {
        task: task.into(),
        shard,
        attempt: 3,
        generation: 0,
        kind,
        date: "2026-09-30".into(),
        cluster_id: "c1".into(),
        dispatch: 0,
    }
}

fn stop() -> ToExecutor {
    ToExecutor::Stop(StopMsg { epoch: 7, slot: 1, key: key("t", 2, WireJobKind::Run) })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a v3 message never change: a peer of the same version must keep reading them
/// (v3 added the business date and cluster id to the key).
#[test]
fn golden_bytes_of_a_stop() {
    let bytes = codec::encode("stop", &stop()).unwrap();
    assert_eq!(hex(&bytes), GOLDEN_STOP, "the v3 wire form changed");
    let back: ToExecutor = codec::decode("stop", &bytes).unwrap();
    assert_eq!(back, stop());
}

const GOLDEN_STOP: &str = concat!(
    "0003",
    "81a453746f70",
    "83a565706f636807a4736c6f7401a36b6579",
    "87a47461736ba174a5736861726402a7617474656d707403aa67656e65726174696f6e00a46b696e64a372756e",
    "a464617465aa323032362d30392d3330aa636c75737465725f6964a26331"
);

#[test]
fn every_message_round_trips() {
    let join = ToManager::Join(Join {
        executor: "e1".into(),
        instance: 42,
        protocol_version: PROTOCOL_VERSION,
        slots: 4,
        behaviors: vec!["noop".into()],
        held_outcomes: vec![],
        replicas: vec![],
        seen_epoch: 0,
        keeps_replica: false,
        busy_slots: vec![BusySlot {
            slot: 1,
            epoch: 2,
            key: key("b", 1, WireJobKind::Run),
            abandoned: true,
        }],
    });
    let report = ToManager::Report(ReportMsg {
        epoch: 1,
        executor: "e1".into(),
        instance: 42,
        key: key("a", 0, WireJobKind::Rollback),
        slot: 0,
        body: ReportBody::Finished {
            outcome: WireOutcome::Failed { reason: "x".into() },
            last_step: None,
        },
    });
    let refused = ToManager::Report(ReportMsg {
        epoch: 1,
        executor: "e1".into(),
        instance: 42,
        key: key("a", 0, WireJobKind::Run),
        slot: 1,
        body: ReportBody::Refused {
            reason: "slot 1 is busy".into(),
            busy: Some(BusySlot {
                slot: 1,
                epoch: 1,
                key: key("b", 0, WireJobKind::Run),
                abandoned: false,
            }),
        },
    });
    for m in [join, report, refused] {
        let b = codec::encode("m", &m).unwrap();
        assert_eq!(codec::decode::<ToManager>("m", &b).unwrap(), m);
    }
    let r = Reply::JoinAccepted {
        epoch: 3,
        lease_ms: 1000,
        heartbeat_ms: 200,
        cluster_id: "c1".into(),
        date: "2026-09-30".into(),
    };
    let b = codec::encode("r", &r).unwrap();
    assert_eq!(codec::decode::<Reply>("r", &b).unwrap(), r);
}

#[test]
fn a_newer_or_unknown_version_is_rejected() {
    let mut bytes = codec::encode("stop", &stop()).unwrap();
    bytes[..2].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    let err = codec::decode::<ToExecutor>("stop", &bytes).unwrap_err();
    assert_eq!(err, WireError::Version { found: PROTOCOL_VERSION + 1 });
    assert!(err.to_string().contains("not supported"), "{err}");
    bytes[..2].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(codec::decode::<ToExecutor>("stop", &bytes).unwrap_err().reason(), "version");
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    assert_eq!(codec::decode::<ToExecutor>("x", &[]).unwrap_err(), WireError::Truncated(0));
    assert_eq!(codec::decode::<ToExecutor>("x", &[0]).unwrap_err(), WireError::Truncated(1));
    for garbage in [&[0u8, 3][..], &[0, 3, 0xc1], &[0, 3, 0x81, 0xa4, b'N', b'o', b'p', b'e', 0xc0]]
    {
        let err = codec::decode::<ToExecutor>("x", garbage).unwrap_err();
        assert_eq!(err.reason(), "undecodable", "{err}");
    }
    // A message of another direction does not decode as this one.
    let b = codec::encode("stop", &stop()).unwrap();
    assert_eq!(codec::decode::<ToManager>("x", &b).unwrap_err().reason(), "undecodable");
    // Deterministic pseudo-random garbage: always an error or a value, never a panic.
    let mut x: u32 = 12345;
    for len in 0..300 {
        let mut v = vec![0, 3];
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            v.push((x >> 16) as u8);
        }
        let _ = codec::decode::<ToManager>("x", &v);
        let _ = codec::decode::<Reply>("x", &v);
    }
}

#[test]
fn oversize_messages_are_refused_before_sending_and_on_receipt() {
    let big = ReportMsg {
        epoch: 1,
        executor: "e".into(),
        instance: 1,
        key: key("t", 0, WireJobKind::Run),
        slot: 0,
        body: ReportBody::Log {
            at_ms: 0,
            level: "info".into(),
            step: None,
            message: "x".repeat(MAX_MESSAGE_BYTES),
        },
    };
    let err = codec::encode("report", &ToManager::Report(big)).unwrap_err();
    assert_eq!(err.reason(), "too-large");
    let received = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert_eq!(codec::decode::<ToManager>("r", &received).unwrap_err().reason(), "too-large");
    const { assert!(MAX_MESSAGE_BYTES * 4 <= 16 * 1024 * 1024) };
}

#[test]
fn rejections_are_logged_once_per_peer_and_reason() {
    let mut log = RejectLog::default();
    let e = WireError::Truncated(0);
    assert!(log.reject("a", &e));
    assert!(!log.reject("a", &e));
    assert!(log.reject("b", &e));
    assert!(log.reject("a", &WireError::Version { found: 9 }));
    assert_eq!(log.count("a", "truncated"), 2);
}

#[test]
fn any_variant_name_reaches_the_handler_as_bytes() {
    let m = Wire::deserialize(SerializedMessage::Cast {
        variant: "SomethingNewer".into(),
        args: vec![9, 9],
        metadata: None,
    })
    .unwrap();
    assert!(matches!(m, Wire::Cast(b) if b == [9, 9]));
    let SerializedMessage::Cast { variant, args, .. } = Wire::Cast(vec![1]).serialize().unwrap()
    else {
        panic!("a cast serializes as a cast")
    };
    assert_eq!((variant.as_str(), args), ("Cast", vec![1]));
}

#[test]
fn an_assignment_round_trips_through_its_wire_form() {
    use crate::behavior::Params;
    use crate::job::{Assignment, AttemptKey, JobKind};
    use crate::model::{ScopeItem, ShardKey, TaskId};
    let a = Assignment {
        key: AttemptKey {
            task: TaskId::new("confirm"),
            shard: 3,
            attempt: 2,
            generation: 1,
            kind: JobKind::Run,
            dispatch: 0,
        },
        slot: 1,
        behavior: "noop".into(),
        date: "2026-09-30".parse().unwrap(),
        shard_key: ShardKey::new("P1@D1"),
        scope: vec![ScopeItem::pair("P1", "D1")],
        covered_dates: vec!["2026-09-30".parse().unwrap(), "2026-10-01".parse().unwrap()],
        params: Params::new().with("k", "v"),
        completed_steps: 2,
        timeout: Some(std::time::Duration::from_millis(1500)),
    };
    let wire = AssignMsg::from_assignment(9, &a, "c1");
    assert_eq!(wire.key.date, "2026-09-30", "the key carries the business date");
    assert_eq!(wire.key.cluster_id, "c1", "and the cluster id");
    let bytes = codec::encode("assign", &ToExecutor::Assign(wire.clone())).unwrap();
    let ToExecutor::Assign(back) = codec::decode("assign", &bytes).unwrap() else {
        panic!("an assign decodes as an assign")
    };
    assert_eq!(back, wire);
    assert_eq!(format!("{:?}", back.to_assignment().unwrap()), format!("{a:?}"));
    let mut bad = wire;
    bad.date = "2026-02-30".into();
    assert!(bad.to_assignment().unwrap_err().contains("bad date"));
}

#[test]
fn a_batch_is_one_envelope_and_splits_to_stay_under_the_limit() {
    use super::codec::{decode, encode_batch};
    let report = |i: u32, text: usize| {
        ToManager::Report(ReportMsg {
            epoch: 1,
            executor: "e1".into(),
            instance: 7,
            key: key("t", i, WireJobKind::Run),
            slot: i,
            body: ReportBody::Log {
                at_ms: 0,
                level: "info".into(),
                step: None,
                message: "x".repeat(text),
            },
        })
    };
    let unwrap = |m| match m {
        ToManager::Batch(items) => items,
        other => vec![other],
    };
    // One message travels as itself.
    let one = encode_batch("t", vec![report(0, 1)], ToManager::Batch, unwrap);
    assert_eq!(one.len(), 1);
    let decoded: ToManager = decode("t", one[0].as_ref().expect("encoded")).expect("decodes");
    assert_eq!(decoded, report(0, 1));
    // Several small ones: one batch, in order.
    let small: Vec<ToManager> = (0..100).map(|i| report(i, 10)).collect();
    let out = encode_batch("t", small.clone(), ToManager::Batch, unwrap);
    assert_eq!(out.len(), 1);
    let decoded: ToManager = decode("t", out[0].as_ref().expect("encoded")).expect("decodes");
    assert_eq!(decoded, ToManager::Batch(small));
    // Too many bytes for one envelope: split, every part under the limit, nothing lost.
    let big: Vec<ToManager> = (0..12).map(|i| report(i, 512 * 1024)).collect();
    let out = encode_batch("t", big.clone(), ToManager::Batch, unwrap);
    assert!(out.len() > 1, "split into {} envelopes", out.len());
    let mut all = Vec::new();
    for env in out {
        let env = env.expect("every part fits");
        assert!(env.len() <= MAX_MESSAGE_BYTES);
        all.extend(unwrap(decode("t", &env).expect("decodes")));
    }
    assert_eq!(all, big);
}

#[test]
fn a_version_2_envelope_is_refused_naming_both_versions() {
    // A v2 peer's keys carry no day: an outcome of one day could be reconciled against
    // another's shard. Its envelopes are refused, and the join's answer names both versions.
    let mut bytes = codec::encode("stop", &stop()).unwrap();
    bytes[..2].copy_from_slice(&2u16.to_be_bytes());
    let err = codec::decode::<ToExecutor>("stop", &bytes).unwrap_err();
    assert_eq!(err, WireError::Version { found: 2 });
    assert_eq!(
        err.to_string(),
        format!("protocol version 2 is not supported: this node speaks version {PROTOCOL_VERSION}")
    );
    assert_eq!(codec::supported_versions(), "3");
}

#[test]
fn a_wire_key_names_its_day_and_cluster() {
    use crate::job::{AttemptKey, JobKind};
    use crate::model::TaskId;
    let k = AttemptKey {
        task: TaskId::new("confirm"),
        shard: 1,
        attempt: 2,
        generation: 0,
        kind: JobKind::Run,
        dispatch: 0,
    };
    let w = WireAttempt::stamped(&k, "2026-09-30", "c1");
    assert!(w.is_of("2026-09-30", "c1"));
    assert!(!w.is_of("2026-10-08", "c1"), "another day's shard with the same numbers");
    assert!(!w.is_of("2026-09-30", "c2"), "another cluster's");
    assert_eq!(crate::job::AttemptKey::from(&w), k, "the slots' key is unchanged");
    let unstamped = WireAttempt::from(&k);
    assert!(!unstamped.is_vouched() && !unstamped.is_of("", ""), "no day: vouched by nobody");
    let day = super::manager::DayIdentity { date: "2026-09-30".into(), cluster_id: "c1".into() };
    assert!(day.stamp(&k).is_of(&day.date, &day.cluster_id));
    assert!(!unstamped.is_of(&day.date, &day.cluster_id));
}

#[test]
fn fencing_bound_settings_are_checked() {
    use super::manager::{check_timing, fence_after};
    use std::time::Duration;
    let ms = Duration::from_millis;
    let listen = |lease, heartbeat| super::ClusterListen {
        tls: None,
        insecure_plain_tcp: false,
        addr: "127.0.0.1:0".parse().unwrap(),
        cookie: "c".into(),
        lease: ms(lease),
        heartbeat: ms(heartbeat),
    };
    // The defaults (a fifth of the lease) and the largest heartbeat allowed hold the bound.
    for (lease, heartbeat) in [(10_000, 2_000), (1_000, 200), (1_000, 400), (50, 10)] {
        assert_eq!(listen(lease, heartbeat).validate(), Ok(()), "{lease}/{heartbeat}");
        let l = listen(lease, heartbeat);
        assert!(fence_after(l.lease) < l.lost_after(), "fence strictly before lost");
        assert!(heartbeat * 2 <= fence_after(l.lease).as_millis() as u64);
    }
    // Half the lease (accepted before protocol 3) no longer is: a heartbeat and its answer
    // do not fit in the fence time twice.
    let err = listen(1_000, 500).validate().unwrap_err();
    assert!(err.contains("at most 2/5 of the lease"), "{err}");
    assert!(err.contains("400 ms"), "says the largest allowed: {err}");
    assert!(check_timing(ms(40), ms(10)).unwrap_err().contains("at least 50 ms"));
    assert!(check_timing(ms(1_000), ms(5)).unwrap_err().contains("at least 10 ms"));
}
