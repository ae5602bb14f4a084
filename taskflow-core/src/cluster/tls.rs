//! TLS on the cluster link: certificates and keys read from PEM files, the manager's own TLS
//! accept loop (one task per connection, each handshake bounded by [`HANDSHAKE_TIMEOUT`],
//! refusals logged once per peer), and the executor's connector.
//!
//! ```text
//! TcpListener(--cluster) ─► AcceptLoop ─► per connection: peek, TLS accept (≤ 10 s)
//!                                            ├─ ok ──► NodeServer (ConnectionOpened, TlsServer)
//!                                            └─ refused: logged once per (peer ip, reason)
//! ```
//!
//! ractor_cluster's own listener does the TLS accept inside its listener actor with no
//! timeout, so one client that connects and sends nothing would block every join behind it:
//! with TLS the node server's listener is bound to an ephemeral loopback port (and TLS-only)
//! and this module accepts on the real address.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

/// How long an accepted connection may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many TLS handshakes run at once; a connection beyond is closed at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// A certificate that expires within this many days warns at start.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// A certificate, key or CA file that cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The manager's side of TLS: its certificate chain and key, and optionally the CA that
/// executors' client certificates must be signed by (mutual TLS).
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    cert: PathBuf,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert", &self.cert).field("mutual", &self.mutual).finish()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.acceptor.config(), other.acceptor.config())
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// Reads the PEM certificate chain `cert` (the manager's certificate first), its private
    /// key `key` (PKCS#8, PKCS#1 or SEC1) and, for mutual TLS, the PEM CA certificates
    /// `client_ca` that executors' certificates must chain to. Warns (tracing) if the
    /// certificate expires within [`EXPIRY_WARNING_DAYS`] days.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        let chain = read_certs(cert, "certificate")?;
        let private = read_key(key)?;
        warn_if_expiring(cert, &chain[0]);
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("cannot configure TLS: {e}")))?;
        let builder = match client_ca {
            Some(ca) => {
                let roots = Arc::new(read_roots(ca)?);
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| TlsError(format!("the TLS CA file {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config =
            builder.with_single_cert(chain, private).map_err(|e| key_error(cert, key, e))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert: cert.to_owned(),
            mutual: client_ca.is_some(),
        })
    }

    /// Whether executors must present a certificate (a client CA was given).
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The executor's side of TLS: the CA that the manager's certificate must chain to, and
/// optionally the executor's own certificate and key (for a manager that requires mutual
/// TLS). The manager's certificate must name the host of `--manager` (an IP SAN for an IP).
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    ca: PathBuf,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("ca", &self.ca).finish()
    }
}

impl ClientTls {
    /// Reads the PEM CA certificates `ca` and, if given, the executor's PEM certificate chain
    /// and private key `identity = (cert, key)`. Warns (tracing) if the certificate expires
    /// within [`EXPIRY_WARNING_DAYS`] days.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = read_roots(ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("cannot configure TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let chain = read_certs(cert, "certificate")?;
                let private = read_key(key)?;
                warn_if_expiring(cert, &chain[0]);
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| key_error(cert, key, e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { connector: TlsConnector::from(Arc::new(config)), ca: ca.to_owned() })
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    pub(crate) fn ca(&self) -> &Path {
        &self.ca
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError(format!("the TLS {what} file {}: cannot read it: {e}", path.display()))
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what)?;
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            TlsError(format!("the TLS {what} file {} is not valid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the TLS {what} file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let detail = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8 PRIVATE KEY, PKCS#1 RSA PRIVATE KEY or SEC1 EC \
                 PRIVATE KEY)"
                    .to_owned()
            }
            other => format!("is not valid PEM: {other}"),
        };
        TlsError(format!("the TLS key file {} {detail}", path.display()))
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA")? {
        roots.add(cert).map_err(|e| {
            TlsError(format!(
                "the TLS CA file {} holds an unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn key_error(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError(format!(
            "the TLS key file {} does not match the certificate {}",
            key.display(),
            cert.display()
        )),
        other => TlsError(format!(
            "the TLS certificate {} and key {} cannot be used: {other}",
            cert.display(),
            key.display()
        )),
    }
}

fn warn_if_expiring(path: &Path, cert: &CertificateDer<'_>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if let Some(msg) = expiry_warning(path, cert, now) {
        warn!("{msg}");
    }
}

/// The warning for a certificate that expires within [`EXPIRY_WARNING_DAYS`] of `now` (Unix
/// seconds), or has expired.
pub(crate) fn expiry_warning(path: &Path, cert: &[u8], now: i64) -> Option<String> {
    let not_after = not_after(cert)?;
    let left = not_after - now;
    let when = chrono::DateTime::from_timestamp(not_after, 0)
        .map_or_else(|| not_after.to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string());
    if left <= 0 {
        Some(format!(
            "the TLS certificate {} expired at {when}: peers refuse it; replace it and restart",
            path.display()
        ))
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        Some(format!(
            "the TLS certificate {} expires at {when} (in {} days): replace it and restart before \
             then (rotation is a restart)",
            path.display(),
            left / 86_400
        ))
    } else {
        None
    }
}

/// The `notAfter` of a DER X.509 certificate, in Unix seconds (None if it cannot be read).
fn not_after(der: &[u8]) -> Option<i64> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    // signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    let (_, cert, _) = der_item(der)?;
    let (_, tbs, _) = der_item(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = der_item(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = der_item(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der_item(rest)?;
    let (_, _, after_not_before) = der_item(validity)?;
    let (tag, time, _) = der_item(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let text = text.strip_suffix('Z')?;
    let full = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSS: 50..99 are 19xx.
            let yy: i32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let t = chrono::NaiveDateTime::parse_from_str(full.get(..14)?, "%Y%m%d%H%M%S").ok()?;
    Some(t.and_utc().timestamp())
}

/// One DER item: (tag, contents, the bytes after it).
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

// --- the manager's accept loop ---

/// The manager's TLS accept loop on the `--cluster` address. It also ends by itself when the
/// node server stops; [`AcceptTask::stop`] ends it and waits until the port is closed.
pub(crate) struct AcceptTask(tokio::task::JoinHandle<()>);

impl AcceptTask {
    /// Accepts on `listener` (already bound), handing each connection whose TLS handshake
    /// completes to `node`.
    pub(crate) fn spawn(
        listener: std::net::TcpListener,
        tls: ServerTls,
        node: ActorRef<NodeServerMessage>,
    ) -> Result<AcceptTask, String> {
        let addr = listener.local_addr().map_err(|e| format!("cannot listen: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(AcceptTask(tokio::spawn(accept_loop(listener, tls, node))))
    }

    /// Stops accepting and waits until the listening socket is closed.
    pub(crate) async fn stop(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
    node: ActorRef<NodeServerMessage>,
) {
    let refusals = Arc::new(RefusalLog::default());
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let node_cell = node.get_cell();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = node_cell.wait(None) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                refusals.refuse_addr(None, "accept", &format!("cannot accept a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            refusals.refuse_addr(
                Some(peer.ip()),
                "busy",
                &format!(
                    "{MAX_PENDING_HANDSHAKES} TLS handshakes are in progress; connection closed"
                ),
            );
            continue;
        };
        let (acceptor, node, refusals) = (tls.acceptor().clone(), node.clone(), refusals.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(stream, peer, &acceptor).await {
                Ok(stream) => {
                    let opened = NodeServerMessage::ConnectionOpened {
                        stream: Box::new(stream),
                        is_server: true,
                    };
                    if node.cast(opened).is_err() {
                        debug!(%peer, "the cluster node stopped; connection dropped");
                    }
                }
                Err(Refusal::Quiet(why)) => debug!(%peer, why, "cluster connection closed"),
                Err(Refusal::Logged { class, reason }) => {
                    refusals.refuse_addr(Some(peer.ip()), class, &reason);
                }
            }
        });
    }
}

enum Refusal {
    /// Not worth a warning (the peer closed before saying anything: a port check).
    Quiet(&'static str),
    /// Logged once per (peer ip, class).
    Logged { class: &'static str, reason: String },
}

async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
) -> Result<NetworkStream, Refusal> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(|_| Refusal::Quiet("no local address"))?;
    let work = async {
        // A TLS connection starts with a handshake record (0x16); anything else is plain TCP.
        let mut first = [0u8; 1];
        let plain = match stream.peek(&mut first).await {
            Ok(0) => return Err(Refusal::Quiet("closed before the TLS handshake")),
            Ok(_) => first[0] != 0x16,
            Err(_) => return Err(Refusal::Quiet("reset before the TLS handshake")),
        };
        // Even for plain TCP, run the accept: rustls answers with a TLS alert, which the
        // executor recognises ("the manager requires TLS").
        match acceptor.accept(stream).await {
            Ok(s) => Ok(s),
            Err(_) if plain => Err(Refusal::Logged {
                class: "plain",
                reason: "the peer speaks plain TCP, not TLS: this manager requires TLS (start \
                         the executor with --tls-ca)"
                    .into(),
            }),
            Err(e) => Err(server_refusal(&e)),
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
        Ok(Ok(stream)) => {
            Ok(NetworkStream::TlsServer { peer_addr: peer, local_addr: local, stream })
        }
        Ok(Err(r)) => Err(r),
        Err(_) => Err(Refusal::Logged {
            class: "timeout",
            reason: format!(
                "no TLS handshake within {} s (the client sent nothing or too little); \
                 connection closed",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// The rustls error inside an I/O error of a handshake, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn server_refusal(e: &std::io::Error) -> Refusal {
    let (class, reason) = match rustls_error(e) {
        Some(rustls::Error::NoCertificatesPresented) => (
            "no-cert",
            "the peer presented no TLS client certificate: this manager requires mutual TLS \
             (start the executor with --tls-cert and --tls-key)"
                .to_owned(),
        ),
        Some(rustls::Error::InvalidCertificate(c)) => (
            "bad-cert",
            format!(
                "the peer's TLS client certificate is refused ({c:?}): it must be signed by the \
                 CA given to the manager with --tls-ca"
            ),
        ),
        Some(rustls::Error::AlertReceived(a)) => (
            "alert",
            format!(
                "the peer refused this manager's TLS certificate (alert {a:?}): the executor's \
                 --tls-ca must hold the CA that signed the manager's --tls-cert"
            ),
        ),
        Some(other) => ("tls", format!("TLS handshake failed: {other}")),
        None => return Refusal::Quiet("connection lost during the TLS handshake"),
    };
    Refusal::Logged { class, reason }
}

/// Refusals already logged, by (peer ip, class): each is logged once, so a client that
/// retries does not flood the log. Bounded: past [`RefusalLog::CAP`] entries, one line says
/// that further refusals are not logged.
#[derive(Default)]
struct RefusalLog {
    seen: Mutex<HashSet<(Option<IpAddr>, &'static str)>>,
}

impl RefusalLog {
    const CAP: usize = 4096;

    fn refuse_addr(&self, ip: Option<IpAddr>, class: &'static str, reason: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::CAP {
            if seen.insert((None, "cap")) {
                warn!("more refused cluster connections; they are no longer logged");
            }
            return;
        }
        if seen.insert((ip, class)) {
            match ip {
                Some(ip) => warn!(peer = %ip, "refused a cluster connection: {reason}"),
                None => warn!("refused a cluster connection: {reason}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;

// --- the executor's connection ---

/// Why a connection to the manager failed.
#[derive(Debug)]
pub(crate) enum ConnectFail {
    /// Not reachable (yet): retried with backoff.
    Unreachable(String),
    /// A definitive TLS refusal (a certificate refused either way, TLS expected): the
    /// executor exits with it.
    Refused(String),
    /// The connection closed during the TLS handshake (a manager without TLS, most likely):
    /// counted like a failed cookie handshake.
    Handshake(String),
}

/// What the first bytes or the first read error of an established connection revealed: set
/// when the manager answered with TLS to a plain connection, or with a TLS alert after the
/// handshake (a TLS 1.3 server refuses a client certificate after the client's side of the
/// handshake completed). Read when the session closes before it is authenticated.
#[derive(Clone, Default)]
pub(crate) struct Probe(Arc<std::sync::OnceLock<String>>);

impl Probe {
    /// The refusal it saw, if any.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.0.get().cloned()
    }
}

/// Connects to the manager at `addr` (HOST:PORT), over TLS if `tls` is given (the manager's
/// certificate must name HOST), and hands the stream to the node server.
pub(crate) async fn connect(
    node: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&ClientTls>,
) -> Result<Probe, ConnectFail> {
    let server_name = match tls {
        Some(_) => Some(server_name(addr)?),
        None => None,
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ConnectFail::Unreachable(format!("cannot connect to {addr}: {e}")));
        }
        Err(_) => return Err(ConnectFail::Unreachable(format!("connecting to {addr} timed out"))),
    };
    let _ = stream.set_nodelay(true);
    let probe = Probe::default();
    let (reader, writer): (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) =
        match (tls, server_name) {
            (Some(tls), Some(name)) => {
                let handshake = tls.connector().connect(name, stream);
                let s = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(client_refusal(addr, tls, &e)),
                    Err(_) => {
                        return Err(ConnectFail::Unreachable(format!(
                            "the TLS handshake with {addr} timed out"
                        )));
                    }
                };
                let (r, w) = tokio::io::split(s);
                (
                    Box::new(Sniff { inner: r, probe: probe.clone(), tls: true, first: true }),
                    Box::new(w),
                )
            }
            _ => {
                let (r, w) = stream.into_split();
                (
                    Box::new(Sniff { inner: r, probe: probe.clone(), tls: false, first: true }),
                    Box::new(w),
                )
            }
        };
    let transport = Transport { reader, writer, peer: addr.to_owned() };
    ractor_cluster::client_connect_external(node, Box::new(transport))
        .await
        .map_err(|e| ConnectFail::Unreachable(format!("cannot hand the connection over: {e}")))?;
    Ok(probe)
}

/// The host of HOST:PORT as a TLS server name (an IP address or a DNS name).
fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, ConnectFail> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
        ConnectFail::Refused(format!(
            "the host of the manager address {addr} is neither a DNS name nor an IP address, so \
             its TLS certificate cannot be checked"
        ))
    })
}

fn client_refusal(addr: &str, tls: &ClientTls, e: &std::io::Error) -> ConnectFail {
    let ca = tls.ca().display();
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        | Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        )) => ConnectFail::Refused(format!(
            "the manager's TLS certificate at {addr} does not name the host of --manager: its \
             subject alternative names must include it (an IP SAN for an IP address)"
        )),
        Some(rustls::Error::InvalidCertificate(c)) => ConnectFail::Refused(format!(
            "the manager's TLS certificate at {addr} is refused ({c:?}): it must be signed by a \
             CA in --tls-ca {ca}"
        )),
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            ConnectFail::Refused(format!(
                "the manager at {addr} requires a TLS client certificate (mutual TLS): start the \
                 executor with --tls-cert and --tls-key"
            ))
        }
        Some(rustls::Error::AlertReceived(a)) => ConnectFail::Refused(format!(
            "the manager at {addr} refused this executor's TLS certificate (alert {a:?}): it \
             must be signed by the CA the manager was given with --tls-ca"
        )),
        Some(rustls::Error::InvalidMessage(_)) => ConnectFail::Refused(format!(
            "the manager at {addr} does not speak TLS (an answer that is not a TLS record): \
                 start the executor without --tls-ca, or the manager with --tls-cert"
        )),
        Some(other) => ConnectFail::Refused(format!("TLS handshake with {addr} failed: {other}")),
        None => ConnectFail::Handshake(format!(
            "the manager at {addr} closed the connection during the TLS handshake ({e}): a \
             manager started without --tls-cert does not speak TLS"
        )),
    }
}

/// The executor's transport: a TCP or TLS stream handed to ractor_cluster as an external
/// stream, so that its reader can be watched ([`Probe`]).
struct Transport {
    reader: ractor_cluster::BoxRead,
    writer: ractor_cluster::BoxWrite,
    peer: String,
}

impl ractor_cluster::ClusterBidiStream for Transport {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (self.reader, self.writer)
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }
}

/// A reader that records what a refusal looks like: on a plain connection, a first byte that
/// starts a TLS record (0x15 alert, 0x16 handshake: a ractor_cluster frame starts with the
/// high byte of its length, 0); on a TLS connection, a TLS alert as the read error.
struct Sniff<R> {
    inner: R,
    probe: Probe,
    tls: bool,
    first: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Sniff<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            std::task::Poll::Ready(Ok(())) if this.first && buf.filled().len() > before => {
                this.first = false;
                let b = buf.filled()[before];
                if !this.tls && (b == 0x15 || b == 0x16) {
                    let _ = this.probe.0.set(
                        "the manager answered with TLS: it requires TLS (start the executor with \
                         --tls-ca FILE)"
                            .to_owned(),
                    );
                }
            }
            std::task::Poll::Ready(Err(e)) if this.tls => {
                if let Some(err) = rustls_error(e) {
                    let reason = match err {
                        rustls::Error::AlertReceived(
                            rustls::AlertDescription::CertificateRequired,
                        ) => "the manager requires a TLS client certificate (mutual TLS): start \
                              the executor with --tls-cert and --tls-key"
                            .to_owned(),
                        rustls::Error::AlertReceived(a) => format!(
                            "the manager refused this executor's TLS certificate (alert {a:?}): \
                             it must be signed by the CA the manager was given with --tls-ca"
                        ),
                        other => format!("TLS error from the manager: {other}"),
                    };
                    let _ = this.probe.0.set(reason);
                }
            }
            _ => {}
        }
        r
    }
}
