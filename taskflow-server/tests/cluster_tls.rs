//! TLS on the cluster link with real processes: the example day over mutual TLS; a plain and a
//! wrong-CA executor refused (each exits naming TLS or the certificate, the manager logs one
//! line each) while the day completes; a silent client does not delay a join; a manager off
//! loopback without TLS refuses to start. Certificates are generated here (rcgen), never
//! committed.

#[path = "cluster_common/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use support::*;

/// A CA and the files of certificates it signed, in a temp dir.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki { dir, ca: Issuer::new(params, key) }
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").to_str().unwrap().to_owned()
    }

    /// A certificate for 127.0.0.1 (an IP SAN): (cert, key) paths.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.to_str().unwrap().to_owned(), k.to_str().unwrap().to_owned())
    }
}

/// A mutual-TLS manager: (pki, manager process).
fn tls_manager(c: &Cluster, env: &[(&str, &str)]) -> (Pki, Proc) {
    let pki = Pki::new(c.dir.path(), "pki");
    let (cert, key) = pki.issue("manager");
    let ca = pki.ca();
    let m = c.manager_with(2000, env, &["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]);
    (pki, m)
}

fn tls_executor(c: &Cluster, pki: &Pki, name: &str, env: &[(&str, &str)]) -> Proc {
    let (cert, key) = pki.issue(name);
    let ca = pki.ca();
    Proc::spawn(
        &[
            "executor",
            "--manager",
            &c.addr,
            "--name",
            name,
            "--slots",
            "2",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        env,
    )
}

#[test]
fn the_example_day_completes_over_mutual_tls() {
    let c = Cluster::new();
    let (pki, mut m) = tls_manager(&c, &[]);
    let execs: Vec<Proc> = (1..=2).map(|i| tls_executor(&c, &pki, &format!("e{i}"), &[])).collect();
    let code = m.wait_exit(Duration::from_secs(120));
    let outputs: Vec<String> = execs.iter().map(Proc::output).collect();
    assert_eq!(code, Some(0), "manager:\n{}\nexecutors:\n{}", m.output(), outputs.join("\n"));
    assert_all_done(&c.read_report());
    let joined = execs.iter().filter(|e| e.output().contains("joined the manager")).count();
    assert_eq!(joined, 2, "{}", outputs.join("\n"));
}

#[test]
fn a_plain_and_a_wrong_ca_executor_are_refused_and_the_day_completes() {
    let c = Cluster::new();
    let slow = [("TASKFLOW_FUND_STEP_DELAY", "30ms")];
    let (pki, mut m) = tls_manager(&c, &slow);
    let good = tls_executor(&c, &pki, "e1", &slow);
    assert!(good.wait_for("joined the manager", Duration::from_secs(30)), "{}", good.output());

    // Plain TCP to a TLS manager.
    let mut plain = c.executor("plain", 2, &[]);
    let code = plain.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "plain must fail: {}", plain.output());
    assert!(plain.output().contains("TLS"), "{}", plain.output());

    // A certificate signed by another CA (it trusts the manager's CA).
    let other = Pki::new(c.dir.path(), "other");
    let (cert, key) = other.issue("intruder");
    let ca = pki.ca();
    let mut wrong = Proc::spawn(
        &[
            "executor",
            "--manager",
            &c.addr,
            "--name",
            "intruder",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    );
    let code = wrong.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "wrong CA must fail: {}", wrong.output());
    assert!(wrong.output().contains("certificate"), "{}", wrong.output());

    // The manager logged each refusal once, naming TLS / the certificate.
    assert!(
        m.wait_for_line(&["refused a cluster connection", "plain TCP"], Duration::from_secs(10)),
        "{}",
        m.output()
    );
    assert!(
        m.wait_for_line(&["refused a cluster connection", "certificate"], Duration::from_secs(10)),
        "{}",
        m.output()
    );
    let code = m.wait_exit(Duration::from_secs(180));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
    assert_eq!(m.count("refused a cluster connection"), 2, "one line each:\n{}", m.output());
}

#[test]
fn a_silent_client_does_not_delay_a_join() {
    let c = Cluster::new();
    let slow = [("TASKFLOW_FUND_STEP_DELAY", "30ms")];
    let (pki, _m) = tls_manager(&c, &slow);
    // Connects and sends nothing; kept open while the executor joins.
    // ("accepting executors" is printed just before the listener binds: retry, bounded.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let _silent = loop {
        match std::net::TcpStream::connect(&c.addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("the manager never listened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let start = Instant::now();
    let e = tls_executor(&c, &pki, "e1", &slow);
    assert!(e.wait_for("joined the manager", Duration::from_secs(8)), "{}", e.output());
    // Well below the 10 s handshake timeout: the join did not wait for the silent client.
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
}

#[test]
fn a_manager_off_loopback_without_tls_refuses_to_start() {
    let c = Cluster::new();
    let port = c.addr.rsplit_once(':').unwrap().1;
    let any = format!("0.0.0.0:{port}");
    let data = c.data();
    let mut m = Proc::spawn(
        &[
            "manager",
            "--cluster",
            &any,
            "--date",
            DATE,
            "--until-done",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let code = m.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "{}", m.output());
    assert!(m.output().contains("--insecure-plain-tcp"), "{}", m.output());
    assert!(!m.output().contains("accepting executors"), "{}", m.output());
}

#[test]
fn bad_tls_files_are_a_clear_startup_error_naming_the_file() {
    let c = Cluster::new();
    let pki = Pki::new(c.dir.path(), "pki");
    let (cert, key) = pki.issue("manager");
    let (_, other_key) = pki.issue("other");
    let missing = c.dir.path().join("missing.pem");
    let not_pem = c.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (missing, not_pem) = (missing.to_str().unwrap(), not_pem.to_str().unwrap());
    let data = c.data();
    for (cert, key, file) in [
        (missing, key.as_str(), missing),
        (not_pem, key.as_str(), not_pem),
        (cert.as_str(), not_pem, not_pem),
        (cert.as_str(), other_key.as_str(), other_key.as_str()),
    ] {
        let mut m = Proc::spawn(
            &[
                "manager",
                "--cluster",
                &c.addr,
                "--date",
                DATE,
                "--until-done",
                "--data",
                data.to_str().unwrap(),
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            &[],
        );
        let code = m.wait_exit(Duration::from_secs(30));
        assert!(matches!(code, Some(c) if c != 0), "{}", m.output());
        assert!(m.output().contains(file), "names {file}: {}", m.output());
    }
}
