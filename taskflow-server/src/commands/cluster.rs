//! `taskflow manager --cluster ADDR` and `taskflow executor --manager HOST:PORT`: the day's
//! manager with executors in other processes (see `proto-docs/cluster.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use taskflow_core::cluster::{
    ClientTls, ClusterListen, ExecutorConfig, RecoverOptions, RecoveryOutcome, ServerTls,
    StatusSink, recover_from_replicas, replica_ack_guarantee, run_executor,
};
use taskflow_core::flow;
use taskflow_core::model::{BusinessDate, DayStep};
use taskflow_core::{RuntimeOptions, previous_open_day, today_in};
use taskflow_examples::fund_clearing;

use super::standalone::{
    AlertArgs, ConsoleArgs, open_day, parse_date, parse_through, plan_headless, registry, run_day,
    run_headless, shutdown_signal,
};

/// Where the cluster cookie comes from.
#[derive(Debug, clap::Args)]
pub(crate) struct CookieArgs {
    /// A file holding the cluster cookie (the shared secret). Default: $TASKFLOW_COOKIE.
    #[arg(long)]
    cookie_file: Option<PathBuf>,
}

impl CookieArgs {
    fn cookie(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.cookie_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the cookie file {}", path.display()))?;
            let c = text.trim().to_owned();
            if c.is_empty() {
                bail!("the cookie file {} is empty", path.display());
            }
            return Ok(c);
        }
        match std::env::var("TASKFLOW_COOKIE") {
            Ok(c) if !c.trim().is_empty() => Ok(c.trim().to_owned()),
            _ => bail!("no cluster cookie: set TASKFLOW_COOKIE or pass --cookie-file FILE"),
        }
    }
}

/// Flags of `taskflow manager`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManagerArgs {
    /// The address executors connect to, e.g. 10.0.0.5:7700 (only this address is bound).
    #[arg(long)]
    cluster: SocketAddr,
    /// The data directory.
    #[arg(long, default_value = "taskflow-data")]
    data: PathBuf,
    /// The flow directory. Default: the bundled fund-clearing example.
    #[arg(long)]
    flow: Option<PathBuf>,
    /// The business date, YYYY-MM-DD (default: the last open business day before today).
    #[arg(long)]
    date: Option<String>,
    /// Run headless until the day is done (manual tasks executed automatically); exit 0 only
    /// if every task ended well.
    #[arg(long)]
    until_done: bool,
    /// With --until-done: run every open date from --date through this one (YYYY-MM-DD), one
    /// day after another, as `taskflow standalone --through` does. The cluster listener is
    /// closed and bound again between days: executors reconnect for each day.
    #[arg(long, value_name = "DATE")]
    through: Option<String>,
    /// Write the JSON report of the day here (with --until-done).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The executor lease in milliseconds: an executor not heard from for longer (plus a
    /// margin of a fifth) is lost and its shards are reassigned.
    #[arg(long, default_value_t = 10_000)]
    lease: u64,
    /// The heartbeat interval in milliseconds (default: a fifth of the lease; at most 2/5 of
    /// it, so that executors fence themselves before they are declared lost).
    #[arg(long)]
    heartbeat: Option<u64>,
    /// In-process executors besides the remote ones.
    #[arg(long, default_value_t = 0)]
    local_executors: usize,
    /// Let an effect out (an assignment, an operator's reply, a console update, a board) only
    /// once K executor replicas (`taskflow executor --data`) also hold its events durably, as
    /// Kafka's min.insync.replicas. With fewer than K such executors connected the day waits
    /// (logged). With K + Q > N (Q = --replica-quorum at a recovery, N = executors with
    /// --data) a recovery from replicas loses nothing any client saw. 0: only this manager's
    /// own fdatasync (a recovery can lose its loss window).
    #[arg(long, default_value_t = 0, value_name = "K")]
    replica_acks: usize,
    /// How long a graceful stop (SIGTERM, Ctrl-C) waits for running shards before the
    /// journal is closed and the process exits, e.g. `60s`; shards still running then are
    /// found running at the next start (re-run or rolled back by the unconfirmed policy).
    /// Keep systemd's TimeoutStopSec above it.
    #[arg(long, env = "TASKFLOW_STOP_TIMEOUT", default_value = "30s", value_parser = super::standalone::stop_timeout)]
    stop_timeout: Duration,
    #[command(flatten)]
    replicas: RecoverArgs,
    #[command(flatten)]
    cookie: CookieArgs,
    #[command(flatten)]
    tls: ManagerTlsArgs,
    /// The HTTP console (as for `taskflow standalone`; not served with --until-done).
    #[command(flatten)]
    console: ConsoleArgs,
    /// Alerts.
    #[command(flatten)]
    alerts: AlertArgs,
}

/// TLS on the cluster link, manager side (`taskflow manager`; also the
/// `--recover-from-replicas` listener).
#[derive(Debug, clap::Args)]
pub(crate) struct ManagerTlsArgs {
    /// The manager's TLS certificate chain (PEM, its own certificate first). Its subject
    /// alternative names must include the host executors give in --manager (an IP SAN for an
    /// IP address). With --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8 as OpenSSL 3 writes it, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: executors must present a certificate signed by a CA in this PEM file.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Accept executors over plain TCP on an address other than loopback (the default is to
    /// refuse to start without TLS there). Only on a private network you trust.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_plain_tcp: bool,
}

impl ManagerTlsArgs {
    fn load(&self) -> anyhow::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = ServerTls::load(cert, key, self.tls_ca.as_deref())?;
                Ok(Some(tls))
            }
            _ => Ok(None),
        }
    }
}

/// TLS on the cluster link, executor side (`taskflow executor`).
#[derive(Debug, clap::Args)]
pub(crate) struct ExecutorTlsArgs {
    /// Connect over TLS: the manager's certificate must be signed by a CA in this PEM file and
    /// name the host of --manager.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This executor's certificate chain (PEM), for a manager that requires mutual TLS. With
    /// --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ExecutorTlsArgs {
    fn load(&self) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        Ok(Some(ClientTls::load(ca, identity)?))
    }
}

/// Recovery of a lost day store from executor replicas (`taskflow manager`).
#[derive(Debug, clap::Args)]
pub(crate) struct RecoverArgs {
    /// If the day's journal is missing from --data, rebuild it from the freshest executor
    /// replica before starting (never done without this flag; with it, a day without any
    /// replica is refused rather than opened afresh).
    #[arg(long)]
    recover_from_replicas: bool,
    /// Choose the replica once this many executors with --data have joined.
    #[arg(long, default_value_t = 1)]
    replica_quorum: usize,
    /// ...or after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    replica_wait: u64,
    /// Recover only replicas of this cluster id (required when executors hold several).
    #[arg(long)]
    recover_cluster_id: Option<String>,
    /// Recover from this executor's replica only (required when the replicas hold divergent
    /// histories: the refusal names them).
    #[arg(long)]
    recover_executor: Option<String>,
}

/// Flags of `taskflow executor`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExecutorArgs {
    /// The manager's cluster address, HOST:PORT.
    #[arg(long)]
    manager: String,
    /// The executor's unique name. Default: HOSTNAME-PID.
    #[arg(long)]
    name: Option<String>,
    /// Shards run at once.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Announce this protocol version (testing version skew).
    #[arg(long, hide = true)]
    protocol_version: Option<u16>,
    /// How long a stopped or fenced shard may take before it is abandoned, in milliseconds
    /// (testing busy slots; default 10 s).
    #[arg(long, hide = true)]
    stop_grace_ms: Option<u64>,
    /// Keep a replica of the manager's day log in DIR/replica (a manager whose data is lost
    /// recovers from it with --recover-from-replicas). Without it the executor keeps none.
    #[arg(long)]
    data: Option<PathBuf>,
    /// With --data: keep replicas of at most this many business dates, the newest (a replica
    /// of a new date removes the older ones). Like the flow's `retain_days` (default 30), but
    /// counted in the dates this executor holds replicas of: it has no calendar.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    retain_days: u32,
    #[command(flatten)]
    cookie: CookieArgs,
    #[command(flatten)]
    tls: ExecutorTlsArgs,
}

pub(crate) fn manager(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let cookie = args.cookie.cookie()?;
    let through = parse_through(args.through.as_deref(), args.until_done)?;
    let alerts = args.alerts.options()?;
    let flow = match &args.flow {
        Some(dir) => flow::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => fund_clearing::flow()
            .map_err(|e| anyhow::anyhow!("the bundled example does not load: {e}"))?,
    };
    let asked = parse_date(args.date.as_deref())?;
    let date = if args.until_done {
        match asked {
            Some(d) => d,
            None => previous_open_day(&flow, today_in(&flow))?,
        }
    } else {
        open_day(&flow, &args.data, asked)?
    };
    let lease = Duration::from_millis(args.lease);
    let heartbeat = Duration::from_millis(args.heartbeat.unwrap_or(args.lease / 5));
    let tls = args.tls.load()?;
    let insecure_plain_tcp = args.tls.insecure_plain_tcp;
    let listen =
        ClusterListen { addr: args.cluster, cookie, lease, heartbeat, tls, insecure_plain_tcp };
    // The fencing bound (proto-docs/cluster.md): an executor must fence itself strictly
    // before this manager declares it lost and reassigns its shards.
    if let Err(e) = check_timing(&listen) {
        bail!("--lease {} --heartbeat {}: {e}", args.lease, heartbeat.as_millis());
    }
    // Plain TCP off loopback only when asked for (checked again by the core).
    listen.validate().map_err(|e| anyhow::anyhow!("--cluster {}: {e}", args.cluster))?;
    if listen.tls.is_none() && !args.cluster.ip().is_loopback() {
        tracing::warn!(
            addr = %args.cluster,
            "--insecure-plain-tcp: the cluster link is plain TCP on a non-loopback address; \
             anyone on the network can read it"
        );
    }
    // Which guarantee holds for a recovery from replicas (K and Q; N is learnt as executors
    // join, and the manager warns when K + Q no longer exceeds it).
    println!(
        "taskflow manager: {}",
        replica_ack_guarantee(args.replica_acks, args.replicas.replica_quorum)
    );
    let opts = RuntimeOptions {
        data_dir: args.data.clone(),
        date: Some(date),
        executors: args.local_executors,
        auto_execute_manual: args.until_done,
        // Without --until-done the manager goes on from day to day.
        roll_over: !args.until_done,
        cluster: Some(listen),
        replica_acks: args.replica_acks,
        replica_quorum: args.replicas.replica_quorum.max(1),
        // A rolling day reads the flow directory again at each cutover.
        flow_dir: args.flow.clone(),
        shutdown_grace: args.stop_timeout,
        ..RuntimeOptions::default()
    };
    if !args.until_done {
        if args.replicas.recover_from_replicas {
            recover(&args, &opts, date)?;
        }
        println!("taskflow manager: accepting executors on {}", args.cluster);
        return run_day(flow, opts, "manager", &args.console, alerts);
    }
    let plan = plan_headless(&flow, &opts.data_dir, date, through)?;
    // Recovery from replicas applies to the day the run resumes at (the executors replicate
    // the day they last ran); the later days of a range open afresh.
    let first_run = plan.steps.iter().find(|s| matches!(s, DayStep::Run(_))).map(|s| s.date());
    match first_run {
        Some(first) => {
            if args.replicas.recover_from_replicas {
                recover(&args, &opts, first)?;
            }
            println!("taskflow manager: accepting executors on {}", args.cluster);
        }
        None => println!("taskflow manager: every day of the run is closed; reporting"),
    }
    run_headless(flow, opts, plan, args.report.as_deref(), "manager", alerts)
}

/// Rebuilds the day's store from executor replicas when it is missing (before the manager
/// starts; the listener is released again before the manager binds it).
fn recover(args: &ManagerArgs, opts: &RuntimeOptions, date: BusinessDate) -> anyhow::Result<()> {
    let Some(listen) = &opts.cluster else { return Ok(()) };
    let r = &args.replicas;
    let ropts = RecoverOptions {
        quorum: r.replica_quorum.max(1),
        wait: Duration::from_millis(r.replica_wait),
        cluster_id: r.recover_cluster_id.clone(),
        executor: r.recover_executor.clone(),
        status: print_status(),
        ..RecoverOptions::default()
    };
    let day_dir = opts.day_dir(date);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome =
        rt.block_on(recover_from_replicas(listen, &day_dir, date, &ropts, &opts.journal.store));
    rt.shutdown_timeout(Duration::from_millis(500));
    match outcome? {
        RecoveryOutcome::NotNeeded => {
            println!(
                "taskflow manager: the journal of {date} exists in {}; not recovering from replicas",
                day_dir.display()
            );
        }
        RecoveryOutcome::Recovered { .. } => {}
    }
    Ok(())
}

/// The core prints nothing: the shell prints its statuses, one line each on stdout (the
/// multi-process tests wait for them).
fn print_status() -> StatusSink {
    StatusSink::new(|status| println!("{status}"))
}

/// The timing part of [`ClusterListen::validate`] (its errors name --lease/--heartbeat).
fn check_timing(listen: &ClusterListen) -> Result<(), String> {
    let loopback = ClusterListen { tls: None, insecure_plain_tcp: true, ..listen.clone() };
    loopback.validate()
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "executor".into());
    format!("{host}-{}", std::process::id())
}

pub(crate) fn executor(args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let cookie = args.cookie.cookie()?;
    let name = args.name.clone().unwrap_or_else(default_name);
    let mut cfg = ExecutorConfig::new(args.manager.clone(), name.clone(), cookie);
    cfg.slots = args.slots.max(1);
    if let Some(v) = args.protocol_version {
        cfg.protocol_version = v;
    }
    if let Some(ms) = args.stop_grace_ms {
        cfg.stop_grace = Duration::from_millis(ms);
    }
    cfg.data = args.data.clone();
    cfg.retain_days = args.retain_days;
    cfg.status = print_status();
    cfg.tls = args.tls.load()?;
    #[cfg(target_os = "linux")]
    if let Err(e) = taskflow_core::behavior::CommandBehavior::adopt_orphans() {
        tracing::warn!(%e, "cannot become a subreaper; killed command groups may linger");
    }
    let registry = registry()?;
    println!("taskflow executor {name}: connecting to the manager at {}", args.manager);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The first SIGTERM / Ctrl-C drains (no new shards; running ones finish and are confirmed;
    // then the executor leaves, so nothing is reassigned); a second one exits at once.
    let outcome = rt.block_on(async {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let signals = tokio::spawn(async move {
            shutdown_signal().await;
            println!("draining: no new shards; a second signal exits at once");
            let _ = first_tx.send(());
            shutdown_signal().await;
        });
        let drain = async move {
            let _ = first_rx.await;
        };
        tokio::select! {
            r = run_executor(cfg, registry, drain) => r.map_err(anyhow::Error::from),
            _ = signals => {
                println!("second signal: exiting without draining");
                Ok(())
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    outcome.map(|()| ExitCode::SUCCESS)
}
