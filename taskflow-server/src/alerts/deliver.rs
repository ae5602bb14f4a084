//! Delivery: one bounded queue and one worker per webhook, so a slow or dead receiver delays
//! only its own alerts and never the manager (the watcher only `try_send`s; a full queue
//! drops the alert and counts it). Each POST has a timeout and is retried with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Alerts a receiver answered with 2xx.
    pub delivered: AtomicU64,
    /// Alerts given up after every retry.
    pub failed: AtomicU64,
    /// Alerts dropped because a receiver's queue was full.
    pub dropped: AtomicU64,
}

/// Where alerts are posted: an `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as given.
    pub url: String,
    host: String,
    port: u16,
    path: String,
}

impl std::str::FromStr for Webhook {
    type Err = String;

    fn from_str(url: &str) -> Result<Webhook, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https webhooks are not supported yet; post to an http relay on this \
                 host or a trusted network"
            ));
        } else {
            return Err(format!("{url:?} is not an http:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['\r', '\n', ' ']) {
            return Err(format!("{url:?} is not a valid webhook URL (http://host[:port]/path)"));
        }
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, "")) => (format!("[{h}]"), 80),
                Some((h, p)) if p.starts_with(':') => (format!("[{h}]"), port_of(&p[1..])?),
                _ => return Err(format!("{url:?}: bad IPv6 address")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), port_of(p)?),
                None => (authority.to_owned(), 80),
            }
        };
        Ok(Webhook { url: url.to_owned(), host, port, path: path.to_owned() })
    }
}

/// How alerts are delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The HMAC-SHA256 key (`--alert-secret`), if any.
    pub(crate) secret: Option<Arc<[u8]>>,
    /// One POST's bound (connect, send, status line).
    pub(crate) timeout: Duration,
    /// Retries after the first attempt.
    pub(crate) retries: u32,
    /// The first retry's wait; doubled each time.
    pub(crate) backoff: Duration,
}

/// One webhook's queue: the sender the watcher uses, and its worker.
pub(crate) struct Queue {
    pub(crate) tx: mpsc::Sender<Arc<str>>,
    pub(crate) worker: tokio::task::JoinHandle<()>,
}

/// Starts the worker of `hook` with a queue of `capacity` alerts (their JSON bodies).
pub(crate) fn start(
    hook: Webhook,
    capacity: usize,
    how: Delivery,
    stats: Arc<AlertStats>,
) -> Queue {
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(capacity.max(1));
    let worker = tokio::spawn(async move {
        while let Some(body) = rx.recv().await {
            let mut wait = how.backoff;
            let mut attempt = 0;
            loop {
                match post(&hook, &body, &how).await {
                    Ok(()) => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if attempt >= how.retries => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(webhook = %hook.url, error = %e, attempts = attempt + 1, "alert not delivered; given up");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(webhook = %hook.url, error = %e, attempt, "alert delivery failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
    });
    Queue { tx, worker }
}

/// One POST of `body`, bounded by the timeout; `Ok` on a 2xx status.
async fn post(hook: &Webhook, body: &str, how: &Delivery) -> Result<(), String> {
    let send = async {
        let stream = TcpStream::connect((hook.host.trim_matches(['[', ']']), hook.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        exchange(stream, hook, body, how.secret.as_deref()).await
    };
    match tokio::time::timeout(how.timeout, send).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", how.timeout)),
    }
}

/// Writes the request and reads the status line (`Connection: close`: nothing else is read).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hook: &Webhook,
    body: &str,
    secret: Option<&[u8]>,
) -> Result<(), String> {
    let host =
        if hook.port == 80 { hook.host.clone() } else { format!("{}:{}", hook.host, hook.port) };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: taskflow\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        hook.path,
        body.len()
    );
    if let Some(key) = secret {
        let signature = super::signature(key, body.as_bytes());
        head.push_str(&format!("X-Taskflow-Signature: {signature}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.write_all(body.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 1024 {
            return Err("the answer's status line is too long".into());
        }
        match stream.read(&mut byte).await.map_err(|e| format!("receive: {e}"))? {
            0 => return Err("the receiver closed without answering".into()),
            _ => line.push(byte[0]),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..300).contains(&c) => Ok(()),
        Some(c) => Err(format!("the receiver answered {c}")),
        None => Err(format!("not an HTTP answer: {:?}", text.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_parse_and_bad_ones_say_why() {
        let h: Webhook = "http://127.0.0.1:9000/hooks/taskflow".parse().unwrap();
        assert_eq!(
            (h.host.as_str(), h.port, h.path.as_str()),
            ("127.0.0.1", 9000, "/hooks/taskflow")
        );
        let h: Webhook = "http://alerts.internal".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port, h.path.as_str()), ("alerts.internal", 80, "/"));
        let h: Webhook = "http://[::1]:8080/x".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("[::1]", 8080));
        let h: Webhook = "http://[::1]/x".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("[::1]", 80));
        for bad in
            ["ftp://x", "http://", "http://h:99999/", "http://u@h/", "https://h/", "http://[::1/"]
        {
            let e = bad.parse::<Webhook>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
