use super::codec::{self, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, RejectLog, WireError};
use super::messages::*;
use super::wire::Wire;
use ractor::Message;
use ractor::message::SerializedMessage;

fn stop() -> ToExecutor {
    ToExecutor::Stop(StopMsg {
        epoch: 7,
        slot: 1,
        key: WireAttempt {
            task: "t".into(),
            shard: 2,
            attempt: 3,
            generation: 0,
            kind: WireJobKind::Run,
            dispatch: 0,
        },
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a v2 message never change: a peer of the same version must keep reading them
/// (the body of a `Stop` is unchanged since v1; only the version prefix moved).
#[test]
fn golden_bytes_of_a_stop() {
    let bytes = codec::encode("stop", &stop()).unwrap();
    assert_eq!(hex(&bytes), GOLDEN_STOP, "the v2 wire form changed");
    let back: ToExecutor = codec::decode("stop", &bytes).unwrap();
    assert_eq!(back, stop());
}

const GOLDEN_STOP: &str = concat!(
    "0002",
    "81a453746f70",
    "83a565706f636807a4736c6f7401a36b6579",
    "85a47461736ba174a5736861726402a7617474656d707403aa67656e65726174696f6e00a46b696e64a372756e"
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
    });
    let report = ToManager::Report(ReportMsg {
        epoch: 1,
        executor: "e1".into(),
        instance: 42,
        key: WireAttempt {
            task: "a".into(),
            shard: 0,
            attempt: 1,
            generation: 0,
            kind: WireJobKind::Rollback,
            dispatch: 0,
        },
        slot: 0,
        body: ReportBody::Finished {
            outcome: WireOutcome::Failed { reason: "x".into() },
            last_step: None,
        },
    });
    for m in [join, report] {
        let b = codec::encode("m", &m).unwrap();
        assert_eq!(codec::decode::<ToManager>("m", &b).unwrap(), m);
    }
    let r = Reply::JoinAccepted { epoch: 3, lease_ms: 1000, heartbeat_ms: 200 };
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
    for garbage in [&[0u8, 2][..], &[0, 2, 0xc1], &[0, 2, 0x81, 0xa4, b'N', b'o', b'p', b'e', 0xc0]]
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
        let mut v = vec![0, 2];
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
        key: WireAttempt {
            task: "t".into(),
            shard: 0,
            attempt: 1,
            generation: 0,
            kind: WireJobKind::Run,
            dispatch: 0,
        },
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
    use crate::actors::{Assignment, AttemptKey, JobKind};
    use crate::behavior::Params;
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
    let wire = AssignMsg::from_assignment(9, &a);
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
            key: WireAttempt {
                task: "t".into(),
                shard: i,
                attempt: 1,
                generation: 0,
                kind: WireJobKind::Run,
                dispatch: 0,
            },
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
