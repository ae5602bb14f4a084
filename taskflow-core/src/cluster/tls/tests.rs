//! Tests of TLS loading: the expiry warning reads `notAfter` from the DER certificate.

use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

fn cert_expiring_at(unix: i64) -> Vec<u8> {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_delta(unix);
    params.self_signed(&key).expect("a certificate").der().to_vec()
}

fn time_delta(secs: i64) -> std::time::Duration {
    std::time::Duration::from_secs(secs as u64)
}

#[test]
fn a_certificate_expiring_within_14_days_warns_and_a_later_one_does_not() {
    let now = 1_800_000_000;
    let soon = cert_expiring_at(now + 3 * 86_400);
    let msg = super::expiry_warning(Path::new("m.pem"), &soon, now).expect("a warning");
    assert!(msg.contains("m.pem") && msg.contains("in 3 days"), "{msg}");
    let later = cert_expiring_at(now + 90 * 86_400);
    assert_eq!(super::expiry_warning(Path::new("m.pem"), &later, now), None);
    let past = cert_expiring_at(now - 86_400);
    let msg = super::expiry_warning(Path::new("m.pem"), &past, now).expect("a warning");
    assert!(msg.contains("expired"), "{msg}");
}
